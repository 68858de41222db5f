"""Frozen reference causal LM: next-token log-probs for KL control and completion log-likelihoods for fluency.

:func:`load_reference_model` turns a spec (local directory, model object, ``"default"``) into a
:class:`ReferenceModel` that shares the env's tokenizer; ``TokenEnv``/``SequenceEnv`` read ``info["ref_logprob"]`` from
it (the token envs through a per-episode :class:`ReferenceKVCache`: one cached forward per step) and the ``fluency``
scorer scores completions with it. Path specs are loaded once per (path, device, vocabulary).
This module is also the one home of :func:`load_causal_lm`, :func:`default_reference_dir` and
:func:`model_vocab_size`, which the agents use too (agents depend on envs, never the reverse).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.envs.cache import LRUCache
from aligngym.envs.hf import cache_kwarg, output_cache
from aligngym.envs.tokenization import TextTokenizer, load_tokenizer

#: directory (inside ``aligngym.envs.data``) of the shipped reference LM that ``"default"`` names
DEFAULT_REFERENCE_DIR = "reference_lm"
#: (model dir, tokenizer, device, vocab, strict) -> shared frozen model; bounded (see aligngym.envs.cache)
_CACHE: LRUCache[ReferenceModel] = LRUCache("reference models")


def default_reference_dir() -> Path:
    """Path of the shipped reference LM directory (``aligngym/envs/data/reference_lm``)."""
    from aligngym.envs.tasks import data_path

    return data_path(DEFAULT_REFERENCE_DIR)


def model_vocab_size(model: Any) -> int:
    """Number of rows of the model's output layer (``config.vocab_size`` when it has no output embeddings)."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and hasattr(out, "weight"):
        return int(out.weight.shape[0])
    return int(model.config.vocab_size)


def load_causal_lm(spec: Any = "default") -> Any:
    """A ``transformers`` causal LM from ``"default"``, a local directory, a ``PretrainedConfig`` or a model object.

    Directories load with ``AutoModelForCausalLM.from_pretrained(dir, local_files_only=True)`` in float32, in eval
    mode; nothing is downloaded and ``trust_remote_code`` is never set. Model objects are returned as they are (not
    copied); a config gives an untrained model of that architecture.

    :param spec: ``"default"`` (the shipped reference LM), a local directory, a ``PretrainedConfig`` or a model.
    :raises FileNotFoundError: for a string that is not a local model directory (``"default"`` included, when the
        shipped model is missing).
    :raises TypeError: for anything else.
    """
    import torch
    from transformers import AutoModelForCausalLM, PretrainedConfig

    from aligngym.envs.hf import load_local_pretrained

    if isinstance(spec, torch.nn.Module):
        return spec
    if isinstance(spec, PretrainedConfig):
        return AutoModelForCausalLM.from_config(spec, trust_remote_code=False)
    if isinstance(spec, str | Path):
        path = default_reference_dir() if str(spec) == "default" else Path(spec)
        what = "the shipped reference LM 'default'" if str(spec) == "default" else "causal LM"
        model = load_local_pretrained(AutoModelForCausalLM, path, what=what, dtype=torch.float32)
        return model.eval()
    raise TypeError(
        f"causal LM must be 'default', a local directory, a transformers PretrainedConfig or model; got "
        f"{type(spec).__name__}"
    )


