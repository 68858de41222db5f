"""Multi-turn dialogue MDPs: :class:`DialogueTokenEnv` (one token per step) and :class:`DialogueSequenceEnv` (one turn).

The observation is the exact token history of the conversation: the assistant's sampled ids are appended as they
are (never decoded and re-encoded), the user's messages are encoded once and appended between role separators of a
small chat template. :class:`DialogueRuntime` resolves the options once (tokenizer, openings, simulator, scorers).
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aligngym.envs.dialogue_tasks import DialogueTask, get_dialogue_task
from aligngym.envs.scorers import BaseScorer, ScorerError, make_scorer
from aligngym.envs.simulators import TurnContext, make_simulator
from aligngym.envs.tasks import data_path, normalize_prompt_rows, read_jsonl
from aligngym.envs.tokenization import TextTokenizer, load_tokenizer

CONTEXT_OVERFLOW = ("end", "error", "truncate")
#: the scorer name that pays 1.0 when the simulator reports the goal reached, else 0.0
GOAL_SCORER = "goal"


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class DialogueRuntime:
    """Resolved options of a dialogue env (tokenizer, rows, simulator, scorers, action map, template ids)."""

    def __init__(
        self,
        task: DialogueTask,
        *,
        prompts: Sequence[Any] | None = None,
        prompt_file: str | None = None,
        split: str = "train",
        tokenizer: Any = None,
        simulator: Any = None,
        simulator_kwargs: dict[str, Any] | None = None,
        turn_scorer: Any = None,
        scorer: Any = None,
        max_turns: int | None = None,
        max_turn_tokens: int | None = None,
        max_context_tokens: int | None = None,
        action_vocab: Sequence[str | int] | str | None = None,
        chat_template: Sequence[str] | None = None,
        context_overflow: str = "end",
        turn_penalty: float = 0.0,
        difficulty: int | None = None,
        device: str = "auto",
    ) -> None:
        self.task = task
        self.tokenizer: TextTokenizer = load_tokenizer(tokenizer)
        tok = self.tokenizer
        self.vocab_size = tok.vocab_size
        self.eos_id = tok.eos_id
        self.device = device
        self.max_turns = _positive("max_turns", max_turns if max_turns is not None else task.max_turns)
        self.max_turn_tokens = _positive(
            "max_turn_tokens", max_turn_tokens if max_turn_tokens is not None else task.max_turn_tokens
        )
        self.seq_len = _positive(
            "max_context_tokens",
            max_context_tokens if max_context_tokens is not None else task.max_context_tokens,
        )
        if context_overflow not in CONTEXT_OVERFLOW:
            raise ValueError(f"context_overflow must be one of {CONTEXT_OVERFLOW}, got {context_overflow!r}")
        self.context_overflow = context_overflow
        self.turn_penalty = float(turn_penalty)
        template = tuple(chat_template) if chat_template is not None else task.chat_template
        if len(template) != 2 or not all(isinstance(s, str) and s for s in template):
            raise ValueError(
                f"chat_template must be two non-empty strings (user, assistant), got {template!r}"
            )
        self.chat_template = template
        self.user_sep = list(tok.encode(template[0]))
        self.assistant_sep = list(tok.encode(template[1]))
        if len(self.user_sep) + len(self.assistant_sep) + self.max_turn_tokens >= self.seq_len:
            raise ValueError(
                f"max_context_tokens={self.seq_len} leaves no room for an opening: the separators take "
                f"{len(self.user_sep) + len(self.assistant_sep)} tokens and a turn up to {self.max_turn_tokens}"
            )

        # actions
        vocab = action_vocab if action_vocab is not None else task.action_vocab
        if isinstance(vocab, str) and vocab == "all":
            vocab = None  # the whole vocabulary, overriding a task's restricted default
        if vocab is None:
            self.action_ids: np.ndarray | None = None
            self.n_actions = self.vocab_size
        else:
            ids = [self._vocab_id(v) for v in vocab]
            if not ids or len(set(ids)) != len(ids):
                raise ValueError(f"action_vocab must be non-empty with distinct token ids, got {ids}")
            self.action_ids = np.asarray(ids, dtype=np.int64)
            self.n_actions = len(ids)
        tokens = self.action_ids if self.action_ids is not None else np.arange(self.n_actions)
        blocked = [t for t in tok.special_ids if t != self.eos_id]
        self._base_mask = ~np.isin(tokens, blocked)
        self._eos_action = (
            np.flatnonzero(tokens == self.eos_id) if self.eos_id is not None else np.zeros(0, int)
        )
        if not self._base_mask.any():
            raise ValueError("every action is a special token; give action_vocab some real tokens")
        if self._base_mask.sum() == self._eos_action.size:
            raise ValueError("action_vocab holds only the end-of-turn token; a turn needs at least one other")

        # simulator
        sim_kwargs = dict(task.simulator_kwargs)
        sim_kwargs.update(simulator_kwargs or {})
        if difficulty is not None:
            sim_kwargs["difficulty"] = difficulty
        sim_spec = simulator if simulator is not None else task.simulator
        if not isinstance(sim_spec, str) and sim_kwargs:
            sim_kwargs = {}  # options of the task's named simulator do not apply to a user object
        self.simulator = make_simulator(sim_spec, **sim_kwargs)
        if callable(getattr(self.simulator, "bind", None)):
            self.simulator.bind(tok)
        self.sim_wants_context = bool(getattr(self.simulator, "wants_context", False))

        # openings
        if prompts is not None and prompt_file is not None:
            raise ValueError("pass prompts= or prompt_file=, not both")
        if prompts is not None:
            rows = normalize_prompt_rows(prompts)
        else:
            source = prompt_file or task.prompt_file
            if source is not None:
                rows = read_jsonl(prompt_file if prompt_file is not None else data_path(source))
                if split != "all":
                    rows = [r for r in rows if r.get("split", split) == split]
                if not rows:
                    raise ValueError(f"opening file {source!r} has no rows for split {split!r}")
            elif callable(getattr(self.simulator, "default_rows", None)):
                rows = self.simulator.default_rows()
            else:
                raise ValueError(f"task {task.name!r} has no openings: pass prompts=[...] or prompt_file=")
            rows = normalize_prompt_rows(rows, source=str(source or "simulator"))
        self.rows = rows
        #: no fixed prompt slot: the history grows from position 0 (single-turn code reads None as "pool all L")
        self.max_prompt_tokens: int | None = None
        self.context_keys = sorted({k for r in rows for k in r} - {"prompt", "split"})

        # scorers (lazy; user objects validated now)
        self.turn_scorer_spec = turn_scorer if turn_scorer is not None else task.turn_scorer
        self.scorer_spec = scorer if scorer is not None else task.scorer
        if self.turn_scorer_spec is None and self.scorer_spec is None:
            raise ValueError(f"task {task.name!r} needs turn_scorer= or scorer= (a name, dict or callable)")
        self._scorers: dict[str, BaseScorer] = {}
        for key, spec in (("turn", self.turn_scorer_spec), ("episode", self.scorer_spec)):
            if spec is not None and not isinstance(spec, str | dict):
                self._scorers[key] = make_scorer(spec, device=device)

    def _vocab_id(self, entry: str | int) -> int:
        if isinstance(entry, bool) or not isinstance(entry, str | int | np.integer):
            raise TypeError(f"action_vocab entries must be token strings or ids, got {entry!r}")
        if isinstance(entry, str):
            return self.tokenizer.single_token_id(entry)
        if not 0 <= int(entry) < self.vocab_size:
            raise ValueError(f"action_vocab id {entry} out of range for vocabulary size {self.vocab_size}")
        return int(entry)

    def token_of(self, action: int) -> int:
        """Token id of an action index."""
        return int(self.action_ids[action]) if self.action_ids is not None else int(action)

    def action_mask(self, turn_len: int) -> np.ndarray:
        """Valid actions (bool, (n_actions,)): special tokens off; the end-of-turn token off as a turn's first."""
        mask = self._base_mask.copy()
        if turn_len == 0 and self._eos_action.size:
            mask[self._eos_action] = False
        return mask

    def scorer(self, which: str) -> BaseScorer | None:
        spec = self.turn_scorer_spec if which == "turn" else self.scorer_spec
        if spec is None or spec == GOAL_SCORER:
            return None
        if which not in self._scorers:
            self._scorers[which] = make_scorer(spec, device=self.device)
        return self._scorers[which]

    def score(
        self, which: str, row: dict[str, Any], prompt: str, completion: str
    ) -> tuple[float, dict[str, float]]:
        """One scorer call: the ``which`` ("turn"/"episode") scorer on ``(prompt, completion)`` with row context."""
        scorer = self.scorer(which)
        assert scorer is not None
        context = {k: [v] for k, v in row.items() if k not in ("prompt", "split")}
        try:
            total, comps = scorer.score_with_components([prompt], [completion], **context)
        except ScorerError:
            raise
        except Exception as err:
            raise ScorerError(f"scorer {scorer.name!r} raised {type(err).__name__}: {err}") from err
        return float(total[0]), {k: float(v[0]) for k, v in comps.items()}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_scorers"] = {
            k: v
            for k, v in self._scorers.items()
            if not isinstance(self.turn_scorer_spec if k == "turn" else self.scorer_spec, str | dict)
        }
        return state


