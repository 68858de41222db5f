"""Batched decoding of completions for the native vector env: a byte table for byte-level BPE tokenizers.

``tokenizers``' ``decode_batch`` costs about 4 us per 16-token row; for a byte-level BPE (GPT-2 style, the shipped
tokenizer) the decoded text is the UTF-8 (lossy) decoding of the concatenated bytes of the tokens, which a table
lookup gives exactly. Any other tokenizer (WordPiece, Metaspace, normalisers, ...) decodes through ``tokenizers``.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from typing import Any


def _byte_level_chars() -> dict[str, int]:
    """The byte-level alphabet: the printable character standing for each byte (as GPT-2 and ``tokenizers``)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _is_byte_level(config: dict[str, Any]) -> bool:
    """Whether a ``tokenizer.json`` decodes as plain byte-level BPE (no other decoder step)."""
    dec = config.get("decoder") or {}
    if dec.get("type") == "Sequence":
        steps = dec.get("decoders") or []
        if len(steps) != 1:
            return False
        dec = steps[0]
    model = config.get("model") or {}
    return dec.get("type") == "ByteLevel" and model.get("type") == "BPE"


class ByteLevelDecoder:
    """``decode_batch(ids, skip_special_tokens=True)`` of a byte-level BPE tokenizer, from a per-id byte table.

    Equal to ``tokenizers.Tokenizer.decode`` for every id sequence (tested against it on random ids, invalid UTF-8
    included): special tokens are dropped, a token whose characters are all in the byte alphabet gives those bytes,
    any other (an added token) its own UTF-8, and the joined bytes are decoded with U+FFFD for invalid sequences.

    :param backend: a ``tokenizers.Tokenizer`` whose decoder is ByteLevel (see :func:`byte_level_decoder`).
    :param vocab_size: ids ``0 .. vocab_size - 1`` get a table entry (unknown ids decode to nothing, as there).
    """

    def __init__(self, backend: Any, vocab_size: int) -> None:
        chars = _byte_level_chars()
        special = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
        table: list[bytes] = []
        for i in range(vocab_size):
            tok = backend.id_to_token(i)
            if tok is None or tok in special:
                table.append(b"")
            elif all(c in chars for c in tok):
                table.append(bytes(chars[c] for c in tok))
            else:
                table.append(tok.encode("utf-8"))
        self._table = table

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """Texts of ``batch`` (lists of Python ints in ``range(vocab_size)``), special tokens skipped."""
        get = self._table.__getitem__
        return [b"".join(map(get, ids)).decode("utf-8", "replace") for ids in batch]


def byte_level_decoder(backend: Any, vocab_size: int) -> ByteLevelDecoder | None:
    """A :class:`ByteLevelDecoder` for ``backend`` if it is a plain byte-level BPE tokenizer, else ``None``."""
    to_str = getattr(backend, "to_str", None)
    if to_str is None:
        return None
    try:
        config = json.loads(to_str())
    except (TypeError, ValueError):  # pragma: no cover - a backend without a JSON form
        return None
    if not _is_byte_level(config):
        return None
    return ByteLevelDecoder(backend, vocab_size)


#: decoders already built, per TextTokenizer (envs built on one tokenizer share its table)
_BUILT: weakref.WeakKeyDictionary[Any, ByteLevelDecoder | None] = weakref.WeakKeyDictionary()


def decoder_for(tokenizer: Any) -> ByteLevelDecoder | None:
    """:func:`byte_level_decoder` of an aligngym ``TextTokenizer`` (``.backend``, ``.vocab_size``), built once per
    tokenizer object (a 50k-token table takes a fraction of a second)."""
    try:
        return _BUILT[tokenizer]
    except (KeyError, TypeError):
        pass
    dec = byte_level_decoder(tokenizer.backend, tokenizer.vocab_size)
    try:
        _BUILT[tokenizer] = dec
    except TypeError:  # pragma: no cover - an object without weak references: not cached
        pass
    return dec


__all__ = ["ByteLevelDecoder", "byte_level_decoder", "decoder_for"]
