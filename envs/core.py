"""The alignment MDPs: :class:`TokenEnv` (one token per step) and :class:`SequenceEnv` (one completion per step).

Both sit on :class:`AlignmentEnv`, which turns its options into a :class:`~aligngym.envs.runtime.TaskRuntime`
(tokenizer, encoded prompts, action map, scorer, gold scorer, reference model). The runtime is what the native vector
env shares, so single and batched envs encode, decode and score exactly alike.
"""

from __future__ import annotations

from typing import Any, SupportsFloat, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aligngym.envs.reference import ReferenceKVCache
from aligngym.envs.runtime import (
    MASK_IN_INFO_MAX_ACTIONS,
    RUNTIME_OPTIONS,
    VECTOR_ONLY_OPTIONS,
    TaskRuntime,
    positive_int,
    runtime_of,
)
from aligngym.envs.tasks import Task


class AlignmentEnv(gym.Env[dict[str, np.ndarray], Any]):
    """Shared bookkeeping of the token- and sequence-level alignment envs (see :class:`TokenEnv`).

    Options (all keyword): ``task``, ``prompts`` / ``prompt_file`` / ``split`` ("train", "test", "all"),
    ``tokenizer``, ``max_prompt_tokens``, ``max_new_tokens``, ``min_new_tokens``, ``action_vocab``, ``scorer``,
    ``gold`` (what ``scorer`` takes; ``None``: the task's gold, ``False``: none), ``stop``, ``reward_shaping`` (token level: ``"delta"``), ``reference_model``, ``ref_logprob_coef``, ``device``,
    ``prompt_truncation`` ("left" warns, "error" raises), ``action_mask_in_info``, ``render_mode`` ("ansi").
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}
    #: the reference model's KV cache of the running episode(s) (made on the first ``ref_logprob`` step)
    _ref_cache: ReferenceKVCache | None = None

    def __init__(self, task: str | Task = "Text", render_mode: str | None = None, **options: Any) -> None:
        unknown = set(options) - RUNTIME_OPTIONS - VECTOR_ONLY_OPTIONS
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)} for {type(self).__name__}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.runtime = TaskRuntime(task, **{k: v for k, v in options.items() if k not in VECTOR_ONLY_OPTIONS})
        rt = self.runtime
        box = spaces.Box(0, rt.vocab_size - 1, shape=(rt.seq_len,), dtype=np.int64)
        self.observation_space = cast(
            spaces.Space[dict[str, np.ndarray]],
            spaces.Dict(
                {"input_ids": box, "attention_mask": spaces.Box(0, 1, shape=(rt.seq_len,), dtype=np.int64)}
            ),
        )
        self._row: dict[str, Any] | None = None
        self._generated: list[int] = []
        self._done = True
        self._last = ""

    # -- episode start ---------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode on a prompt drawn with ``self.np_random``.

        ``options={"prompt_index": i}`` picks prompt i of the set; ``options={"prompt": "text" or {...}}`` uses a
        prompt of your own (with optional context columns).
        """
        super().reset(seed=seed)
        rt = self.runtime
        options = options or {}
        if "prompt" in options:
            self._row, prompt_ids = rt.custom_row(options["prompt"])
            self._prompt_index = -1
        else:
            if "prompt_index" in options:
                i = options["prompt_index"]
                if (
                    isinstance(i, bool)
                    or not isinstance(i, int | np.integer)
                    or not 0 <= int(i) < len(rt.rows)
                ):
                    raise ValueError(f"prompt_index {i!r} out of range for {len(rt.rows)} prompts")
                i = int(i)
            else:
                i = int(self.np_random.integers(len(rt.rows)))
            self._prompt_index = i
            self._row, prompt_ids = rt.rows[i], rt.prompt_ids[i]
        self._ids, self._mask = rt.empty_obs(prompt_ids)
        if self._ref_cache is not None:
            self._ref_cache.clear()  # the reference's KV cache lives with the episode
        self._generated = []
        self._done = False
        self._last = ""
        self._prev_score = 0.0
        info: dict[str, Any] = {"prompt": self._row["prompt"], "prompt_index": self._prompt_index}
        if rt.eos_note:
            info["eos_note"] = rt.eos_note
        if rt.mask_in_info:
            info["action_mask"] = rt.action_mask(0)
        return self._obs(), info

    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy()}

    def _check_running(self) -> None:
        if self._row is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has ended (terminated=True); call reset() before stepping again")

    def action_masks(self) -> np.ndarray:
        """Valid actions now (bool); read by sb3-contrib ``MaskablePPO``."""
        return self.runtime.action_mask(len(self._generated))

    def _finish(self, finish_reason: str) -> tuple[float, dict[str, Any]]:
        """Score the completion; return the score and the end-of-episode info."""
        rt = self.runtime
        assert self._row is not None
        text, stopped = rt.completion_text(self._generated)
        if stopped:
            finish_reason = "stop"
        total, comps = rt.score([self._row], [text])
        gold = rt.gold([self._row], [text], proxy=(total, comps))
        self._done = True
        self._last = text
        info = {
            "prompt": self._row["prompt"],
            "prompt_index": self._prompt_index,
            "completion": text,
            # a tuple, not an ndarray: SyncVectorEnv batches ndarray infos by the first env's shape (breaks on ragged)
            "completion_ids": tuple(int(t) for t in self._generated),
            "score": float(total[0]),
            "reward_components": {k: float(v[0]) for k, v in comps.items()},
            "finish_reason": finish_reason,
        }
        if gold is not None:  # reported, never paid
            info["gold_score"] = float(gold[0][0])
            info["gold_components"] = {k: float(v[0]) for k, v in gold[1].items()}
        return float(total[0]), info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        prompt = self._row["prompt"] if self._row is not None else ""
        text = self._last if self._done else self.runtime.tokenizer.decode(self._generated)
        return f"Prompt: {prompt}\nCompletion: {text}"

    def close(self) -> None:
        self._row = None
        self._done = True


