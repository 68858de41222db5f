"""The native batched vector env's shared machinery, :class:`AlignmentVectorEnv`: N rows of one task in numpy
arrays, seeding as ``SyncVectorEnv``, Gymnasium's autoreset modes and aligngym's batch mode, batched scoring (and
gold scoring) of the rows that finish in a step. The two granularities live in :mod:`aligngym.envs.vector`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space

from aligngym.envs.autoreset import (
    BATCH,
    NEXT_STEP,
    mode_value,
    put_info,
    resolve_autoreset_mode,
    select_info,
)
from aligngym.envs.reference import ReferenceKVCache
from aligngym.envs.runtime import RUNTIME_OPTIONS, VECTOR_ONLY_OPTIONS, TaskRuntime, positive_int
from aligngym.envs.tasks import Task
from aligngym.envs.vector_decode import ByteLevelDecoder, decoder_for

#: above this many (prompt, slot) entries the prompt table is not precomputed (rows are filled one by one)
_PROMPT_TABLE_MAX = 1 << 22


class AlignmentVectorEnv(gym.vector.VectorEnv):
    """N rows of one alignment task in numpy arrays, with Gymnasium's autoreset modes and a batch mode.

    Options: everything :class:`~aligngym.envs.core.AlignmentEnv` takes (``task``, ``prompts``, ``tokenizer``,
    ``max_new_tokens``, ``scorer``, ``reward_shaping``, ``reference_model``, ...), plus

    * ``autoreset_mode``: ``AutoresetMode.NEXT_STEP`` (default, as Gymnasium), ``SAME_STEP`` (the final observation
      and info go to ``info["final_obs"]`` / ``info["final_info"]``; what an SB3 adapter needs), ``DISABLED`` (reset
      finished rows yourself with ``reset(options={"reset_mask": mask})``) or ``"batch"`` (:data:`BATCH`).
    * ``scorer_batch_size``: at most this many completions per scorer call (default: all rows that end in a step
      in one call).
    * ``max_episode_steps``: truncate episodes after this many steps (as ``TimeLimit`` does for a single env).

    Seeding follows ``SyncVectorEnv``: ``reset(seed=s)`` seeds row i with ``s + i`` (or pass a list of N seeds), and
    every row draws its prompts from its own generator exactly as a single env would.

    Batch mode (``autoreset_mode="batch"``; ``metadata["autoreset_mode"] == "Batch"``) is not a Gymnasium mode, so
    generic Gymnasium/SB3 code must not be given it (``make_vec``'s warning about that is silenced for these
    classes). ``gym.make_vec`` refuses ``wrappers=`` for a vector entry point: to wrap single envs use
    ``vectorization_mode="sync"`` (the vector-only options above are then accepted and ignored by each single env).

    Batch mode, as an LM rollout uses it:

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import aligngym.envs
    >>> venv = gym.make_vec("aligngym/Target-Token-v0", num_envs=2, autoreset_mode="batch")
    >>> obs, infos = venv.reset(seed=0)
    >>> _, _, terminated, _, _ = venv.step(np.array([4, 0]))  # row 0 says EOS and idles
    >>> terminated.tolist(), venv.unwrapped.active.tolist()
    ([True, False], [False, True])
    >>> _, _, terminated, _, _ = venv.step(np.array([0, 4]))  # row 0's action is ignored; row 1 ends
    >>> terminated.tolist(), venv.unwrapped.active.tolist()
    ([False, True], [False, False])
    >>> _, _, _, _, infos = venv.step(np.array([0, 0]))  # every row starts a new episode
    >>> venv.unwrapped.active.tolist(), infos["_prompt"].tolist()
    ([True, True], [True, True])
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4, "autoreset_mode": NEXT_STEP}
    #: the reference model's KV cache of the running episode(s) (made on the first ``ref_logprob`` step)
    _ref_cache: ReferenceKVCache | None = None

    def __init__(
        self,
        num_envs: int = 1,
        task: str | Task = "Text",
        *,
        render_mode: str | None = None,
        autoreset_mode: Any = NEXT_STEP,
        scorer_batch_size: int | None = None,
        max_episode_steps: int | None = None,
        **options: Any,
    ) -> None:
        self.num_envs = positive_int("num_envs", num_envs)
        unknown = set(options) - RUNTIME_OPTIONS - VECTOR_ONLY_OPTIONS
        if unknown:
            raise TypeError(
                f"unknown option(s) {sorted(unknown)} for {type(self).__name__}; expected any of "
                f"{sorted(RUNTIME_OPTIONS | {'autoreset_mode', 'scorer_batch_size', 'max_episode_steps'})}"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.autoreset_mode = resolve_autoreset_mode(autoreset_mode)
        self._mode = mode_value(self.autoreset_mode)
        if self._mode == BATCH:
            # make_vec warns about any mode outside AutoresetMode; this one is aligngym's own, on purpose
            warnings.filterwarnings(
                "ignore",
                message=r".*(Token|Sequence)VectorEnv\(.*metadata\['autoreset_mode'\] is not an instance of "
                "AutoresetMode",
                category=UserWarning,
            )
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.scorer_batch_size = (
            None if scorer_batch_size is None else positive_int("scorer_batch_size", scorer_batch_size)
        )
        self.max_episode_steps = (
            None if max_episode_steps is None else positive_int("max_episode_steps", max_episode_steps)
        )

        # ONE runtime (tokenizer, encoded prompts, action map, scorer, reference model) serves all rows
        self.runtime = rt = TaskRuntime(task, **options)
        box = spaces.Box(0, rt.vocab_size - 1, shape=(rt.seq_len,), dtype=np.int64)
        self.single_observation_space = spaces.Dict(
            {"input_ids": box, "attention_mask": spaces.Box(0, 1, shape=(rt.seq_len,), dtype=np.int64)}
        )
        self.single_action_space = self._make_action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n, length = self.num_envs, rt.seq_len
        self._P = rt.max_prompt_tokens
        self._ids = np.full((n, length), rt.tokenizer.pad_id, dtype=np.int64)
        self._mask = np.zeros((n, length), dtype=np.int64)
        self._gen = np.zeros(n, dtype=np.int64)  # generated tokens per row
        self._steps = np.zeros(n, dtype=np.int64)  # steps taken in the current episode
        self._prompt_index = np.full(n, -1, dtype=np.int64)
        self._rows: list[dict[str, Any] | None] = [None] * n
        self._ended = np.zeros(n, dtype=np.bool_)  # the row's episode ended (terminated or truncated)
        self._prev_score = np.zeros(n, dtype=np.float64)  # reward_shaping="delta"
        self._last_text: list[str] = [""] * n
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._row_seeds: list[int | None] = [None] * n
        self._started = False
        self._mask_early = rt.action_mask(0)  # EOS off while fewer than min_new_tokens were generated
        self._mask_late = rt.action_mask(rt.min_new_tokens)
        self._prompt_table = self._build_prompt_table()
        self._all = np.arange(n)  # idx of a step or reset of every row (the common case: slices, no gathers)
        self._all.setflags(write=False)
        self._decoder: ByteLevelDecoder | bool | None = (
            False  # built on the first decode (None: via tokenizers)
        )

    # -- hooks of the two granularities ----------------------------------------------------------------------------
    def _make_action_space(self) -> spaces.Space[Any]:
        raise NotImplementedError

    def _check_actions(self, actions: Any) -> np.ndarray:
        raise NotImplementedError

    def _advance(
        self, idx: np.ndarray, actions: np.ndarray, infos: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply ``actions`` to rows ``idx``; write their step infos; return (reward float64, terminated bool)."""
        raise NotImplementedError

    # -- seeding and prompts ---------------------------------------------------------------------------------------
    @property
    def np_random_seed(self) -> tuple[int | None, ...]:  # type: ignore[override]
        """Each row's seed (as ``SyncVectorEnv.np_random_seed``; unseeded rows are seeded from the OS first)."""
        for i in range(self.num_envs):
            self._rng(i)
        return tuple(self._row_seeds)

    @property  # type: ignore[misc]
    def np_random(self) -> tuple[np.random.Generator, ...]:  # type: ignore[override]
        """Each row's generator (as ``SyncVectorEnv.np_random``)."""
        return tuple(self._rng(i) for i in range(self.num_envs))

    def _rng(self, i: int) -> np.random.Generator:
        rng = self._rngs[i]
        if rng is None:  # as gym.Env.np_random: lazily seeded from the OS
            rng, self._row_seeds[i] = seeding.np_random()
            self._rngs[i] = rng
        return rng

    def _seed_list(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        n = self.num_envs
        if seed is None:
            return [None] * n
        if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
            return [int(seed) + i for i in range(n)]
        if isinstance(seed, Sequence | np.ndarray) and not isinstance(seed, str):
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"a list of seeds must have num_envs={n} entries, got {len(seeds)}")
            return [None if s is None else int(s) for s in seeds]
        raise TypeError(f"seed must be None, an int or a list of {n} ints, got {type(seed).__name__}")

    def _build_prompt_table(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The prompt slot (ids, mask; int64 (n_prompts, max_prompt_tokens)) of every prompt, if small enough."""
        rt = self.runtime
        if len(rt.prompt_ids) * self._P > _PROMPT_TABLE_MAX:
            return None
        ids = np.full((len(rt.prompt_ids), self._P), rt.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for k, p in enumerate(rt.prompt_ids):
            ids[k, self._P - len(p) :] = p
            mask[k, self._P - len(p) :] = 1
        return ids, mask

    def _per_row_option(self, options: dict[str, Any], key: str, i: int) -> Any:
        value = options[key]
        if isinstance(value, list | tuple | np.ndarray):
            if len(value) != self.num_envs:
                raise ValueError(
                    f"options[{key!r}] as a list must have num_envs={self.num_envs} entries (one per row), "
                    f"got {len(value)}"
                )
            return value[i]
        return value

    def _reference_cache(self) -> ReferenceKVCache:
        """The reference model's KV cache of the rows' episodes (one cache row per env row, made on first use)."""
        if self._ref_cache is None:
            self._ref_cache = ReferenceKVCache(self.num_envs, self._ids.shape[1])
        return self._ref_cache

    def _reset_rows(self, idx: np.ndarray, options: dict[str, Any], infos: dict[str, Any]) -> None:
        """Start new episodes in rows ``idx`` (prompts drawn with each row's generator) and write their reset infos.

        ``options``: ``{"prompt_index": i}`` or ``{"prompt": text_or_row}`` for every row, or a list of N of them.
        """
        if idx.size == 0:
            return
        rt = self.runtime
        n_prompts = len(rt.rows)
        rows_of = idx.tolist()
        pidx = np.empty(idx.size, dtype=np.int64)
        custom: dict[int, np.ndarray] = {}
        chosen = "prompt" in options or "prompt_index" in options
        if not chosen:  # the autoreset path: a prompt drawn with each row's generator
            rngs, table_rows = self._rngs, rt.rows
            drawn = [int((rngs[i] or self._rng(i)).integers(n_prompts)) for i in rows_of]
            pidx[:] = drawn
            for i, k in zip(rows_of, drawn):
                self._rows[i] = table_rows[k]
        for j, i in enumerate(rows_of if chosen else ()):
            if "prompt" in options:
                row, ids = rt.custom_row(self._per_row_option(options, "prompt", i))
                self._rows[i] = row
                custom[j] = ids
                pidx[j] = -1
                continue
            k = self._per_row_option(options, "prompt_index", i)
            if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= int(k) < n_prompts:
                raise ValueError(f"prompt_index {k!r} out of range for {n_prompts} prompts")
            k = int(k)
            pidx[j] = k
            self._rows[i] = rt.rows[k]
        P = self._P
        self._ids[idx, P:] = rt.tokenizer.pad_id
        self._mask[idx, P:] = 0
        table = self._prompt_table
        if table is not None and not custom:
            self._ids[idx, :P] = table[0][pidx]
            self._mask[idx, :P] = table[1][pidx]
        else:
            for j, i in enumerate(idx.tolist()):
                p = custom[j] if j in custom else rt.prompt_ids[pidx[j]]
                self._ids[i, :P] = rt.tokenizer.pad_id
                self._mask[i, :P] = 0
                self._ids[i, P - len(p) : P] = p
                self._mask[i, P - len(p) : P] = 1
        self._prompt_index[idx] = pidx
        if self._ref_cache is not None:
            self._ref_cache.clear(idx)  # the reference's KV cache lives with each row's episode
        self._gen[idx] = 0
        self._steps[idx] = 0
        self._ended[idx] = False
        self._prev_score[idx] = 0.0
        for i in rows_of:
            self._last_text[i] = ""
        n = self.num_envs
        put_info(infos, "prompt", n, idx, [self._rows[i]["prompt"] for i in rows_of])
        put_info(infos, "prompt_index", n, idx, pidx)
        if rt.eos_note:
            put_info(infos, "eos_note", n, idx, [rt.eos_note] * idx.size)
        if rt.mask_in_info:
            put_info(infos, "action_mask", n, idx, self._mask_rows(np.zeros(idx.size, dtype=np.int64)))

    # -- Gymnasium API ---------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode in every row (or in the rows of ``options["reset_mask"]``, bool (N,)).

        :param seed: ``s`` seeds row i with ``s + i``; a list gives each row its seed (``None``: keep its generator).
        :param options: ``prompt_index`` / ``prompt`` as for the single env, for every row or as a list of N values;
            ``reset_mask`` (bool ndarray (N,)) resets only those rows.
        :return: observations ``{"input_ids", "attention_mask"}`` int64 (N, L) and the batched reset info.
        """
        n = self.num_envs
        seeds = self._seed_list(seed)
        options = dict(options) if options else {}
        reset_mask = options.pop("reset_mask", None)
        if reset_mask is not None:
            if (
                not isinstance(reset_mask, np.ndarray)
                or reset_mask.dtype != np.bool_
                or reset_mask.shape != (n,)
            ):
                raise TypeError(
                    f"options['reset_mask'] must be a bool ndarray of shape ({n},), got {type(reset_mask).__name__}"
                    + (
                        f" {reset_mask.dtype} {reset_mask.shape}"
                        if isinstance(reset_mask, np.ndarray)
                        else ""
                    )
                )
            if not reset_mask.any():
                raise ValueError("options['reset_mask'] must select at least one row")
            if not self._started and not reset_mask.all():
                raise RuntimeError("the first reset() must reset every row (no reset_mask)")
            idx = np.flatnonzero(reset_mask)
        else:
            idx = np.arange(n)
        for i in idx.tolist():
            if seeds[i] is not None:
                self._rngs[i], self._row_seeds[i] = seeding.np_random(seeds[i])
        if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
            self._np_random, self._np_random_seed = seeding.np_random(int(seed))
        infos: dict[str, Any] = {}
        self._reset_rows(idx, options, infos)
        self._started = True
        return self._obs(), infos

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every row; finished rows are handled as ``metadata["autoreset_mode"]`` says.

        :param actions: token env: int (N,) action indices; sequence env: int (N, max_new_tokens). Actions of rows
            that are being reset (NEXT_STEP) or idle (batch mode) are ignored.
        :return: observations, rewards float64 (N,), terminated bool (N,), truncated bool (N,), batched info.
        """
        if not self._started:
            raise RuntimeError("call reset() before step()")
        acts = self._check_actions(actions)
        n = self.num_envs
        mode = self._mode
        infos: dict[str, Any] = {}
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=np.bool_)
        truncated = np.zeros(n, dtype=np.bool_)
        empty = self._all[:0]
        if mode == "NextStep":
            if np.count_nonzero(self._ended):
                reset_idx, step_idx = np.flatnonzero(self._ended), np.flatnonzero(~self._ended)
            else:
                reset_idx, step_idx = empty, self._all
        elif mode == BATCH:
            if self._ended.all():
                reset_idx, step_idx = self._all, empty
            elif np.count_nonzero(self._ended):
                reset_idx, step_idx = empty, np.flatnonzero(~self._ended)
            else:
                reset_idx, step_idx = empty, self._all
        else:
            if mode == "Disabled" and self._ended.any():
                raise RuntimeError(
                    f"rows {np.flatnonzero(self._ended).tolist()} have ended; with autoreset_mode=DISABLED reset "
                    "them first: reset(options={'reset_mask': mask})"
                )
            reset_idx, step_idx = empty, self._all
        if reset_idx.size:
            self._reset_rows(reset_idx, {}, infos)
        if step_idx.size:
            self._check_range(acts, step_idx)
            if step_idx is self._all:  # every row: no gathers and scatters (the advance returns fresh arrays)
                rewards, terminated = self._advance(step_idx, acts, infos)
            else:
                r, term = self._advance(step_idx, acts[step_idx], infos)
                rewards[step_idx] = r
                terminated[step_idx] = term
            if self.max_episode_steps is not None:
                self._steps[step_idx] += 1
                truncated[step_idx] = self._steps[step_idx] >= self.max_episode_steps
        done = terminated | truncated if self.max_episode_steps is not None else terminated.copy()
        if mode == "SameStep" and done.any():
            final_obs = np.full(n, None, dtype=object)
            for i in np.flatnonzero(done).tolist():
                final_obs[i] = {"input_ids": self._ids[i].copy(), "attention_mask": self._mask[i].copy()}
            final_info = select_info(infos, done)
            infos = select_info(infos, ~done)
            infos["final_obs"], infos["_final_obs"] = final_obs, done.copy()
            infos["final_info"], infos["_final_info"] = final_info, done.copy()
            self._reset_rows(np.flatnonzero(done), {}, infos)
            done = np.zeros(n, dtype=np.bool_)
        if mode == BATCH and step_idx.size:
            self._ended |= done
        else:
            self._ended = done
        return self._obs(), rewards, terminated, truncated, infos

    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy()}

    def _check_range(self, actions: np.ndarray, idx: np.ndarray) -> None:
        k = self.runtime.n_actions
        sub = actions if idx is self._all else actions[idx]
        if not np.count_nonzero(sub.view(np.uint64) >= k):  # int64 actions: negatives wrap to huge values
            return
        bad = (sub < 0) | (sub >= k)
        if bad.any():
            rows = idx[bad.reshape(len(idx), -1).any(axis=1)]
            raise ValueError(
                f"actions {sub[bad].tolist()} out of range for Discrete({k}) in rows {rows.tolist()}"
            )

    # -- scoring ---------------------------------------------------------------------------------------------------
    def _finish_texts(self, idx: np.ndarray) -> tuple[list[str], list[bool], list[list[int]]]:
        """Decoded completions of rows ``idx`` (cut at stop strings), whether a stop string cut them, and their ids."""
        rt, P = self.runtime, self._P
        gens = self._gen[idx].tolist()
        block = self._ids[idx, P : P + max(gens, default=0)].tolist()
        ids = [row[:g] for row, g in zip(block, gens)]
        # one batched decode of Python-int lists (as TextTokenizer.decode), then runtime.completion_text's stop cut
        if self._decoder is False:
            self._decoder = decoder_for(rt.tokenizer)
        if isinstance(self._decoder, ByteLevelDecoder):
            decoded = self._decoder.decode_batch(ids)
        else:
            decoded = rt.tokenizer.backend.decode_batch(ids, skip_special_tokens=True)
        if not rt.stop:
            return decoded, [False] * len(decoded), ids
        texts, stopped = [], []
        for text in decoded:
            hit = False
            for s in rt.stop:
                k = text.find(s)
                if k >= 0:
                    text, hit = text[:k], True
                    break
            texts.append(text)
            stopped.append(hit)
        return texts, stopped, ids

    def _chunked(
        self, fn: Any, rows: list[dict[str, Any]], texts: list[str]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``fn(rows, texts)`` in one call, or one per ``scorer_batch_size`` chunk (results concatenated)."""
        size = self.scorer_batch_size or max(len(rows), 1)
        if len(rows) <= size:
            out: tuple[np.ndarray, dict[str, np.ndarray]] = fn(rows, texts)
            return out
        parts = [fn(rows[s : s + size], texts[s : s + size]) for s in range(0, len(rows), size)]
        total = np.concatenate([p[0] for p in parts])
        comps = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
        return total, comps

    def _score(self, idx: np.ndarray, texts: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Scores of rows ``idx``: one scorer call, or one per ``scorer_batch_size`` chunk."""
        rows = [self._rows[i] for i in idx.tolist()]
        return self._chunked(self.runtime.score, rows, texts)

    def _gold(
        self, idx: np.ndarray, texts: list[str], proxy: tuple[np.ndarray, dict[str, np.ndarray]]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """Gold scores of finished rows ``idx`` (one gold call, chunked as the score), or ``None`` without gold."""
        rt = self.runtime
        if not rt.has_gold or idx.size == 0:
            return None
        if isinstance(rt.gold_spec, str) and rt.gold_spec == rt.scorer_spec:
            return proxy
        rows = [self._rows[i] for i in idx.tolist()]
        return self._chunked(lambda r, t: rt.gold(r, t), rows, texts)

    def _end_infos(
        self,
        infos: dict[str, Any],
        idx: np.ndarray,
        texts: list[str],
        total: np.ndarray,
        comps: dict[str, np.ndarray],
        reasons: list[str],
        ids: list[list[int]],
    ) -> None:
        """The end-of-episode info of rows ``idx`` (as the single env's ``_finish``), gold included.

        :param ids: each row's completion token ids (from :meth:`_finish_texts`).
        """
        n = self.num_envs
        rows_of = idx.tolist()
        put_info(infos, "prompt", n, idx, [self._rows[i]["prompt"] for i in rows_of])
        put_info(infos, "prompt_index", n, idx, self._prompt_index[idx])
        put_info(infos, "completion", n, idx, texts)
        put_info(infos, "completion_ids", n, idx, list(map(tuple, ids)))
        put_info(infos, "score", n, idx, total.astype(np.float64))
        put_info(infos, "reward_components", n, idx, {k: v.astype(np.float64) for k, v in comps.items()})
        put_info(infos, "finish_reason", n, idx, reasons)
        gold = self._gold(idx, texts, (total, comps))
        if gold is not None:  # reported, never paid
            put_info(infos, "gold_score", n, idx, gold[0].astype(np.float64))
            put_info(infos, "gold_components", n, idx, {k: v.astype(np.float64) for k, v in gold[1].items()})
        for i, text in zip(rows_of, texts):
            self._last_text[i] = text

    def _mask_rows(self, gen: np.ndarray) -> np.ndarray:
        """Action masks (bool (len(gen), k)) of rows that have generated ``gen`` tokens (as ``runtime.action_mask``)."""
        out = np.repeat(self._mask_late[None], gen.size, axis=0)
        if self.runtime.min_new_tokens:
            early = gen < self.runtime.min_new_tokens
            if np.count_nonzero(early):
                out[early] = self._mask_early
        return out

    # -- extras ----------------------------------------------------------------------------------------------------
    @property
    def active(self) -> np.ndarray:
        """bool (N,): rows whose episode is running (batch mode: False for rows idling until the batch is done)."""
        return ~self._ended if self._started else np.zeros(self.num_envs, dtype=np.bool_)

    def render(self) -> tuple[str, ...] | None:
        """``render_mode="ansi"``: one ``"Prompt: ...\\nCompletion: ..."`` string per row."""
        if self.render_mode != "ansi":
            return None
        out = []
        P = self._P
        for i in range(self.num_envs):
            row = self._rows[i]
            prompt = row["prompt"] if row is not None else ""
            if self._ended[i]:
                text = self._last_text[i]
            else:
                text = self.runtime.tokenizer.decode(self._ids[i, P : P + self._gen[i]].tolist())
            out.append(f"Prompt: {prompt}\nCompletion: {text}")
        return tuple(out)

    def close_extras(self, **kwargs: Any) -> None:
        self._rows = [None] * self.num_envs
        self._started = False
