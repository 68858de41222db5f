"""Native batched vector envs: :class:`TokenVectorEnv` and :class:`SequenceVectorEnv` (each id's ``vector_entry_point``).

One :class:`~aligngym.envs.core.TaskRuntime` serves all N rows; observations and bookkeeping are numpy arrays, and the
scorer (and the gold scorer) is called once per step for every row whose episode ends in it. Trajectories, rewards
and infos match a ``SyncVectorEnv`` of the single envs for the same seeds and actions. The shared machinery is
:class:`~aligngym.envs.vector_base.AlignmentVectorEnv`; autoreset modes live in :mod:`aligngym.envs.autoreset`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from aligngym.envs.autoreset import (
    BATCH,
    DISABLED,
    NEXT_STEP,
    SAME_STEP,
    AutoresetMode,
    put_info,
    resolve_autoreset_mode,
)
from aligngym.envs.vector_base import AlignmentVectorEnv


class TokenVectorEnv(AlignmentVectorEnv):
    """N token-level alignment MDPs (:class:`~aligngym.envs.core.TokenEnv`) stepped as one numpy batch.

    ## Description
    The native ``vector_entry_point`` of every ``aligngym/<Task>-Token-v0`` id:
    ``gym.make_vec("aligngym/Sentiment-Token-v0", num_envs=64)``. One tokenizer, prompt table and scorer serve all
    rows; every step the scorer is called once for all rows whose completion ends in it (in chunks of
    ``scorer_batch_size``), or once for all stepped rows with ``reward_shaping="delta"``.

    ## Action Space
    ``MultiDiscrete([k] * N)`` (``single_action_space = Discrete(k)``): int (N,) action indices.
    ``action_masks()`` -> bool (N, k).

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (N, L), int64), attention_mask=Box(0, 1, (N, L), int64))``, row i laid out as
    the single env's observation.

    ## Rewards
    As :class:`~aligngym.envs.core.TokenEnv`, float64 (N,): the score at the end (or the per-step change with
    ``reward_shaping="delta"``), plus ``ref_logprob_coef`` * log p_ref(token) from one batched reference forward.

    ## Starting State
    Each row draws a prompt with its own generator (``reset(seed=s)``: row i is seeded with ``s + i``).

    ## Episode End
    A row terminates at EOS, a stop string or ``max_new_tokens``; ``truncated`` only with ``max_episode_steps``.
    What follows depends on ``autoreset_mode`` (see :class:`AlignmentVectorEnv`); the final info of a row carries
    ``prompt``, ``completion``, ``completion_ids``, ``score``, ``reward_components``, ``finish_reason``.

    ## Arguments
    ``num_envs`` and the options of :class:`AlignmentVectorEnv`. For single-env wrappers use
    ``gym.make_vec(id, num_envs=N, vectorization_mode="sync", wrappers=[...])`` instead.

    ## Version History
    * v0: initial release.

    ## Example
    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import aligngym.envs
    >>> venv = gym.make_vec("aligngym/Target-Token-v0", num_envs=3)
    >>> type(venv).__name__, venv.single_action_space
    ('TokenVectorEnv', Discrete(5))
    >>> obs, infos = venv.reset(seed=0)
    >>> obs["input_ids"].shape, infos["prompt"].tolist()
    ((3, 16), ['Say: yellow red blue.', 'Say: red yellow.', 'Say: yellow red blue.'])
    >>> obs, rewards, terminated, truncated, infos = venv.step(np.array([3, 0, 4]))  # row 2 says EOS
    >>> terminated.tolist(), infos["_score"].tolist(), infos["completion"][2]
    ([False, False, True], [False, False, True], '')
    """

    def _make_action_space(self) -> spaces.Space[Any]:
        return spaces.Discrete(self.runtime.n_actions)

    def _check_actions(self, actions: Any) -> np.ndarray:
        arr = np.asarray(actions)
        if arr.dtype.kind not in "iu":  # bool is kind "b"
            raise TypeError(
                f"actions must be integer action indices, got dtype {arr.dtype} (expected int, shape ({self.num_envs},))"
            )
        if arr.shape != (self.num_envs,):
            raise ValueError(
                f"actions must have shape ({self.num_envs},) (one action index per row), got {arr.shape}"
            )
        return arr.astype(np.int64, copy=False)

    def action_masks(self) -> np.ndarray:
        """Valid actions now, bool (N, k) (read by sb3-contrib ``MaskablePPO``)."""
        return self._mask_rows(self._gen)

    def _advance(
        self, idx: np.ndarray, actions: np.ndarray, infos: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        rt, n, P = self.runtime, self.num_envs, self._P
        m = idx.size
        full = idx is self._all  # every row steps: slices instead of gathers
        tok = rt.tokens_of(actions)
        reward = np.zeros(m, dtype=np.float64)
        if rt.reference_spec is not None:  # KV-cached per row over its episode: O(1) reference work per step
            lp = rt.reference.next_token_logprobs(
                self._ids[idx], self._mask[idx], cache=self._reference_cache(), rows=idx, tokens=tok
            ).astype(np.float64)
            put_info(infos, "ref_logprob", n, idx, lp)
            reward += rt.ref_logprob_coef * lp
        pos = P + (self._gen if full else self._gen[idx])
        self._ids[idx, pos] = tok
        self._mask[idx, pos] = 1
        if full:
            self._gen += 1
            gen = self._gen.copy()
        else:
            self._gen[idx] += 1
            gen = self._gen[idx]
        is_eos = tok == rt.eos_id if rt.eos_id is not None else np.zeros(m, dtype=np.bool_)
        fin = is_eos | (gen >= rt.max_new_tokens)
        if rt.stop:
            for j in np.flatnonzero(~fin).tolist():
                fin[j] = rt.completion_text(self._ids[idx[j], P : P + gen[j]].tolist())[1]
        delta = rt.reward_shaping == "delta"
        if not delta and not np.count_nonzero(fin):  # nobody ends: nothing to score
            if rt.mask_in_info:
                put_info(infos, "action_mask", n, idx, self._mask_rows(gen))
            return reward, fin
        f = np.flatnonzero(fin)
        scored = np.arange(m) if delta else f
        if scored.size:
            texts, stopped, ids = self._finish_texts(idx[scored])
            total, comps = self._score(idx[scored], texts)
            total64 = total.astype(np.float64)
            if delta:
                reward += total64 - self._prev_score[idx]
                self._prev_score[idx] = total64
                fpos = f  # finished rows' positions among the scored rows
            else:
                reward[f] += total64
                fpos = np.arange(f.size)
            if f.size:
                reasons = [
                    "stop" if stopped[p] else ("eos" if is_eos[j] else "length")
                    for p, j in zip(fpos.tolist(), f.tolist())
                ]
                self._end_infos(
                    infos,
                    idx[f],
                    [texts[p] for p in fpos.tolist()],
                    total[fpos],
                    {k: v[fpos] for k, v in comps.items()},
                    reasons,
                    [ids[p] for p in fpos.tolist()],
                )
        if rt.mask_in_info:
            put_info(infos, "action_mask", n, idx, self._mask_rows(gen))
        return reward, fin


class SequenceVectorEnv(AlignmentVectorEnv):
    """N sequence-level alignment bandits (:class:`~aligngym.envs.core.SequenceEnv`) stepped as one numpy batch.

    ## Description
    The native ``vector_entry_point`` of every ``aligngym/<Task>-Sequence-v0`` id. Each step writes a whole
    completion in every row and scores all of them in one scorer call (chunks of ``scorer_batch_size``).

    ## Action Space
    ``MultiDiscrete`` of shape (N, max_new_tokens) (``single_action_space = MultiDiscrete([k] * max_new_tokens)``);
    each row's completion is cut at its first EOS. ``action_masks()`` -> bool (N, max_new_tokens * k).

    ## Observation Space
    As :class:`TokenVectorEnv`.

    ## Rewards
    The task score of each completion, plus ``ref_logprob_coef`` * sum log p_ref(completion) (batched).

    ## Starting State
    As :class:`TokenVectorEnv`.

    ## Episode End
    Every stepped row terminates after its one step; ``autoreset_mode`` says when the next episode starts.

    ## Arguments
    As :class:`TokenVectorEnv`.

    ## Version History
    * v0: initial release.

    ## Example
    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import aligngym.envs
    >>> venv = gym.make_vec("aligngym/Target-Sequence-v0", num_envs=2)
    >>> obs, infos = venv.reset(seed=0)
    >>> actions = np.array([[3, 0, 4, 4], [0, 3, 4, 4]])  # " yellow red", " red yellow"
    >>> obs, rewards, terminated, truncated, infos = venv.step(actions)
    >>> infos["completion"].tolist(), rewards.round(3).tolist(), terminated.tolist()
    ([' yellow red', ' red yellow'], [0.667, 1.0], [True, True])
    """

    def _make_action_space(self) -> spaces.Space[Any]:
        rt = self.runtime
        return spaces.MultiDiscrete(np.full(rt.max_new_tokens, rt.n_actions, dtype=np.int64))

    def _check_actions(self, actions: Any) -> np.ndarray:
        T = self.runtime.max_new_tokens
        arr = np.asarray(actions)
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(
                f"actions must be integer token indices, got dtype {arr.dtype} (expected int, shape "
                f"({self.num_envs}, {T}))"
            )
        if arr.shape != (self.num_envs, T):
            raise ValueError(
                f"actions must have shape ({self.num_envs}, {T}) (num_envs x max_new_tokens token indices), "
                f"got {arr.shape}"
            )
        return arr.astype(np.int64, copy=False)

    def action_masks(self) -> np.ndarray:
        """Per-position valid actions concatenated, bool (N, max_new_tokens * k)."""
        rt = self.runtime
        row = np.concatenate([rt.action_mask(t) for t in range(rt.max_new_tokens)])
        return np.repeat(row[None], self.num_envs, axis=0)

    def _advance(
        self, idx: np.ndarray, actions: np.ndarray, infos: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        rt, n, P = self.runtime, self.num_envs, self._P
        m, T = idx.size, rt.max_new_tokens
        tokens = rt.tokens_of(actions)
        if rt.eos_id is not None:
            is_eos = tokens == rt.eos_id
            has_eos = is_eos.any(axis=1)
            length = np.where(has_eos, is_eos.argmax(axis=1) + 1, T)
        else:
            has_eos = np.zeros(m, dtype=np.bool_)
            length = np.full(m, T, dtype=np.int64)
        reward = np.zeros(m, dtype=np.float64)
        if rt.reference_spec is not None:
            ref = rt.reference
            completions = [tokens[j, : length[j]] for j in range(m)]
            if hasattr(ref, "sequence_logprobs"):
                lp = np.asarray(ref.sequence_logprobs(self._ids[idx], self._mask[idx], completions))
            else:
                lp = np.array(
                    [ref.sequence_logprob(self._ids[i], self._mask[i], c) for i, c in zip(idx, completions)]
                )
            lp = lp.astype(np.float32).astype(np.float64)  # the single env reads float(float32)
            put_info(infos, "ref_logprob", n, idx, lp)
            reward += rt.ref_logprob_coef * lp
        written = np.arange(T)[None, :] < length[:, None]
        self._ids[idx, P:] = np.where(written, tokens, rt.tokenizer.pad_id)
        self._mask[idx, P:] = written
        self._gen[idx] = length
        texts, stopped, ids = self._finish_texts(idx)
        total, comps = self._score(idx, texts)
        reward += total.astype(np.float64)
        reasons = ["stop" if s else ("eos" if e else "length") for s, e in zip(stopped, has_eos.tolist())]
        self._end_infos(infos, idx, texts, total, comps, reasons, ids)
        return reward, np.ones(m, dtype=np.bool_)


__all__ = [
    "BATCH",
    "DISABLED",
    "NEXT_STEP",
    "SAME_STEP",
    "AlignmentVectorEnv",
    "AutoresetMode",
    "SequenceVectorEnv",
    "TokenVectorEnv",
    "resolve_autoreset_mode",
]
