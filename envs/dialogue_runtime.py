"""The resolved options of a dialogue env (:class:`DialogueRuntime`): tokenizer, openings, simulator, scorers.

Built once per env by :class:`~aligngym.envs.dialogue.DialogueEnv`; the chat template's separators are encoded here
once, so every conversation appends the same separator ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aligngym.envs.dialogue_tasks import DialogueTask
from aligngym.envs.scorers import BaseScorer, ScorerError, make_scorer
from aligngym.envs.simulators import make_simulator
from aligngym.envs.tasks import data_path, normalize_prompt_rows, read_jsonl
from aligngym.envs.tokenization import TextTokenizer, load_tokenizer

CONTEXT_OVERFLOW = ("end", "error", "truncate")
#: the scorer name that pays 1.0 when the simulator reports the goal reached, else 0.0
GOAL_SCORER = "goal"


def turn_progress(ids: Sequence[int] | np.ndarray, assistant_sep: Sequence[int]) -> tuple[int, int]:
    """Where a dialogue history stands: ``(assistant turns started, ids after the last assistant separator)``.

    Read from the ids alone (the separators are counted), so it is exact for histories whose assistant turns and
    user messages do not themselves contain the separator's ids, and a left-truncated history (context_overflow=
    ``"truncate"``) may count fewer turns than were played.

    :param ids: the attended ids of one observation, in order.
    :param assistant_sep: the env's ``runtime.assistant_sep``.
    """
    seq = np.asarray(ids).tolist()
    sep = list(assistant_sep)
    width, started, last = len(sep), 0, None
    for start in range(len(seq) - width + 1):
        if seq[start : start + width] == sep:
            started, last = started + 1, start + width
    return started, (len(seq) - last if last is not None else 0)


def split_dialogue_history(
    runtime: Any, ids: np.ndarray, mask: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Dialogue observations (B, L) split for the embedding observation: the history up to the last assistant
    separator, the assistant's turn in progress, and the Markov entries ``[tokens_left / max_turn_tokens,
    turns_left / max_turns]`` float32 (B, 2), clipped to [0, 1]. A final observation (the user answered after the
    last turn) is all history, with [0, 0]. Read from the separators (see :func:`turn_progress`).

    :param runtime: the env's :class:`DialogueRuntime`.
    :param ids: int (B, L) observations.
    :param mask: int (B, L) attention masks.
    """
    budget, turns = runtime.max_turn_tokens, runtime.max_turns
    prompts, completions, left = [], [], []
    for row, m in zip(ids, mask):
        history = row[m > 0]
        started, in_turn = turn_progress(history, runtime.assistant_sep)
        if in_turn and turn_progress(history[len(history) - in_turn :], runtime.user_sep)[0]:
            prompts.append(history)  # the conversation is over
            completions.append(history[:0])
            left.append([0.0, 0.0])
            continue
        cut = len(history) - in_turn
        prompts.append(history[:cut])
        completions.append(history[cut:])
        left.append([(budget - in_turn) / budget, (turns - max(started - 1, 0)) / turns])
    return prompts, completions, np.clip(np.asarray(left, dtype=np.float32), 0.0, 1.0)


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
        gold: Any = None,
    ) -> None:
        if gold is not None and gold is not False:
            raise ValueError(
                f"gold={gold!r}: the multi-turn tasks declare no gold scorer yet; pass gold=None or gold=False"
            )
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

    @property
    def max_new_tokens(self) -> int:
        """The token budget of one assistant turn (``max_turn_tokens``; the agents' per-step action masks span it)."""
        return self.max_turn_tokens

    def token_of(self, action: int) -> int:
        """Token id of an action index."""
        return int(self.action_ids[action]) if self.action_ids is not None else int(action)

    def tokens_of(self, actions: np.ndarray) -> np.ndarray:
        """Token ids (int64) of an array of action indices."""
        acts = np.asarray(actions, dtype=np.int64)
        return self.action_ids[acts] if self.action_ids is not None else acts

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
