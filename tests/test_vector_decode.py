"""The vector env's byte-table decoder equals ``tokenizers``' decode (special tokens skipped, invalid UTF-8 replaced),
and tokenizers that are not plain byte-level BPE keep decoding through ``tokenizers``.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models

from aligngym.envs.tokenization import load_tokenizer
from aligngym.envs.vector_decode import ByteLevelDecoder, byte_level_decoder, decoder_for


def test_byte_table_equals_tokenizers_decode_on_random_ids_with_invalid_utf8() -> None:
    tok = load_tokenizer(None)
    dec = byte_level_decoder(tok.backend, tok.vocab_size)
    assert isinstance(dec, ByteLevelDecoder)
    singles = [[i] for i in range(tok.vocab_size)]
    assert dec.decode_batch(singles) == tok.backend.decode_batch(singles, skip_special_tokens=True)
    # ids of single high bytes (continuation / lead bytes) make invalid UTF-8 in about every row
    high = [i for i in range(tok.vocab_size) if tok.decode([i]) == "\ufffd"]
    assert high, "the shipped tokenizer has single-byte tokens"
    rng = np.random.default_rng(0)
    batch = []
    for _ in range(300):
        ids = rng.integers(0, tok.vocab_size, size=int(rng.integers(0, 24)))
        swap = rng.random(ids.size) < 0.5
        ids[swap] = rng.choice(high, size=int(swap.sum()))
        batch.append(ids.tolist())
    assert dec.decode_batch(batch) == tok.backend.decode_batch(batch, skip_special_tokens=True)


def test_non_special_added_tokens_decode_as_their_text() -> None:
    tok = load_tokenizer(None)
    backend = Tokenizer.from_str(tok.backend.to_str())
    backend.add_tokens([AddedToken("<tool>", special=False), AddedToken("é!", special=False)])
    backend.add_special_tokens([AddedToken("<sep>", special=True)])
    size = backend.get_vocab_size(with_added_tokens=True)
    dec = byte_level_decoder(backend, size)
    assert dec is not None
    batch = [[size - 3, 70, size - 1, size - 2, 258], [size - 1], list(range(size - 5, size))]
    assert dec.decode_batch(batch) == backend.decode_batch(batch, skip_special_tokens=True)


@pytest.mark.parametrize("decoder", [decoders.WordPiece(), decoders.Metaspace(), None])
def test_other_tokenizers_are_not_table_decoded(decoder: decoders.Decoder | None) -> None:
    backend = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    if decoder is not None:
        backend.decoder = decoder
    assert byte_level_decoder(backend, 2) is None


def test_the_native_vector_env_decodes_with_the_byte_table() -> None:
    import gymnasium as gym

    import aligngym.envs  # noqa: F401  (registration)

    venv = gym.make_vec("aligngym/Sentiment-Token-v0", num_envs=2, max_new_tokens=2)
    venv.reset(seed=0)
    venv.step(np.array([300, 301]))
    *_, infos = venv.step(np.array([302, 303]))
    assert infos["completion"].tolist() == [tok_text([300, 302]), tok_text([301, 303])]
    built = cast(Any, venv.unwrapped)._decoder  # built on the first decode, shared by envs of one tokenizer
    assert isinstance(built, ByteLevelDecoder)
    assert decoder_for(cast(Any, venv.unwrapped).runtime.tokenizer) is built


def tok_text(ids: list[int]) -> str:
    return load_tokenizer(None).decode(ids)