class DialogueEnv(gym.Env[dict[str, np.ndarray], Any]):
    """Shared bookkeeping of the dialogue envs (see :class:`DialogueTokenEnv` for the MDP).

    Options (keyword): ``task`` (a :class:`DialogueTask` or a registered name), ``prompts`` / ``prompt_file`` /
    ``split``, ``tokenizer``, ``simulator`` (name or object with ``reply``), ``simulator_kwargs``, ``difficulty``,
    ``turn_scorer``, ``scorer``, ``max_turns``, ``max_turn_tokens`` (alias ``max_new_tokens``), ``max_context_tokens``, ``action_vocab`` (``"all"``: every token),
    ``chat_template``, ``context_overflow`` ("end", "error", "truncate"), ``turn_penalty``, ``device``,
    ``render_mode`` ("ansi").
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self, task: str | DialogueTask = "Dialogue", render_mode: str | None = None, **options: Any
    ) -> None:
        options.pop("autoreset_mode", None)  # vector-only options (make_vec sync mode passes every kwarg)
        options.pop("scorer_batch_size", None)
        if "max_new_tokens" in options:  # the single-turn name of the per-turn budget
            if options.get("max_turn_tokens") is not None:
                raise TypeError("pass max_turn_tokens= or its alias max_new_tokens=, not both")
            options["max_turn_tokens"] = options.pop("max_new_tokens")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.runtime = DialogueRuntime(get_dialogue_task(task), **options)
        rt = self.runtime
        self.observation_space = spaces.Dict(  # type: ignore[assignment]
            {
                "input_ids": spaces.Box(0, rt.vocab_size - 1, shape=(rt.seq_len,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, shape=(rt.seq_len,), dtype=np.int64),
            }
        )
        self._row: dict[str, Any] | None = None
        self._done = True
        self._history: list[int] = []
        self._turn_ids: list[int] = []
        self._transcript: list[dict[str, Any]] = []
        self._turn_scores: list[float] = []
        self._turn = 0

    # -- episode start ---------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a conversation: the user's opening (drawn with ``np_random``) then the assistant separator.

        ``options={"prompt_index": i}`` picks opening i; ``options={"prompt": "text" or {...}}`` uses your own.
        """
        super().reset(seed=seed)
        rt = self.runtime
        options = options or {}
        index: Any
        if "prompt" in options:
            [row] = normalize_prompt_rows([options["prompt"]], source="options['prompt']")
            index = -1
        else:
            index = options.get("prompt_index", None)
            if index is None:
                index = int(self.np_random.integers(len(rt.rows)))
            elif (
                isinstance(index, bool)
                or not isinstance(index, int | np.integer)
                or not 0 <= index < len(rt.rows)
            ):
                raise ValueError(f"prompt_index {index!r} out of range for {len(rt.rows)} openings")
            row = rt.rows[int(index)]
        self._row, self._prompt_index = dict(row), int(index)
        opening = None
        if callable(getattr(rt.simulator, "reset", None)):
            opening = rt.simulator.reset(self._row, self.np_random)
        if opening is None:
            opening = self._row["prompt"]
            match = (
                re.fullmatch(rt.task.opening_regex, opening, flags=re.S) if rt.task.opening_regex else None
            )
            if match:
                opening = match.group(1)
        opening_ids = list(rt.tokenizer.encode(opening))
        room = rt.seq_len - len(rt.user_sep) - len(rt.assistant_sep) - rt.max_turn_tokens
        if len(opening_ids) > room and rt.context_overflow != "truncate":
            if rt.context_overflow == "error" or room <= 0:
                raise ValueError(
                    f"the opening takes {len(opening_ids)} tokens, separators {len(rt.user_sep) + len(rt.assistant_sep)} "
                    f"and a turn up to {rt.max_turn_tokens}: more than max_context_tokens={rt.seq_len}"
                )
            warnings.warn(
                f"opening of {len(opening_ids)} tokens left-truncated to {room} (max_context_tokens={rt.seq_len})",
                stacklevel=2,
            )
            opening_ids = opening_ids[-room:]
            opening = rt.tokenizer.decode(opening_ids)
        self._history = rt.user_sep + opening_ids + rt.assistant_sep
        self._opening = opening
        self._transcript = [{"role": "user", "text": opening, "ids": tuple(opening_ids)}]
        self._turn_ids, self._turn_scores, self._turn = [], [], 0
        self._done = False
        self._finish_reason: str | None = None
        return self._obs(), self._info()

    def _obs(self) -> dict[str, np.ndarray]:
        rt = self.runtime
        visible = self._history + self._turn_ids
        if len(visible) > rt.seq_len:  # only reachable with context_overflow="truncate"
            visible = visible[-rt.seq_len :]
        ids = np.full(rt.seq_len, rt.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros(rt.seq_len, dtype=np.int64)
        ids[: len(visible)] = visible
        mask[: len(visible)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def _info(self) -> dict[str, Any]:
        return {"turn": self._turn, "action_mask": self.runtime.action_mask(len(self._turn_ids))}

    def action_masks(self) -> np.ndarray:
        """Valid actions now (bool); read by sb3-contrib ``MaskablePPO``."""
        return self.runtime.action_mask(len(self._turn_ids))

    def _check_running(self) -> None:
        if self._row is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has ended (terminated=True); call reset() before stepping again")

    # -- the end of an assistant turn ------------------------------------------------------------------------------
    def _end_turn(self) -> tuple[float, bool, dict[str, Any]]:
        """Score the turn, let the user answer, decide whether the conversation goes on."""
        rt = self.runtime
        assert self._row is not None
        turn_ids = list(self._turn_ids)
        text_ids = turn_ids[:-1] if (turn_ids and turn_ids[-1] == rt.eos_id) else turn_ids
        agent_text = rt.tokenizer.decode(text_ids)
        self._history = self._history + turn_ids
        self._turn_ids = []
        self._transcript.append({"role": "assistant", "text": agent_text, "ids": tuple(turn_ids)})
        last_user = self._transcript[-2]["text"]
        info: dict[str, Any] = {"turn_text": agent_text}
        reward = -rt.turn_penalty if rt.turn_penalty else 0.0
        turn_score = 0.0
        if rt.scorer("turn") is not None:
            prompt = rt.task.turn_prompt.format(user=last_user.strip(), opening=self._opening.strip())
            turn_score, comps = rt.score("turn", self._row, prompt, agent_text)
            info["turn_components"] = comps
            reward += turn_score
        self._turn_scores.append(turn_score)
        info["turn_score"] = turn_score
        # the user's answer (also after the last turn: a goal task decides there)
        ctx = TurnContext(agent_text, tuple(turn_ids), self._turn, self._row)
        sim = rt.simulator
        reply = (
            sim.reply(list(self._history), self.np_random, context=ctx)
            if rt.sim_wants_context
            else sim.reply(list(self._history), self.np_random)
        )
        reply = [int(t) for t in reply]
        if any(not 0 <= t < rt.vocab_size for t in reply):
            raise ValueError(f"simulator returned ids outside [0, {rt.vocab_size}): {reply}")
        outcome = getattr(sim, "outcome", None)
        self._turn += 1
        finish = None
        if outcome is not None:
            finish = str(outcome)
        elif self._turn >= rt.max_turns:
            finish = "max_turns"
        appended = rt.user_sep + reply + ([] if finish else rt.assistant_sep)
        fits = len(self._history) + len(appended) + (0 if finish else rt.max_turn_tokens) <= rt.seq_len
        if fits or rt.context_overflow == "truncate":
            self._history = self._history + appended
            self._transcript.append({"role": "user", "text": rt.tokenizer.decode(reply), "ids": tuple(reply)})
        elif rt.context_overflow == "error":
            raise ValueError(
                f"the conversation needs {len(self._history) + len(appended)} tokens (+{rt.max_turn_tokens} for the "
                f"next turn) but max_context_tokens={rt.seq_len}: raise it, lower max_turns, or pass "
                "context_overflow='end' / 'truncate'"
            )
        elif finish is None:
            finish = "context"
        if finish is not None:
            r_end, end_info = self._finish(finish)
            reward += r_end
            info.update(end_info)
        return reward, finish is not None, info

    def _finish(self, finish_reason: str) -> tuple[float, dict[str, Any]]:
        rt = self.runtime
        assert self._row is not None
        self._done = True
        self._finish_reason = finish_reason
        agent_text = "\n".join(t["text"] for t in self._transcript if t["role"] == "assistant")
        reward, comps = 0.0, {}
        if rt.scorer_spec == GOAL_SCORER:
            score = 1.0 if finish_reason == "success" else 0.0
            reward, comps = score, {GOAL_SCORER: score}
        elif rt.scorer_spec is not None:
            score, comps = rt.score("episode", self._row, self._opening, agent_text)
            reward = score
        else:
            score = float(np.mean(self._turn_scores)) if self._turn_scores else 0.0
        info = {
            "prompt": self._opening,
            "prompt_index": self._prompt_index,
            "completion": agent_text,
            "score": float(score),
            "reward_components": comps,
            "turn_scores": tuple(self._turn_scores),
            "transcript": copy.deepcopy(self._transcript),
            "finish_reason": finish_reason,
            "success": finish_reason == "success",
        }
        return reward, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        lines = [f"{t['role'].capitalize()}: {t['text'].strip()}" for t in self._transcript]
        if self._turn_ids:
            lines.append("Assistant: " + self.runtime.tokenizer.decode(self._turn_ids).strip() + " ...")
        return "\n".join(lines)

    def close(self) -> None:
        self._row = None
        self._done = True


class DialogueTokenEnv(DialogueEnv):
    """Multi-turn dialogue, one token per step: the assistant's turns are written token by token.

    ## Description
    A user (a simulator) opens the conversation; the agent answers one token at a time. A turn ends at the
    end-of-turn token (the tokenizer's EOS) or after ``max_turn_tokens``; then the turn scorer judges it, the user
    replies (encoded once) and the next turn starts, until ``max_turns`` or a goal is decided.

    ## Action Space
    ``Discrete(V)`` or ``Discrete(k)`` with ``action_vocab``. ``info["action_mask"]`` / ``action_masks()``: special
    tokens off, the end-of-turn token off as the first token of a turn.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))``, L = ``max_context_tokens``:
    the token history from position 0, then padding. The history is ``user_sep + opening + assistant_sep + turn_1 +
    user_sep + reply_1 + assistant_sep + turn_2 ...`` where each turn is the agent's ids exactly as sampled (its
    end-of-turn token included) and each reply is the simulator's ids. ``context_overflow``: ``"end"`` (default)
    ends the episode with ``finish_reason="context"`` when the next reply and a full turn would not fit, ``"error"``
    raises instead, ``"truncate"`` keeps the whole history but shows its last L tokens (left truncation).

    ## Rewards
    At each turn end: the turn score (``turn_scorer``) minus ``turn_penalty``; at the episode end also the episode
    score (``scorer``; ``"goal"`` pays 1.0 when the simulator reports success). 0 on other steps.

    ## Starting State
    An opening drawn uniformly with ``np_random`` (or ``options={"prompt_index": i}`` / ``{"prompt": ...}``).

    ## Episode End
    terminated=True when the goal is decided (``finish_reason`` ``"success"``/``"failure"``), after ``max_turns``
    (``"max_turns"``) or when the context is full (``"context"``). Every step's ``info`` has ``turn`` (completed
    assistant turns) and ``action_mask``; a turn end adds ``turn_score`` and ``turn_text``; the final ``info``
    adds ``transcript`` (``[{"role", "text", "ids"}]``), ``turn_scores``, ``score``, ``reward_components``,
    ``finish_reason``, ``success``, ``prompt`` and ``completion`` (the assistant's turns joined by newlines).

    ## Arguments
    See :class:`DialogueEnv`; ``gym.make("aligngym/Guess-Token-v0", difficulty=2)``.

    ## Version History
    * v0: initial release.
    """

    def __init__(
        self, task: str | DialogueTask = "Dialogue", render_mode: str | None = None, **options: Any
    ) -> None:
        super().__init__(task, render_mode=render_mode, **options)
        self.action_space = spaces.Discrete(self.runtime.n_actions)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        self._check_running()
        rt = self.runtime
        if isinstance(action, np.ndarray) and action.size == 1:
            action = action.reshape(()).item()
        if isinstance(action, bool | np.bool_) or not isinstance(action, int | np.integer):
            raise TypeError(f"action must be an integer in [0, {rt.n_actions}), got {action!r}")
        if not 0 <= int(action) < rt.n_actions:
            raise ValueError(f"action {int(action)} out of range for Discrete({rt.n_actions})")
        tok = rt.token_of(int(action))
        self._turn_ids.append(tok)
        reward, terminated = 0.0, False
        info: dict[str, Any] = {}
        if (rt.eos_id is not None and tok == rt.eos_id) or len(self._turn_ids) >= rt.max_turn_tokens:
            reward, terminated, info = self._end_turn()
        info.update(self._info())
        return self._obs(), float(reward), terminated, False, info


class DialogueSequenceEnv(DialogueEnv):
    """Multi-turn dialogue, one whole assistant turn per step.

    ## Description
    As :class:`DialogueTokenEnv`, but each action is a whole turn of ``max_turn_tokens`` token indices.

    ## Action Space
    ``MultiDiscrete([V] * max_turn_tokens)`` (or ``[k] * ...``); the turn is cut after its first end-of-turn token
    (kept in the history, as in the token env); the tokens after it are ignored.

    ## Observation Space
    As :class:`DialogueTokenEnv`.

    ## Rewards
    The turn score minus ``turn_penalty`` every step, plus the episode score at the end.

    ## Starting State
    As :class:`DialogueTokenEnv`.

    ## Episode End
    As :class:`DialogueTokenEnv` (one step per turn).

    ## Arguments
    See :class:`DialogueEnv`.

    ## Version History
    * v0: initial release.
    """

    def __init__(
        self, task: str | DialogueTask = "Dialogue", render_mode: str | None = None, **options: Any
    ) -> None:
        super().__init__(task, render_mode=render_mode, **options)
        rt = self.runtime
        self.action_space = spaces.MultiDiscrete(np.full(rt.max_turn_tokens, rt.n_actions, dtype=np.int64))

    def action_masks(self) -> np.ndarray:
        rt = self.runtime
        return np.concatenate([rt.action_mask(t) for t in range(rt.max_turn_tokens)])

    def _info(self) -> dict[str, Any]:
        return {"turn": self._turn, "action_mask": self.action_masks()}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        self._check_running()
        rt = self.runtime
        arr = np.asarray(action)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"a turn must be integer token indices, got dtype {arr.dtype}")
        if arr.shape != (rt.max_turn_tokens,):
            raise ValueError(
                f"a turn must have shape ({rt.max_turn_tokens},) (max_turn_tokens), got {arr.shape}"
            )
        bad = (arr < 0) | (arr >= rt.n_actions)
        if bad.any():
            raise ValueError(
                f"turn has indices {arr[bad].tolist()} out of range for Discrete({rt.n_actions})"
            )
        tokens = [rt.token_of(int(a)) for a in arr]
        if rt.eos_id is not None and rt.eos_id in tokens:
            tokens = tokens[: tokens.index(rt.eos_id) + 1]
        self._turn_ids = tokens
        reward, terminated, info = self._end_turn()
        info.update(self._info())
        return self._obs(), float(reward), terminated, False, info


__all__ = [
    "CONTEXT_OVERFLOW",
    "GOAL_SCORER",
    "DialogueEnv",
    "DialogueRuntime",
    "DialogueSequenceEnv",
    "DialogueTask",
    "DialogueTokenEnv",
]
