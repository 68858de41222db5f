"""The resolved options of an env, :class:`TaskRuntime`: tokenizer, prompt rows and their ids, action map, scorer,
gold scorer and reference model. Single envs (:mod:`aligngym.envs.core`) and the native vector env
(:mod:`aligngym.envs.vector`) share it, so they encode, decode and score alike; :func:`runtime_of` finds it behind
any env, vector env or wrapper.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.envs.prompts import NOT_CONTEXT, load_prompt_rows, normalize_prompt_rows
from aligngym.envs.scorers import BaseScorer, ScorerError, make_scorer
from aligngym.envs.tasks import Task, get_task
from aligngym.envs.tokenization import TextTokenizer, load_tokenizer

#: options that only the native vector env uses; single envs accept and ignore them, because
#: ``gym.make_vec(..., vectorization_mode="sync")`` passes every kwarg to every single env.
VECTOR_ONLY_OPTIONS = frozenset({"autoreset_mode", "scorer_batch_size"})
#: above this many actions ``info["action_mask"]`` is left out unless asked for (``env.action_masks()`` always works)
MASK_IN_INFO_MAX_ACTIONS = 4096


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int, or a ValueError naming ``name`` when it is not a positive integer (bools refused)."""
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
        prompts: Any = None,
        prompt_file: str | Path | None = None,
        split: str = "train",
        tokenizer: Any = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        action_vocab: Sequence[str | int] | None = None,
        scorer: Any = None,
        gold: Any = None,
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
        self.max_prompt_tokens = positive_int(
            "max_prompt_tokens",
            max_prompt_tokens if max_prompt_tokens is not None else self.task.max_prompt_tokens,
        )
        self.max_new_tokens = positive_int(
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
        self.context_keys = sorted({k for r in self.rows for k in r} - NOT_CONTEXT)
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
        # gold: None -> the task's default gold; False -> none; else what scorer= takes (never part of the reward)
        if gold is True:
            raise ValueError(
                "gold=True is not a scorer: pass a scorer spec, None (task default) or False (none)"
            )
        self.gold_spec: Any = None if gold is False else (gold if gold is not None else self.task.gold)
        self._gold: BaseScorer | None = None
        if self.gold_spec is not None and not isinstance(self.gold_spec, str | dict):
            try:
                self._gold = make_scorer(self.gold_spec, device=device)
            except TypeError as err:
                raise TypeError(f"gold={self.gold_spec!r} is not a scorer spec: {err}") from err
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
        """The reward's scorer (built on first use from its spec)."""
        if self._scorer is None:
            self._scorer = make_scorer(self.scorer_spec, device=self.device)
        return self._scorer

    @property
    def has_gold(self) -> bool:
        """Whether episodes end with a gold score (``info["gold_score"]``)."""
        return self.gold_spec is not None

    @property
    def gold_scorer(self) -> BaseScorer | None:
        """The gold scorer (built on first use), or ``None`` without one."""
        if self._gold is None and self.gold_spec is not None:
            self._gold = make_scorer(self.gold_spec, device=self.device)
        return self._gold

    @staticmethod
    def _call(
        scorer: BaseScorer, rows: Sequence[dict[str, Any]], completions: Sequence[str]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        prompts = [r["prompt"] for r in rows]
        keys = sorted({k for r in rows for k in r} - NOT_CONTEXT)
        context = {k: [r.get(k) for r in rows] for k in keys}
        try:
            return scorer.score_with_components(prompts, completions, **context)
        except ScorerError:
            raise
        except Exception as err:
            raise ScorerError(f"scorer {scorer.name!r} raised {type(err).__name__}: {err}") from err

    def score(
        self, rows: Sequence[dict[str, Any]], completions: Sequence[str]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One scorer call for a batch: total (float32, (B,)) and components.

        :param rows: the prompt rows (``prompt`` + context columns).
        :param completions: the decoded completions.
        :raises ScorerError: naming the scorer when it raises or returns a bad value.
        """
        return self._call(self.scorer, rows, completions)

    def gold(
        self,
        rows: Sequence[dict[str, Any]],
        completions: Sequence[str],
        proxy: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """One gold-scorer call for a batch (float32 (B,) and components), or ``None`` without a gold scorer.

        :param rows: the prompt rows.
        :param completions: the decoded completions.
        :param proxy: the reward scorer's result for the same batch, reused when the gold spec is the same name.
        """
        if self.gold_spec is None:
            return None
        if proxy is not None and isinstance(self.gold_spec, str) and self.gold_spec == self.scorer_spec:
            return proxy
        scorer = self.gold_scorer
        assert scorer is not None
        return self._call(scorer, rows, completions)

    def warm_up(self) -> None:
        """Load everything the scorers load lazily (model weights, imports) by scoring one empty completion.

        Model-backed scorers load their weights on the first call, which can take seconds; a server calls this
        before it reports healthy so that its first request does not pay for it.
        """
        _ = self.reference
        if not self.rows:
            return
        rows, texts = self.rows[:1], [""]
        proxy = self.score(rows, texts)
        self.gold(rows, texts, proxy=proxy)

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
        if isinstance(self.gold_spec, str | dict):
            state["_gold"] = None
        if isinstance(self.reference_spec, str):
            state["_reference"] = None
        return state


#: the keyword options a :class:`TaskRuntime` takes (what ``gym.make`` passes through to it)
RUNTIME_OPTIONS = frozenset(inspect.signature(TaskRuntime.__init__).parameters) - {"self", "task"}


__all__ = [
    "MASK_IN_INFO_MAX_ACTIONS",
    "RUNTIME_OPTIONS",
    "VECTOR_ONLY_OPTIONS",
    "TaskRuntime",
    "positive_int",
    "runtime_of",
]