class ReferenceModel:
    """A frozen causal LM over the env's tokenizer, evaluated batched under ``torch.inference_mode``.

    :param model: a ``transformers`` causal LM (``PreTrainedModel`` with ``.logits`` in its output).
    :param tokenizer: the env's tokenizer (anything :func:`aligngym.envs.tokenization.load_tokenizer` takes).
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; on CUDA the model runs in float16 (log-softmax in float32).
    :param strict_vocab: require ``model vocab == len(tokenizer)``; with ``False`` a larger (padded) model
        vocabulary is allowed and its extra logits are ignored (log-probs renormalised over the tokenizer's ids).
    :param batch_size: rows per forward pass.
    :raises ValueError: if the vocabulary sizes do not match.

    Sequences longer than the model's context (``n_positions`` / ``max_position_embeddings``) keep their last tokens.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        device: str = "auto",
        strict_vocab: bool = True,
        batch_size: int = 64,
    ) -> None:
        import torch

        from aligngym.envs.device import resolve_device

        self.tokenizer: TextTokenizer = load_tokenizer(tokenizer)
        self.vocab_size = self.tokenizer.vocab_size
        model_vocab = model_vocab_size(model)
        if model_vocab < self.vocab_size or (strict_vocab and model_vocab != self.vocab_size):
            raise ValueError(
                f"reference model has a vocabulary of {model_vocab} ids but the tokenizer "
                f"{self.tokenizer.name!r} has {self.vocab_size} (len(tokenizer)); a reference model must be trained "
                "on the env's tokenizer"
                + ("" if model_vocab < self.vocab_size else " (or pass strict_vocab=False)")
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        model = model.eval().to(self.device)
        if self.device.startswith("cuda"):
            model = model.half()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        cfg = model.config
        ctx = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
        self.max_context = int(ctx) if ctx else None
        self._torch = torch

    # -- batching helpers ------------------------------------------------------------------------------------------
    def _logits(self, ids: Any, mask: Any) -> Any:
        """Logits (float32, (b, T, V_tok)) for a padded batch; positions follow the attention mask."""
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        try:
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        except TypeError:  # architectures without position_ids
            logits = self.model(input_ids=ids, attention_mask=mask).logits
        return logits[..., : self.vocab_size].float()

    def _forward(self, ids: Any, mask: Any) -> Any:
        """Log-probs (float32, (b, T, V_tok)) for a padded batch; positions follow the attention mask."""
        return self._torch.log_softmax(self._logits(ids, mask), dim=-1)

    def _trim(self, tokens: list[int]) -> list[int]:
        if self.max_context is not None and len(tokens) > self.max_context:
            return tokens[-self.max_context :]
        return tokens

    # -- public API ------------------------------------------------------------------------------------------------
    def next_token_logprobs(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        cache: ReferenceKVCache | None = None,
        rows: Any = None,
        tokens: Any = None,
    ) -> np.ndarray:
        """log p_ref(next token | the attended tokens of each row).

        :param input_ids: int64 (B, L) in the env's observation layout (prompt left-padded, generated tokens after
            it, padding after that); only positions with ``attention_mask == 1`` are read, in order.
        :param attention_mask: int (B, L), 1 for real tokens. A row needs at least one real token.
        :param cache: a :class:`ReferenceKVCache` of the caller's episodes: each row then costs one KV-cached
            forward of its one new token (a whole forward only when its episode starts), equal to the uncached
            values to float tolerance. ``None``: recompute every row's whole context.
        :param rows: int (B,) the cache rows of the B rows (default ``0..B-1``); only with ``cache``.
        :param tokens: int (B,) token ids; when given, only their log-probs are returned.
        :return: float32 (B, V) log-probabilities of the token that follows each row's real tokens, or float32 (B,)
            those of ``tokens``.
        """
        ids = np.asarray(input_ids)
        mask = np.asarray(attention_mask)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be (B, L); got {ids.shape} and {mask.shape}"
            )
        if tokens is not None:
            tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
            if tokens.shape != (ids.shape[0],):
                raise ValueError(
                    f"tokens must be int ({ids.shape[0]},), one per row; got shape {tokens.shape}"
                )
        if cache is not None and cache.usable(self, ids.shape[1]):
            return cache.query(self, ids, mask, rows, tokens)
        if rows is not None and cache is None:
            raise ValueError("rows= selects rows of a ReferenceKVCache; pass cache= with it")
        logp = self._uncached_next(ids, mask)
        return logp if tokens is None else logp[np.arange(ids.shape[0]), tokens]

    def _uncached_next(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        rows = [self._trim(ids[b][mask[b] != 0].tolist()) for b in range(ids.shape[0])]
        empty = [b for b, r in enumerate(rows) if not r]
        if empty:
            raise ValueError(f"rows {empty} have no attended tokens; a reference model needs a context")
        return self.next_token_logprobs_of(rows)

    def next_token_logprobs_of(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """log p_ref(next token | context) for token-id lists of any lengths -> float32 (B, V)."""
        torch = self._torch
        out = np.empty((len(contexts), self.vocab_size), dtype=np.float32)
        pad = self.tokenizer.pad_id
        with torch.inference_mode():
            for start in range(0, len(contexts), self.batch_size):
                chunk = [self._trim(list(c)) for c in contexts[start : start + self.batch_size]]
                width = max(len(c) for c in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, c in enumerate(chunk):  # left padding: the next-token position is the last column
                    ids[i, width - len(c) :] = torch.as_tensor(c, dtype=torch.long)
                    mask[i, width - len(c) :] = 1
                logits = self._logits(ids.to(self.device), mask.to(self.device))[:, -1]
                out[start : start + len(chunk)] = torch.log_softmax(logits, dim=-1).cpu().numpy()
        return out

    def token_logprobs(
        self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Per-token log p_ref(continuation[t] | context + continuation[:t]), batched.

        :param contexts: B token-id lists; an empty context is replaced by the tokenizer's BOS token.
        :param continuations: B token-id lists (may be empty).
        :return: B float32 arrays, the i-th of shape (len(continuations[i]),).
        """
        torch = self._torch
        if len(contexts) != len(continuations):
            raise ValueError(f"got {len(contexts)} contexts but {len(continuations)} continuations")
        results: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(contexts)
        pad = self.tokenizer.pad_id
        todo = [i for i, c in enumerate(continuations) if len(c)]
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start : start + self.batch_size]
                seqs, n_cont = [], []
                for i in idx:
                    ctx = [int(t) for t in contexts[i]] or [self.tokenizer.bos_id]
                    cont = [int(t) for t in continuations[i]]
                    if self.max_context is not None and len(cont) >= self.max_context:
                        raise ValueError(
                            f"continuation of {len(cont)} tokens does not fit the reference model's context of "
                            f"{self.max_context} tokens"
                        )
                    seqs.append(self._trim(ctx + cont))
                    n_cont.append(len(cont))
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), pad, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for r, s in enumerate(seqs):  # left padding: every continuation ends in the last column
                    ids[r, width - len(s) :] = torch.as_tensor(s, dtype=torch.long)
                    mask[r, width - len(s) :] = 1
                ids_d = ids.to(self.device)
                logp = self._forward(ids_d, mask.to(self.device))  # (b, T, V)
                # logp[:, t] predicts ids[:, t + 1]
                picked = logp[:, :-1].gather(-1, ids_d[:, 1:, None])[..., 0].cpu().numpy()
                for r, i in enumerate(idx):
                    results[i] = picked[r, width - 1 - n_cont[r] :].astype(np.float32)
        return results

    def sequence_logprobs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, completions: Sequence[Sequence[int]]
    ) -> np.ndarray:
        """Sum of log p_ref(completion tokens | prompt) per row -> float32 (B,); 0 for an empty completion.

        :param input_ids: int64 (B, L) prompts in the observation layout (real tokens where the mask is 1).
        :param attention_mask: int (B, L).
        :param completions: B token-id sequences (numpy int arrays or lists).
        """
        ids = np.asarray(input_ids)
        mask = np.asarray(attention_mask)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be (B, L); got {ids.shape} and {mask.shape}"
            )
        contexts = [ids[b][mask[b] != 0].tolist() for b in range(ids.shape[0])]
        per_token = self.token_logprobs(contexts, [np.asarray(c).tolist() for c in completions])
        return np.array([float(t.sum()) for t in per_token], dtype=np.float32)

    def sequence_logprob(self, input_ids: np.ndarray, attention_mask: np.ndarray, completion: Any) -> float:
        """Sum of log p_ref(completion tokens | prompt) for one row: ``input_ids``/``attention_mask`` int (L,)."""
        return float(
            self.sequence_logprobs(
                np.asarray(input_ids)[None], np.asarray(attention_mask)[None], [completion]
            )[0]
        )

    def __repr__(self) -> str:
        return (
            f"ReferenceModel({type(self.model).__name__}, vocab_size={self.vocab_size}, device={self.device!r}, "
            f"max_context={self.max_context})"
        )


