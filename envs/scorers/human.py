"""Human-in-the-loop feedback on the terminal: a person rates completions or picks the better of two.

Judgements are appended to a preference JSONL (the ``preference_pairs.jsonl`` schema) that
:class:`aligngym.agents.reward_modeling.RewardModelTrainer` reads: collect feedback -> train a reward model -> RL.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from aligngym.envs.scorers.base import BaseScorer

MODES = ("rate", "choose")
#: defaults of the history and pair-writing bounds (see :class:`HumanFeedbackScorer`)
MAX_PROMPTS = 1000
MAX_RATINGS_PER_PROMPT = 32
MAX_PAIRS_PER_RATING = 8


class HumanFeedbackError(RuntimeError):
    """No valid answer from the person (input closed, or too many invalid answers)."""


class HumanFeedbackScorer(BaseScorer):
    """Ask a person to judge completions (for small interactive runs).

    :param mode: ``"rate"``: each completion gets a rating from ``low`` to ``high``; the score is the rating scaled
        to [0, 1]. ``"choose"``: completions of the same prompt are shown two at a time and the person types 1 or 2
        (or ``=`` for a tie); the chosen one scores 1, the other 0, a tie 0.5 each. A completion left without a
        partner (an odd one out, or a prompt that appears once in the batch) is rated instead.
    :param out_file: preference JSONL to append to (columns ``prompt``, ``chosen``, ``rejected``, ``category``,
        ``split``); ``None``: keep no record. In ``rate`` mode, a new rating is paired with each of the
        ``max_pairs_per_rating`` most recent earlier ratings of its prompt (this batch or an earlier one) that differ
        from it and are of another completion (oldest of those first); ties make none.
    :param low: lowest rating (``rate`` mode).
    :param high: highest rating.
    :param max_retries: invalid answers accepted per question before :class:`HumanFeedbackError`.
    :param stdin: stream to read answers from (default ``sys.stdin``).
    :param stdout: stream to write questions to (default ``sys.stdout``).
    :param split: the ``split`` written to the JSONL rows.
    :param max_prompts: prompts remembered in :attr:`history` (rate mode); past it the least recently rated prompt
        is forgotten (default 1000).
    :param max_ratings_per_prompt: ratings remembered per prompt; past it the oldest is forgotten (default 32).
    :param max_pairs_per_rating: a new rating is paired with at most this many recent ratings of its prompt
        (default 8), so the rows written grow linearly with the number of ratings.
    :param max_pairs_written: stop appending rows after this many (``None``: no limit); scoring goes on and
        :attr:`pairs_dropped` counts the rows not written.

    Memory is bounded by ``max_prompts * max_ratings_per_prompt`` remembered ratings whatever the run's length.
    """

    name = "human"

    def __init__(
        self,
        mode: str = "rate",
        out_file: str | Path | None = None,
        low: int = 1,
        high: int = 5,
        max_retries: int = 3,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        split: str = "train",
        max_prompts: int = MAX_PROMPTS,
        max_ratings_per_prompt: int = MAX_RATINGS_PER_PROMPT,
        max_pairs_per_rating: int = MAX_PAIRS_PER_RATING,
        max_pairs_written: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not (isinstance(low, int) and isinstance(high, int)) or high <= low:
            raise ValueError(f"ratings need integers low < high, got low={low!r}, high={high!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        for key, value in (
            ("max_prompts", max_prompts),
            ("max_ratings_per_prompt", max_ratings_per_prompt),
            ("max_pairs_per_rating", max_pairs_per_rating),
            ("max_pairs_written", max_pairs_written),
        ):
            if value is None and key == "max_pairs_written":
                continue
            least = 0 if key in ("max_pairs_per_rating", "max_pairs_written") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{key} must be an integer >= {least}, got {value!r}")
        self.mode = mode
        self.out_file = Path(out_file) if out_file is not None else None
        self.low, self.high = low, high
        self.max_retries = int(max_retries)
        self.stdin = stdin
        self.stdout = stdout
        self.split = split
        self.max_prompts = max_prompts
        self.max_ratings_per_prompt = max_ratings_per_prompt
        self.max_pairs_per_rating = max_pairs_per_rating
        self.max_pairs_written = max_pairs_written
        #: prompt -> [(completion, rating)] judged so far (rate mode, oldest first), to pair new ratings with
        #: earlier ones; least recently rated prompt first, bounded as documented above
        self.history: OrderedDict[str, list[tuple[str, int]]] = OrderedDict()
        self.pairs_written = 0
        self.pairs_dropped = 0

    # -- terminal I/O --------------------------------------------------------------------------------------------
    def _out(self) -> TextIO:
        return self.stdout if self.stdout is not None else sys.stdout

    def _in(self) -> TextIO:
        return self.stdin if self.stdin is not None else sys.stdin

    def _ask(self, question: str, valid: dict[str, Any]) -> Any:
        """Print ``question`` and read lines until one is a key of ``valid``; return its value."""
        out = self._out()
        for attempt in range(self.max_retries + 1):
            out.write(question)
            out.flush()
            line = self._in().readline()
            if line == "":
                raise HumanFeedbackError("input closed (EOF) while waiting for feedback")
            answer = line.strip().lower()
            if answer in valid:
                return valid[answer]
            tries_left = self.max_retries - attempt
            if tries_left:
                out.write(f"  {answer!r} is not one of {', '.join(valid)}; try again ({tries_left} left)\n")
        raise HumanFeedbackError(
            f"no valid answer after {self.max_retries + 1} tries; expected one of {', '.join(valid)}"
        )

    def _rate(self, prompt: str, completion: str) -> int:
        out = self._out()
        out.write(f"\n--- Prompt ---\n{prompt}\n--- Completion ---\n{completion}\n")
        valid = {str(r): r for r in range(self.low, self.high + 1)}
        return int(self._ask(f"Rate {self.low}-{self.high}: ", valid))

    def _choose(self, prompt: str, a: str, b: str) -> str:
        out = self._out()
        out.write(f"\n--- Prompt ---\n{prompt}\n--- 1 ---\n{a}\n--- 2 ---\n{b}\n")
        return str(self._ask("Which is better? [1/2/=]: ", {"1": "1", "2": "2", "=": "="}))

    # -- records ----------------------------------------------------------------------------------------------------
    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self.out_file is None or not rows:
            return
        if self.max_pairs_written is not None:
            room = max(self.max_pairs_written - self.pairs_written, 0)
            self.pairs_dropped += max(len(rows) - room, 0)
            rows = rows[:room]
            if not rows:
                return
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out_file, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.pairs_written += len(rows)

    def _pair(self, prompt: str, chosen: str, rejected: str, category: str) -> dict[str, Any]:
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "category": category,
            "split": self.split,
        }

    def _rated(self, prompt: str, completion: str, rating: int) -> list[dict[str, Any]]:
        """Remember a rating; the pair rows it makes with the recent earlier ratings of its prompt."""
        earlier = self.history.setdefault(prompt, [])
        self.history.move_to_end(prompt)
        while len(self.history) > self.max_prompts:
            self.history.popitem(last=False)
        partners = [(o, r) for o, r in earlier if r != rating and o != completion]
        partners = partners[-self.max_pairs_per_rating :] if self.max_pairs_per_rating else []
        rows = []
        for other, r in partners:
            better, worse = (completion, other) if rating > r else (other, completion)
            rows.append(self._pair(prompt, better, worse, "human_rating"))
        earlier.append((completion, rating))
        del earlier[: max(len(earlier) - self.max_ratings_per_prompt, 0)]
        return rows

    # -- scoring ----------------------------------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        n = len(completions)
        out = np.zeros(n, dtype=np.float32)
        todo_rate: list[int] = list(range(n))
        if self.mode == "choose":
            groups: dict[str, list[int]] = {}
            for i, p in enumerate(prompts):
                groups.setdefault(p, []).append(i)
            todo_rate = []
            for p, idx in groups.items():
                for k in range(0, len(idx) - 1, 2):
                    i, j = idx[k], idx[k + 1]
                    answer = self._choose(p, completions[i], completions[j])
                    if answer == "=":
                        out[i] = out[j] = 0.5
                        continue
                    win, lose = (i, j) if answer == "1" else (j, i)
                    out[win], out[lose] = 1.0, 0.0
                    self._write([self._pair(p, completions[win], completions[lose], "human_choice")])
                if len(idx) % 2:
                    todo_rate.append(idx[-1])
        for i in sorted(todo_rate):
            rating = self._rate(prompts[i], completions[i])
            out[i] = (rating - self.low) / (self.high - self.low)
            self._write(self._rated(prompts[i], completions[i], rating))
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # terminal streams do not pickle; a copy talks to its own process's stdin/stdout
        state["stdin"] = state["stdout"] = None
        return state