class TokenEnv(AlignmentEnv):
    """Token-level alignment MDP: write a completion one token at a time.

    ## Description
    A prompt from the task's prompt set is encoded by a real tokenizer; each step appends one token. When the
    completion ends, the task's scorer judges the decoded ``(prompt, completion)`` and pays the score.

    ## Action Space
    ``Discrete(V)`` (V = ``len(tokenizer)``), or ``Discrete(k)`` with ``action_vocab`` (k strings/ids mapped onto
    token ids). ``env.action_masks()`` / ``info["action_mask"]``: special tokens off, EOS off before ``min_new_tokens``.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))``, L = max_prompt_tokens +
    max_new_tokens; the prompt left-padded into the first max_prompt_tokens slots, generated tokens after it.

    ## Rewards
    0 before the end, then the score (``reward_shaping="delta"``: the change in score at every step). With
    ``ref_logprob_coef=beta`` every step also adds beta * log p_ref(token | state), exposed as ``info["ref_logprob"]``.

    ## Starting State
    A prompt drawn uniformly with ``np_random`` (or ``options={"prompt_index": i}`` / ``{"prompt": ...}``).

    ## Episode End
    terminated=True at EOS, at a stop string, or at ``max_new_tokens`` (the score is paid then and nothing follows).
    ``truncated`` is always False: time limits belong to an outer ``TimeLimit``. Final ``info``: ``prompt``,
    ``completion``, ``completion_ids``, ``score``, ``reward_components``, ``finish_reason`` (eos/stop/length).

    ## Arguments
    See :class:`AlignmentEnv`; ``gym.make("aligngym/Sentiment-Token-v0", max_new_tokens=8, action_vocab=[...])``.

    ## Version History
    * v0: initial release.

    ## Example
    >>> import gymnasium as gym
    >>> import aligngym.envs
    >>> env = gym.make("aligngym/Target-Token-v0")
    >>> obs, info = env.reset(seed=0)
    >>> info["prompt"], env.action_space, obs["input_ids"].shape
    ('Say: yellow red blue.', Discrete(5), (16,))
    >>> for action in (3, 0, 4):  # " yellow", " red", then EOS
    ...     obs, reward, terminated, truncated, info = env.step(action)
    >>> terminated, info["completion"], round(reward, 3), info["finish_reason"]
    (True, ' yellow red', 0.667, 'eos')
    >>> info["gold_score"] == info["score"]  # Target's gold judge is its exact reward
    True
    """

    def __init__(self, task: str | Task = "Text", render_mode: str | None = None, **options: Any) -> None:
        super().__init__(task, render_mode=render_mode, **options)
        self.action_space = spaces.Discrete(self.runtime.n_actions)

    def _action_index(self, action: Any) -> int:
        n = self.runtime.n_actions
        if isinstance(action, bool | np.bool_):
            raise TypeError(f"action must be an integer token index, got bool {action!r}")
        if isinstance(action, np.ndarray):
            if action.size != 1:
                raise ValueError(
                    f"token-level action must be one integer, got an array of shape {action.shape}"
                )
            if not np.issubdtype(action.dtype, np.integer):
                raise TypeError(f"action must be an integer, got an array of dtype {action.dtype}")
            action = action.reshape(()).item()
        if not isinstance(action, int | np.integer):
            raise TypeError(f"action must be an integer in [0, {n}), got {type(action).__name__} {action!r}")
        a = int(action)
        if not 0 <= a < n:
            raise ValueError(f"action {a} out of range for Discrete({n})")
        return a

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        self._check_running()
        rt = self.runtime
        tok = rt.token_of(self._action_index(action))
        reward = 0.0
        info: dict[str, Any] = {}
        if rt.reference_spec is not None:  # KV-cached over the episode: O(1) reference work per step
            if self._ref_cache is None:
                self._ref_cache = ReferenceKVCache(1, self._ids.shape[0])
            lp = float(
                rt.reference.next_token_logprobs(
                    self._ids[None], self._mask[None], cache=self._ref_cache, tokens=[tok]
                )[0]
            )
            info["ref_logprob"] = lp
            reward += rt.ref_logprob_coef * lp
        pos = rt.max_prompt_tokens + len(self._generated)
        self._ids[pos] = tok
        self._mask[pos] = 1
        self._generated.append(tok)
        finish = None
        if rt.eos_id is not None and tok == rt.eos_id:
            finish = "eos"
        elif len(self._generated) >= rt.max_new_tokens:
            finish = "length"
        elif rt.stop and rt.completion_text(self._generated)[1]:
            finish = "stop"
        if finish is not None:
            score, end_info = self._finish(finish)
            info.update(end_info)
            reward += score - self._prev_score if rt.reward_shaping == "delta" else score
        elif rt.reward_shaping == "delta":
            text, _ = rt.completion_text(self._generated)
            s = float(rt.score([self._row], [text])[0][0])
            reward += s - self._prev_score
            self._prev_score = s
        if rt.mask_in_info:
            info["action_mask"] = rt.action_mask(len(self._generated))
        return self._obs(), float(reward), finish is not None, False, info