class ReferenceKVCache:
    """KV cache of a :class:`ReferenceModel` over the episodes of ``num_rows`` env rows (observation layout).

    Slot j of a row holds the keys and values of observation column j, so rows at different lengths share one
    batched forward (columns a row has not reached are masked). Every query checks the columns a row has fed
    against its observation: a row that moved on by one token costs one KV-cached forward of that token; a row that
    starts (after a reset, or whenever what was fed changed) runs over its whole context once. An episode of L new
    tokens thus costs O(L) reference work instead of O(L^2). An env holds one (a single env: 1 row, a vector env:
    one row per env; each row keeps its own) and clears a row when its episode resets. Pickling drops the tensors.

    :param num_rows: rows N (envs of a vector env).
    :param width: the observation width L (columns).
    """

    def __init__(self, num_rows: int, width: int) -> None:
        if int(num_rows) < 1 or int(width) < 1:
            raise ValueError(f"num_rows and width must be >= 1, got {num_rows} and {width}")
        self.num_rows, self.width = int(num_rows), int(width)
        self._init_storage()

    def clear(self, rows: Any = None) -> None:
        """Forget the episodes of ``rows`` (int indices or a bool mask; ``None``: every row)."""
        if rows is None:
            self._fed[:] = 0
        else:
            self._fed[np.asarray(rows)] = 0

    def _init_storage(self) -> None:
        self._fed = np.zeros(self.num_rows, dtype=np.int64)  # columns fed per row
        self._ids = np.zeros((self.num_rows, self.width), dtype=np.int64)  # what was fed
        self._mask = np.zeros((self.num_rows, self.width), dtype=np.bool_)
        self._keys: list[Any] = []  # per layer (N, H, L, D)
        self._values: list[Any] = []
        self._next: Any = None  # float32 (N, V): log p_ref(next token | fed columns)
        self._owner: Any = None
        self._broken = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(
            _fed=np.zeros(self.num_rows, dtype=np.int64), _keys=[], _values=[], _next=None, _owner=None
        )
        return state

    def usable(self, reference: ReferenceModel, width: int) -> bool:
        """Whether ``reference`` can run cached on observations of ``width`` columns (the context must fit)."""
        if width != self.width:
            raise ValueError(f"this ReferenceKVCache holds rows of {self.width} columns, got {width}")
        fits = reference.max_context is None or self.width <= reference.max_context
        return fits and not self._broken

    def query(
        self, reference: ReferenceModel, ids: np.ndarray, mask: np.ndarray, rows: Any, tokens: Any
    ) -> np.ndarray:
        """:meth:`ReferenceModel.next_token_logprobs` through the cache (see there)."""
        torch = reference._torch
        B, L = ids.shape
        rows = np.arange(B) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.shape != (B,) or (B and (rows.min() < 0 or rows.max() >= self.num_rows)):
            raise ValueError(f"rows must be {B} indices in [0, {self.num_rows}), got {rows.tolist()}")
        if np.unique(rows).size != B:
            raise ValueError(f"rows must be distinct, got {rows.tolist()}")
        if self._owner is not reference:
            self._init_storage()
            self._owner = reference
        att = mask != 0
        empty = np.flatnonzero(~att.any(1))
        if empty.size:
            raise ValueError(
                f"rows {empty.tolist()} have no attended tokens; a reference model needs a context"
            )
        frontier = L - np.argmax(att[:, ::-1], axis=1)  # one past the last attended column
        fed = self._fed[rows]
        within = np.arange(L)[None, :] < fed[:, None]
        same = ~(((ids != self._ids[rows]) | (att != self._mask[rows])) & within).any(1)
        new = frontier - fed
        step = same & (new == 1) & (fed > 0)
        full = ~(same & (fed > 0) & ((new == 0) | (new == 1)))
        bs = reference.batch_size
        try:
            with torch.inference_mode():
                for group, fn in (
                    (np.flatnonzero(full), self._run_full),
                    (np.flatnonzero(step), self._run_step),
                ):
                    for start in range(0, group.size, bs):
                        j = group[start : start + bs]
                        fn(reference, ids[j], att[j], rows[j], frontier[j])
                sel = torch.tensor(rows, device=self._next.device)  # a copy: rows may be a read-only view
                nxt = self._next.index_select(0, sel)
                if tokens is not None:
                    t = torch.as_tensor(tokens, dtype=torch.long, device=nxt.device)
                    nxt = nxt.gather(1, t[:, None])[:, 0]
                return nxt.cpu().numpy().astype(np.float32, copy=False)
        except TypeError:  # an architecture without position_ids or a KV cache: recompute, uncached
            self._broken = True
            logp = reference._uncached_next(ids, mask)
            return logp if tokens is None else logp[np.arange(B), tokens]

    # -- internals ----------------------------------------------------------------------------------------------
    def _store_next(self, reference: ReferenceModel, rows: Any, logits: Any) -> None:
        torch = reference._torch
        logp = torch.log_softmax(logits[:, : reference.vocab_size].float(), dim=-1)
        if self._next is None:
            self._next = torch.zeros((self.num_rows, logp.shape[-1]), dtype=torch.float32, device=logp.device)
        self._next[rows] = logp

    def _run_full(
        self,
        reference: ReferenceModel,
        ids: np.ndarray,
        att: np.ndarray,
        rows: np.ndarray,
        frontier: np.ndarray,
    ) -> None:
        """Run rows over their whole context (columns ``[0, frontier)``) and keep every column's keys/values."""
        torch, dev = reference._torch, reference.device
        W = int(frontier.max())
        t_ids = torch.as_tensor(ids[:, :W], device=dev)
        t_mask = torch.as_tensor(att[:, :W], dtype=torch.long, device=dev)
        pos = (t_mask.cumsum(-1) - 1).clamp(min=0)
        model = reference.model
        out = model(input_ids=t_ids, attention_mask=t_mask, position_ids=pos, use_cache=True)
        kv = _layers_kv(output_cache(out))
        if not self._keys:
            for k, v in kv:
                shape = (self.num_rows, k.shape[1], self.width, k.shape[3])
                self._keys.append(torch.zeros(shape, dtype=k.dtype, device=k.device))
                self._values.append(torch.zeros((*shape[:3], v.shape[3]), dtype=v.dtype, device=v.device))
        c = torch.as_tensor(rows, device=dev)
        for buf_k, buf_v, (k, v) in zip(self._keys, self._values, kv):
            buf_k[c, :, :W] = k
            buf_v[c, :, :W] = v
        last = torch.as_tensor(frontier - 1, device=dev)
        self._store_next(reference, c, out.logits[torch.arange(len(rows), device=dev), last])
        self._ids[rows] = ids
        self._mask[rows] = att
        self._fed[rows] = frontier

    def _run_step(
        self,
        reference: ReferenceModel,
        ids: np.ndarray,
        att: np.ndarray,
        rows: np.ndarray,
        frontier: np.ndarray,
    ) -> None:
        """Feed each row its one new column (``frontier - 1``) through the cached keys/values of the columns before."""
        torch, dev = reference._torch, reference.device
        col = frontier - 1
        W = int(col.max())
        c = torch.as_tensor(rows, device=dev)
        r0 = int(rows[0])
        if np.array_equal(rows, np.arange(r0, r0 + len(rows))):  # a run of rows: views, no gather
            sel: Any = slice(r0, r0 + len(rows))
        else:
            sel = c
        past = _make_cache([(k[sel, :, :W], v[sel, :, :W]) for k, v in zip(self._keys, self._values)])
        b = len(rows)
        t_mask = torch.ones((b, W + 1), dtype=torch.long, device=dev)
        t_mask[:, :W] = torch.as_tensor(self._mask[rows, :W], device=dev)
        pos = torch.as_tensor(self._mask[rows].sum(1), device=dev)[:, None]
        tok = ids[np.arange(b), col]
        model = reference.model
        out = model(
            **cache_kwarg(model, past),
            input_ids=torch.as_tensor(tok, device=dev)[:, None],
            attention_mask=t_mask,
            position_ids=pos,
            use_cache=True,
        )
        cols = torch.as_tensor(col, device=dev)
        for buf_k, buf_v, (k, v) in zip(self._keys, self._values, _layers_kv(output_cache(out))):
            buf_k[c, :, cols] = k[:, :, W]
            buf_v[c, :, cols] = v[:, :, W]
        self._store_next(reference, c, out.logits[:, -1])
        self._ids[rows, col] = tok
        self._mask[rows, col] = True
        self._fed[rows] = frontier


