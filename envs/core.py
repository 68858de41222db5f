"""The alignment MDPs: :class:`TokenEnv` (one token per step) and :class:`SequenceEnv` (one completion per step).

Both sit on :class:`AlignmentEnv`, which turns its options into a :class:`TaskRuntime` (tokenizer, encoded prompts,
action map, scorer, reference model). The runtime is what the native vector env shares, so single and batched envs
encode, decode and score exactly alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aligngym.envs.scorers import BaseScorer, ScorerError, make_scorer
from aligngym.envs.tasks import Task, get_task, load_prompt_rows, normalize_prompt_rows
from aligngym.envs.tokenization import TextTokenizer, load_tokenizer

#: options that only the native vector env uses; single envs accept and ignore them, because
#: ``gym.make_vec(..., vectorization_mode="sync")`` passes every kwarg to every single env.
VECTOR_ONLY_OPTIONS = frozenset({"autoreset_mode", "scorer_batch_size"})
#: above this many actions ``info["action_mask"]`` is left out unless asked for (``env.action_masks()`` always works)
MASK_IN_INFO_MAX_ACTIONS = 4096
_NOT_CONTEXT = {"prompt", "split"}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def runtime_of(env: Any, required_by: str | None = None) -> Any:
    """The :class:`TaskRuntime` behind an env: a single env, a Gymnasium vector env (native or sync), an SB3
    ``VecEnv`` or any stack of wrappers around them.

    :param env: the env (or vector env, or wrapper) to look through.
    :param required_by: when given, the caller's name: a missing runtime raises instead of returning ``None``.
    :returns: the runtime, or ``None`` when there is none and ``required_by`` is ``None``.
    :raises TypeError: when ``required_by`` is given and ``env`` is not an aligngym env.
    """
    start = env
    for _ in range(32):
        if env is None:
            break
        rt = getattr(getattr(env, "unwrapped", env), "runtime", None)
        if rt is not None:
            return rt
        envs = getattr(env, "envs", None)
        if envs:
            return runtime_of(envs[0], required_by)
        nxt = getattr(env, "venv", None) or getattr(env, "env", None)
        if nxt is None:
            getter = getattr(env, "get_attr", None)  # a remote vector env (SB3 SubprocVecEnv, Async)
            if callable(getter):
                try:
                    return getter("runtime")[0]
                except Exception:  # non-aligngym vector envs have no such attribute
                    pass
        env = nxt
    if required_by is not None:
        raise TypeError(
            f"{required_by} needs an aligngym env (one with a TaskRuntime), got {type(start).__name__}"
        )
    return None


class TaskRuntime:
    """The resolved options of an env: tokenizer, prompt rows and their token ids, action map, scorer, reference.

    Built once per env (or once per vector env); cheap to pickle because the scorer and the reference model are
    resolved lazily from their specs and dropped on pickling when they can be rebuilt.
    """

    def __init__(
        self,
        task: str | Task = "Text",
        *,
        prompts: Sequence[Any] | None = None,
        prompt_file: str | None = None,
        split: str = "train",
        tokenizer: Any = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        action_vocab: Sequence[str | int] | None = None,
        scorer: Any = None,
        stop: Sequence[str] | None = None,
        reward_shaping: str | None = None,
        reference_model: Any = None,
        ref_logprob_coef: float = 0.0,
        device: str = "auto",
        prompt_truncation: str = "left",
        action_mask_in_info: bool | None = None,
    ) -> None:
        self.task = get_task(task)
        self.split = split
        self.tokenizer: TextTokenizer = load_tokenizer(tokenizer)
        self.vocab_size = self.tokenizer.vocab_size
        self.max_prompt_tokens = _positive_int(
            "max_prompt_tokens",
            max_prompt_tokens if max_prompt_tokens is not None else self.task.max_prompt_tokens,
        )
        self.max_new_tokens = _positive_int(
            "max_new_tokens", max_new_tokens if max_new_tokens is not None else self.task.max_new_tokens
        )
        if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, int) or min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be a non-negative integer, got {min_new_tokens!r}")
        if min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens={min_new_tokens} exceeds max_new_tokens={self.max_new_tokens}")
        self.min_new_tokens = min_new_tokens
        self.seq_len = self.max_prompt_tokens + self.max_new_tokens
        if prompt_truncation not in ("left", "error"):
            raise ValueError(f"prompt_truncation must be 'left' or 'error', got {prompt_truncation!r}")
        self.prompt_truncation = prompt_truncation
        if reward_shaping not in (None, "delta"):
            raise ValueError(f"reward_shaping must be None or 'delta', got {reward_shaping!r}")
        self.reward_shaping = reward_shaping
        self.stop: tuple[str, ...] = tuple(stop) if stop is not None else self.task.stop
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")
        self.device = device
        self.eos_id = self.tokenizer.eos_id
        self.eos_note = self.tokenizer.eos_note

        # actions
        vocab = action_vocab if action_vocab is not None else self.task.action_vocab
        if vocab is None:
            self.action_ids: np.ndarray | None = None
            self.n_actions = self.vocab_size
        else:
            ids = [self._vocab_entry_id(v) for v in vocab]
            if not ids:
                raise ValueError("action_vocab is empty")
            if len(set(ids)) != len(ids):
                raise ValueError(f"action_vocab maps two entries to the same token id: {ids}")
            self.action_ids = np.asarray(ids, dtype=np.int64)
            self.n_actions = len(ids)
        self.mask_in_info = (
            self.n_actions <= MASK_IN_INFO_MAX_ACTIONS
            if action_mask_in_info is None
            else bool(action_mask_in_info)
        )
        tokens = self.action_ids if self.action_ids is not None else np.arange(self.n_actions)
        blocked = [t for t in self.tokenizer.special_ids if t != self.eos_id]
        self._base_mask = ~np.isin(tokens, blocked)
        self._eos_action = (
            np.flatnonzero(tokens == self.eos_id) if self.eos_id is not None else np.zeros(0, np.int64)
        )
        if not self._base_mask.any():
            raise ValueError("every action is a special token; give action_vocab some real tokens")

        # prompts
        self.rows = load_prompt_rows(self.task, prompts, prompt_file, split)
        self.context_keys = sorted({k for r in self.rows for k in r} - _NOT_CONTEXT)
        self.prompt_ids = self._encode_prompts([r["prompt"] for r in self.rows])

        # scorer / reference (lazy)
        self.scorer_spec = scorer if scorer is not None else self.task.scorer
        if self.scorer_spec is None:
            raise ValueError(
                f"task {self.task.name!r} needs a scorer: pass scorer='sentiment', a dict or a callable"
            )
        self._scorer: BaseScorer | None = None
        if not isinstance(self.scorer_spec, str | dict):
            self._scorer = make_scorer(self.scorer_spec, device=device)  # validate user objects now
        self.reference_spec = reference_model
        self.ref_logprob_coef = float(ref_logprob_coef)
        if self.ref_logprob_coef != 0.0 and reference_model is None:
            raise ValueError(
                "ref_logprob_coef needs reference_model= (a local causal LM path, object or 'default')"
            )
        self._reference: Any = None

    # -- tokens and actions ----------------------------------------------------------------------------------------
    def _vocab_entry_id(self, entry: str | int) -> int:
        if isinstance(entry, bool):
            raise TypeError(f"action_vocab entries must be token strings or ids, got {entry!r}")
        if isinstance(entry, int | np.integer):
            if not 0 <= int(entry) < self.vocab_size:
                raise ValueError(
                    f"action_vocab id {entry} out of range for vocabulary size {self.vocab_size}"
                )
            return int(entry)
        if isinstance(entry, str):
            return self.tokenizer.single_token_id(entry)
        raise TypeError(f"action_vocab entries must be token strings or ids, got {type(entry).__name__}")

    def token_of(self, action: int) -> int:
        """Token id of an action index."""
        return int(self.action_ids[action]) if self.action_ids is not None else int(action)

    def tokens_of(self, actions: np.ndarray) -> np.ndarray:
        return (
            self.action_ids[actions] if self.action_ids is not None else np.asarray(actions, dtype=np.int64)
        )

    def action_mask(self, num_generated: int) -> np.ndarray:
        """Valid actions (bool, (n_actions,)): special tokens off, EOS off before ``min_new_tokens``."""
        mask = self._base_mask.copy()
        if num_generated < self.min_new_tokens and self._eos_action.size:
            mask[self._eos_action] = False
        return mask

    # -- prompts ---------------------------------------------------------------------------------------------------
    def _encode_prompts(self, texts: Sequence[str]) -> list[np.ndarray]:
        out, cut = [], 0
        for ids in self.tokenizer.encode_batch(texts):
            arr, was_cut = self._fit_prompt(ids)
            out.append(arr)
            cut += was_cut
        if cut:
            warnings.warn(
                f"{cut} of {len(texts)} prompts are longer than max_prompt_tokens={self.max_prompt_tokens}; "
                "they were left-truncated (pass prompt_truncation='error' to refuse them)",
                stacklevel=4,
            )
        return out

    def _fit_prompt(self, ids: list[int]) -> tuple[np.ndarray, bool]:
        if not ids:
            ids = [self.tokenizer.bos_id]  # an empty prompt becomes the beginning-of-text token
        cut = len(ids) > self.max_prompt_tokens
        if cut:
            if self.prompt_truncation == "error":
                raise ValueError(
                    f"prompt has {len(ids)} tokens but max_prompt_tokens={self.max_prompt_tokens}: shorten it or "
                    "raise max_prompt_tokens"
                )
            ids = ids[-self.max_prompt_tokens :]
        return np.asarray(ids, dtype=np.int64), cut

    def custom_row(self, row: Any) -> tuple[dict[str, Any], np.ndarray]:
        """A prompt given at reset (``options={"prompt": ...}``) as a row and its ids."""
        [r] = normalize_prompt_rows([row], source="options['prompt']")
        missing = [k for k in self.context_keys if k not in r]
        if missing:
            raise ValueError(
                f"a prompt for task {self.task.name!r} needs the context columns {missing}: pass "
                f"options={{'prompt': {{'prompt': ..., {', '.join(repr(k) + ': ...' for k in missing)}}}}}"
            )
        ids, cut = self._fit_prompt(self.tokenizer.encode(r["prompt"]))
        if cut:
            warnings.warn(
                f"prompt left-truncated to max_prompt_tokens={self.max_prompt_tokens}", stacklevel=3
            )
        return r, ids

    def empty_obs(self, prompt_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``input_ids`` and ``attention_mask`` (int64, (L,)) with the prompt left-padded into its slot."""
        ids = np.full(self.seq_len, self.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros(self.seq_len, dtype=np.int64)
        start = self.max_prompt_tokens - len(prompt_ids)
        ids[start : self.max_prompt_tokens] = prompt_ids
        mask[start : self.max_prompt_tokens] = 1
        return ids, mask

    # -- completions and scores ------------------------------------------------------------------------------------
    def completion_text(self, token_ids: Sequence[int]) -> tuple[str, bool]:
        """Decoded completion, cut at the first stop string; and whether a stop string was found."""
        text = self.tokenizer.decode(token_ids)
        for s in self.stop:
            k = text.find(s)
            if k >= 0:
                return text[:k], True
        return text, False

    @property
    def scorer(self) -> BaseScorer:
        if self._scorer is None:
            self._scorer = make_scorer(self.scorer_spec, device=self.device)
        return self._scorer

    def score(
        self, rows: Sequence[dict[str, Any]], completions: Sequence[str]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One scorer call for a batch: total (float32, (B,)) and components.

        :raises ScorerError: naming the scorer when it raises or returns a bad value.
        """
        prompts = [r["prompt"] for r in rows]
        keys = sorted({k for r in rows for k in r} - _NOT_CONTEXT)
        context = {k: [r.get(k) for r in rows] for k in keys}
        scorer = self.scorer
        try:
            return scorer.score_with_components(prompts, completions, **context)
        except ScorerError:
            raise
        except Exception as err:
            raise ScorerError(f"scorer {scorer.name!r} raised {type(err).__name__}: {err}") from err

    @property
    def reference(self) -> Any:
        if self._reference is None and self.reference_spec is not None:
            from aligngym.envs.reference import load_reference_model

            self._reference = load_reference_model(self.reference_spec, self.tokenizer, device=self.device)
        return self._reference

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.scorer_spec, str | dict):
            state["_scorer"] = None
        if isinstance(self.reference_spec, str):
            state["_reference"] = None
        return state


class AlignmentEnv(gym.Env[dict[str, np.ndarray], Any]):
    """Shared bookkeeping of the token- and sequence-level alignment envs (see :class:`TokenEnv`).

    Options (all keyword): ``task``, ``prompts`` / ``prompt_file`` / ``split`` ("train", "test", "all"),
    ``tokenizer``, ``max_prompt_tokens``, ``max_new_tokens``, ``min_new_tokens``, ``action_vocab``, ``scorer``,
    ``stop``, ``reward_shaping`` (token level: ``"delta"``), ``reference_model``, ``ref_logprob_coef``, ``device``,
    ``prompt_truncation`` ("left" warns, "error" raises), ``action_mask_in_info``, ``render_mode`` ("ansi").
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, task: str | Task = "Text", render_mode: str | None = None, **options: Any) -> None:
        unknown = set(options) - set(TaskRuntime.__init__.__code__.co_varnames) - VECTOR_ONLY_OPTIONS
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
        self.observation_space = spaces.Dict(
            {"input_ids": box, "attention_mask": spaces.Box(0, 1, shape=(rt.seq_len,), dtype=np.int64)}
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
        return float(total[0]), info

    def render(self) -> str | None:  # type: ignore[override]
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
        if rt.reference_spec is not None:
            lp = float(rt.reference.next_token_logprobs(self._ids[None], self._mask[None])[0, tok])
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
            s = float(rt.score([self._row], [text])[0][0])  # type: ignore[list-item]
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
