"""Multi-turn dialogue MDPs: :class:`DialogueTokenEnv` (one token per step) and :class:`DialogueSequenceEnv` (one turn).

The observation is the exact token history of the conversation: the assistant's sampled ids are appended as they
are (never decoded and re-encoded), the user's messages are encoded once and appended between role separators of a
small chat template. :class:`DialogueRuntime` resolves the options once (tokenizer, openings, simulator, scorers).
"""

from __future__ import annotations

import copy
import re
import warnings
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aligngym.envs.dialogue_runtime import CONTEXT_OVERFLOW, GOAL_SCORER, DialogueRuntime
from aligngym.envs.dialogue_tasks import DialogueTask, get_dialogue_task
from aligngym.envs.simulators import TurnContext
from aligngym.envs.tasks import normalize_prompt_rows


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
        request = self._close_turn()
        scored = None
        if request is not None:
            assert self._row is not None
            scored = self.runtime.score("turn", self._row, *request)
        return self._after_turn(scored)

    def _close_turn(self) -> tuple[str, str] | None:
        """Append the finished turn to the history; the ``(prompt, text)`` the turn scorer judges (or ``None``)."""
        rt = self.runtime
        turn_ids = list(self._turn_ids)
        text_ids = turn_ids[:-1] if (turn_ids and turn_ids[-1] == rt.eos_id) else turn_ids
        agent_text = rt.tokenizer.decode(text_ids)
        self._history = self._history + turn_ids
        self._turn_ids = []
        self._transcript.append({"role": "assistant", "text": agent_text, "ids": tuple(turn_ids)})
        if rt.scorer("turn") is None:
            return None
        last_user = self._transcript[-2]["text"]
        return rt.task.turn_prompt.format(user=last_user.strip(), opening=self._opening.strip()), agent_text

    def _after_turn(
        self, scored: tuple[float, dict[str, float]] | None, reply: list[int] | None = None
    ) -> tuple[float, bool, dict[str, Any]]:
        """Pay the turn score, get the user's reply and decide the episode (the vector env scores in batches)."""
        rt = self.runtime
        assert self._row is not None
        agent_text = self._transcript[-1]["text"]
        turn_ids = list(self._transcript[-1]["ids"])
        info: dict[str, Any] = {"turn_text": agent_text}
        reward = -rt.turn_penalty if rt.turn_penalty else 0.0
        turn_score = 0.0
        if scored is not None:
            turn_score, comps = scored
            info["turn_components"] = comps
            reward += turn_score
        self._turn_scores.append(turn_score)
        info["turn_score"] = turn_score
        # the user's answer (also after the last turn: a goal task decides there)
        ctx = TurnContext(agent_text, tuple(turn_ids), self._turn, self._row)
        sim = rt.simulator
        if reply is None:  # (the vector env passes replies it sampled for several rows at once)
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

    def _apply(self, action: Any) -> bool:
        raise NotImplementedError

    def _step_result(
        self, turn: tuple[float, bool, dict[str, Any]] | None
    ) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        reward, terminated, info = turn if turn is not None else (0.0, False, {})
        info.update(self._info())
        return self._obs(), float(reward), terminated, False, info

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
        return self._step_result(self._end_turn() if self._apply(action) else None)

    def _apply(self, action: Any) -> bool:
        """Validate and append one token; whether it ends the turn."""
        rt = self.runtime
        if isinstance(action, np.ndarray) and action.size == 1:
            action = action.reshape(()).item()
        if isinstance(action, bool | np.bool_) or not isinstance(action, int | np.integer):
            raise TypeError(f"action must be an integer in [0, {rt.n_actions}), got {action!r}")
        if not 0 <= int(action) < rt.n_actions:
            raise ValueError(f"action {int(action)} out of range for Discrete({rt.n_actions})")
        tok = rt.token_of(int(action))
        self._turn_ids.append(tok)
        return (rt.eos_id is not None and tok == rt.eos_id) or len(self._turn_ids) >= rt.max_turn_tokens


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
        self._apply(action)
        return self._step_result(self._end_turn())

    def _apply(self, action: Any) -> bool:
        """Validate a whole turn and set it as the turn in progress (it always ends the turn)."""
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
        return True


__all__ = [
    "CONTEXT_OVERFLOW",
    "GOAL_SCORER",
    "DialogueEnv",
    "DialogueRuntime",
    "DialogueSequenceEnv",
    "DialogueTask",
    "DialogueTokenEnv",
]