def _layers_kv(cache: Any) -> list[tuple[Any, Any]]:
    """(keys, values) per layer of a ``transformers`` KV cache (a ``Cache`` object or legacy tuples)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(kv[0], kv[1]) for kv in cache]


def _make_cache(kv: list[tuple[Any, Any]]) -> Any:
    """A ``transformers`` ``DynamicCache`` holding ``kv`` (keys, values per layer) without copying them."""
    from aligngym.envs.hf import dynamic_cache

    cache = dynamic_cache([(k[..., :0, :], v[..., :0, :]) for k, v in kv])
    layers = getattr(cache, "layers", None)
    if layers is None or len(layers) != len(kv):  # another cache layout (4.x): let transformers take them
        return dynamic_cache(kv)
    for layer, (k, v) in zip(layers, kv):
        layer.keys, layer.values = k, v
    return cache


def _load_dir(path: Path, device: str) -> Any:
    from transformers import AutoModelForCausalLM

    from aligngym.envs.hf import load_local_pretrained

    return load_local_pretrained(AutoModelForCausalLM, path, what="reference model directory")


def load_reference_model(
    spec: Any, tokenizer: Any = None, device: str = "auto", strict_vocab: bool = True
) -> ReferenceModel:
    """Build the frozen reference model an env or scorer uses.

    :param spec: ``"default"`` (the shipped ``aligngym/envs/data/reference_lm/``), a local directory loadable with
        ``AutoModelForCausalLM.from_pretrained`` (``local_files_only``, never ``trust_remote_code``), a ``transformers``
        model object, or a :class:`ReferenceModel` (returned as is after the vocabulary check).
    :param tokenizer: the env's tokenizer (object, path, ``"default"``/``None``).
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    :raises FileNotFoundError: for a path (or ``"default"``) that is not a model directory.
    :raises ValueError: if the model's vocabulary size is not ``len(tokenizer)``.

    Directory specs are cached per (path, device, vocabulary size) so that many envs share one model.
    """
    from aligngym.envs.device import resolve_device

    tok = load_tokenizer(tokenizer)
    if isinstance(spec, ReferenceModel):
        if spec.vocab_size != tok.vocab_size:
            raise ValueError(
                f"reference model was built for a tokenizer of {spec.vocab_size} ids but the env's tokenizer has "
                f"{tok.vocab_size}"
            )
        return spec
    if isinstance(spec, str | Path):
        if spec == "default":
            path = default_reference_dir()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"the default reference model is not shipped yet ({path} has no config.json); pass "
                    "reference_model=<local causal-LM directory>"
                )
        else:
            path = Path(spec)
            if not path.is_dir():
                raise FileNotFoundError(
                    f"reference model {str(spec)!r} is not a local directory; aligngym never downloads: pass a "
                    "directory saved with save_pretrained, a model object, or 'default'"
                )
        dev = resolve_device(device)
        key = (str(path.resolve()), dev, tok.name, tok.vocab_size, bool(strict_vocab))
        return _CACHE.get_or_create(
            key, lambda: ReferenceModel(_load_dir(path, dev), tok, device=dev, strict_vocab=strict_vocab)
        )
    if hasattr(spec, "config") and callable(spec):
        return ReferenceModel(spec, tok, device=device, strict_vocab=strict_vocab)
    raise TypeError(
        f"reference_model must be 'default', a local directory, a transformers causal LM or a ReferenceModel; "
        f"got {type(spec).__name__}"
    )