class SequenceEnv(AlignmentEnv):
    """Sequence-level alignment MDP (a contextual bandit): the action is a whole completion.

    ## Description
    Same tasks, tokenizer and scorers as :class:`TokenEnv`, but one step writes the whole completion.

    ## Action Space
    ``MultiDiscrete([V] * max_new_tokens)`` (or ``[k] * max_new_tokens`` with ``action_vocab``): token indices;
    the completion is cut at the first EOS. ``action_masks()`` gives the per-position masks concatenated.

    ## Observation Space
    As :class:`TokenEnv`: the encoded prompt (left-padded) and, after the step, the completion after it.

    ## Rewards
    The task score of the completion, plus ``ref_logprob_coef`` * sum of log p_ref(completion tokens) when a
    reference model is given (``info["ref_logprob"]``).

    ## Starting State
    A prompt drawn uniformly with ``np_random`` (or chosen through ``options``, as in :class:`TokenEnv`).

    ## Episode End
    After one step, terminated=True; ``info`` as at the end of a :class:`TokenEnv` episode.

    ## Arguments
    See :class:`AlignmentEnv`.

    ## Version History
    * v0: initial release.

    ## Example
    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import aligngym.envs
    >>> env = gym.make("aligngym/Target-Sequence-v0")
    >>> obs, info = env.reset(seed=0)
    >>> env.action_space
    MultiDiscrete([5 5 5 5])
    >>> obs, reward, terminated, truncated, info = env.step(np.array([3, 0, 4, 4]))  # cut at the first EOS
    >>> info["completion"], info["finish_reason"], terminated, round(reward, 3)
    (' yellow red', 'eos', True, 0.667)
    """

    def __init__(self, task: str | Task = "Text", render_mode: str | None = None, **options: Any) -> None:
        super().__init__(task, render_mode=render_mode, **options)
        rt = self.runtime
        self.action_space = spaces.MultiDiscrete(np.full(rt.max_new_tokens, rt.n_actions, dtype=np.int64))

    def action_masks(self) -> np.ndarray:
        rt = self.runtime
        return np.concatenate([rt.action_mask(t) for t in range(rt.max_new_tokens)])

    def _action_indices(self, action: Any) -> np.ndarray:
        rt = self.runtime
        arr = np.asarray(action)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"sequence action must be integer token indices, got dtype {arr.dtype}")
        if arr.shape != (rt.max_new_tokens,):
            raise ValueError(
                f"sequence action must have shape ({rt.max_new_tokens},) (max_new_tokens token indices), got {arr.shape}"
            )
        bad = (arr < 0) | (arr >= rt.n_actions)
        if bad.any():
            raise ValueError(
                f"sequence action has ids {arr[bad].tolist()} out of range for Discrete({rt.n_actions}) "
                f"at positions {np.flatnonzero(bad).tolist()}"
            )
        return arr.astype(np.int64)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        self._check_running()
        rt = self.runtime
        tokens = rt.tokens_of(self._action_indices(action))
        finish = "length"
        if rt.eos_id is not None:
            hits = np.flatnonzero(tokens == rt.eos_id)
            if hits.size:
                tokens = tokens[: hits[0] + 1]
                finish = "eos"
        reward = 0.0
        info: dict[str, Any] = {}
        if rt.reference_spec is not None:
            lp = float(rt.reference.sequence_logprob(self._ids, self._mask, tokens))
            info["ref_logprob"] = lp
            reward += rt.ref_logprob_coef * lp
        start = rt.max_prompt_tokens
        self._ids[start : start + len(tokens)] = tokens
        self._mask[start : start + len(tokens)] = 1
        self._generated = [int(t) for t in tokens]
        score, end_info = self._finish(finish)
        info.update(end_info)
        reward += score
        return self._obs(), float(reward), True, False, info


__all__ = [
    "MASK_IN_INFO_MAX_ACTIONS",
    "VECTOR_ONLY_OPTIONS",
    "AlignmentEnv",
    "SequenceEnv",
    "TaskRuntime",
    "TokenEnv",
    "positive_int",
    "runtime_of",
]
