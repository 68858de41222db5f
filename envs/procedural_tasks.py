"""Procedural verifiable task families: instance generators with difficulty levels, and their exact checkers.

A family turns ``(level, rng)`` into an instance (a prompt, its canonical answer and any rule parameters) and checks
a completion against it; :mod:`aligngym.envs.procedural` makes envs of them. Which split an instance belongs to is a
function of its prompt text alone (a SHA-256 hash), so train and test instances are disjoint at every level.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aligngym.envs.scorers import BaseScorer

#: single-token words (leading space) of the shipped tokenizer, in the order levels add them
COLOURS = ("red", "green", "blue", "yellow", "black", "white", "pink", "brown")
DIGITS = tuple(str(d) for d in range(10))
#: one instance in this many goes to the test split (by the hash of its prompt)
TEST_FRACTION_DENOMINATOR = 5
#: hashed before the prompt; chosen (the first of 0..39 tried) so that every level 1 and 2 of every family has both
#: splits, with at least 1 in 6 instances held out
SPLIT_SALT = "aligngym-split-21:"
MAX_LEVEL = 5


def instance_split(prompt: str) -> str:
    """``"test"`` for about one prompt in five, ``"train"`` for the rest: a function of the prompt text only."""
    h = int.from_bytes(hashlib.sha256((SPLIT_SALT + prompt).encode("utf-8")).digest()[:8], "big")
    return "test" if h % TEST_FRACTION_DENOMINATOR == 0 else "train"


@dataclass(frozen=True)
class Instance:
    """One task instance: what the env shows, the canonical answer, and the rule parameters the checker needs.

    :param prompt: the prompt text.
    :param answer: the canonical right completion (the words or digits, space-separated words, digits joined).
    :param rule: extra checker parameters (JSON-serialisable), ``{}`` when the answer alone decides.
    """

    prompt: str
    answer: str
    rule: dict[str, Any]


def _words(text: str) -> list[str]:
    return text.split()


class Family:
    """A task family: levels 1..:data:`MAX_LEVEL`, an instance generator and an exact checker.

    Subclasses set ``name``, ``title`` (CamelCase, used in env ids), ``description``, ``max_prompt_tokens`` and
    implement :meth:`params`, :meth:`actions`, :meth:`horizon`, :meth:`enumerate` / :meth:`sample` and
    :meth:`render`. The default checker is an exact match of whitespace-collapsed text; :meth:`partial` gives
    positional credit per unit (words, or characters for digit answers) and is 1.0 only for a right answer.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    max_prompt_tokens: ClassVar[int] = 16
    #: the unit of partial credit: "word" (space-separated words) or "char" (digits written without spaces)
    unit: ClassVar[str] = "word"

    def params(self, level: int) -> dict[str, Any]:
        """The level's size parameters (shown in the README table)."""
        raise NotImplementedError

    def actions(self, level: int) -> tuple[str, ...]:
        """Single-token strings an agent needs at this level (without EOS); each level's set contains the last's."""
        raise NotImplementedError

    def horizon(self, level: int) -> int:
        """Tokens the longest right answer at this level needs, plus one for EOS."""
        raise NotImplementedError

    def enumerate(self, level: int) -> Iterator[tuple[Any, ...]] | None:
        """Every instance key of the level when the space is small (<= a few thousand), else ``None``."""
        return None

    def sample(self, level: int, rng: np.random.Generator) -> tuple[Any, ...]:
        """One instance key drawn with ``rng``."""
        raise NotImplementedError

    def render(self, key: tuple[Any, ...]) -> Instance:
        """The instance of a key."""
        raise NotImplementedError

    def demonstration(self, answer: str) -> str:
        """``answer`` as the policy writes it after the prompt with this family's action tokens: word answers with a
        leading space (`` red green``), digit answers as they are (``123``, one token per digit)."""
        return answer if self.unit == "char" else " " + answer

    # -- checking -----------------------------------------------------------------------------------------------
    def check(self, completion: str, answer: str, rule: dict[str, Any]) -> bool:
        """Whether ``completion`` is a right answer (exact, after collapsing whitespace)."""
        return " ".join(completion.split()) == answer

    def partial(self, completion: str, answer: str, rule: dict[str, Any]) -> float:
        """Positional credit in [0, 1]: right units in the right place / max(len(got), len(want))."""
        if self.check(completion, answer, rule):
            return 1.0
        if self.unit == "char":
            got, want = list("".join(completion.split())), list(answer)
        else:
            got, want = _words(completion), _words(answer)
        denom = max(len(got), len(want))
        if denom == 0:
            return 1.0
        return min(sum(g == w for g, w in zip(got, want)) / denom, 0.99)

    def _check_level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 1 <= level <= MAX_LEVEL:
            raise ValueError(
                f"difficulty must be an integer in [1, {MAX_LEVEL}] for {self.name!r}, got {level!r}"
            )
        return int(level)


class _WordList(Family):
    """Copy / reverse a short list of colour words."""

    #: level -> (min length, max length, alphabet size)
    LEVELS: ClassVar[dict[int, tuple[int, int, int]]] = {
        1: (1, 2, 3),
        2: (2, 3, 4),
        3: (3, 4, 5),
        4: (4, 5, 6),
        5: (5, 6, 8),
    }
    verb: ClassVar[str] = ""

    def params(self, level: int) -> dict[str, Any]:
        lo, hi, k = self.LEVELS[self._check_level(level)]
        return {"length": f"{lo}-{hi}", "words": k}

    def actions(self, level: int) -> tuple[str, ...]:
        return tuple(" " + w for w in COLOURS[: self.LEVELS[self._check_level(level)][2]])

    def horizon(self, level: int) -> int:
        return self.LEVELS[self._check_level(level)][1] + 1

    def enumerate(self, level: int) -> Iterator[tuple[Any, ...]] | None:
        lo, hi, k = self.LEVELS[self._check_level(level)]
        if sum(k**n for n in range(lo, hi + 1)) > 4096:
            return None
        return (tuple(ws) for n in range(lo, hi + 1) for ws in itertools.product(range(k), repeat=n))

    def sample(self, level: int, rng: np.random.Generator) -> tuple[Any, ...]:
        lo, hi, k = self.LEVELS[self._check_level(level)]
        n = int(rng.integers(lo, hi + 1))
        return tuple(int(x) for x in rng.integers(0, k, size=n))

    def transform(self, words: list[str]) -> list[str]:
        raise NotImplementedError

    def render(self, key: tuple[Any, ...]) -> Instance:
        words = [COLOURS[i] for i in key]
        return Instance(f"{self.verb}: {' '.join(words)}.", " ".join(self.transform(words)), {})


class CopyFamily(_WordList):
    name = "copy"
    title = "Copy"
    verb = "Copy"
    description = "repeat a list of colour words (1-6 words from 3-8); exact match"

    def transform(self, words: list[str]) -> list[str]:
        return words


class ReverseFamily(_WordList):
    name = "reverse"
    title = "Reverse"
    verb = "Reverse"
    description = "say a list of colour words backwards (1-6 words from 3-8); exact match"

    def transform(self, words: list[str]) -> list[str]:
        return words[::-1]


class SortFamily(_WordList):
    """Sort digits ascending, written without spaces (``Sort: 3 1 2.`` -> ``123``)."""

    name = "sort"
    title = "Sort"
    description = "sort 1-6 digits ascending, answer as digits (e.g. 'Sort: 3 1 2.' -> '123'); exact match"
    unit = "char"
    LEVELS: ClassVar[dict[int, tuple[int, int, int]]] = {
        1: (1, 2, 3),
        2: (2, 3, 5),
        3: (3, 4, 6),
        4: (4, 5, 8),
        5: (5, 6, 10),
    }

    def params(self, level: int) -> dict[str, Any]:
        lo, hi, k = self.LEVELS[self._check_level(level)]
        return {"length": f"{lo}-{hi}", "digits": f"0-{k - 1}"}

    def actions(self, level: int) -> tuple[str, ...]:
        return DIGITS[: self.LEVELS[self._check_level(level)][2]]

    def render(self, key: tuple[Any, ...]) -> Instance:
        return Instance(f"Sort: {' '.join(map(str, key))}.", "".join(map(str, sorted(key))), {})


class CountFamily(Family):
    """Count how often a colour word occurs in a list (``Count red: red blue red.`` -> ``2``)."""

    name = "count"
    title = "Count"
    description = "count one colour word in a list of 1-9 words; answer one digit; exact match"
    unit = "char"
    #: level -> (min length, max length, alphabet size)
    LEVELS: ClassVar[dict[int, tuple[int, int, int]]] = {
        1: (1, 2, 2),
        2: (2, 4, 3),
        3: (3, 6, 4),
        4: (4, 8, 5),
        5: (6, 9, 6),
    }

    def params(self, level: int) -> dict[str, Any]:
        lo, hi, k = self.LEVELS[self._check_level(level)]
        return {"length": f"{lo}-{hi}", "words": k}

    def actions(self, level: int) -> tuple[str, ...]:
        return DIGITS[: self.LEVELS[self._check_level(level)][1] + 1]

    def horizon(self, level: int) -> int:
        self._check_level(level)
        return 2

    def enumerate(self, level: int) -> Iterator[tuple[Any, ...]] | None:
        lo, hi, k = self.LEVELS[self._check_level(level)]
        if k * sum(k**n for n in range(lo, hi + 1)) > 4096:
            return None
        return (
            (q, *ws)
            for q in range(k)
            for n in range(lo, hi + 1)
            for ws in itertools.product(range(k), repeat=n)
        )

    def sample(self, level: int, rng: np.random.Generator) -> tuple[Any, ...]:
        lo, hi, k = self.LEVELS[self._check_level(level)]
        n = int(rng.integers(lo, hi + 1))
        return (int(rng.integers(k)), *(int(x) for x in rng.integers(0, k, size=n)))

    def render(self, key: tuple[Any, ...]) -> Instance:
        q, *ws = key
        words = [COLOURS[i] for i in ws]
        return Instance(f"Count {COLOURS[q]}: {' '.join(words)}.", str(sum(i == q for i in ws)), {})


class CompareFamily(Family):
    """Say the larger of two different numbers (``Larger: 3 or 7?`` -> ``7``)."""

    name = "compare"
    title = "Compare"
    description = "say the larger of two numbers (0-3 up to 0-9999), written as digits; exact match"
    unit = "char"
    LEVELS: ClassVar[dict[int, int]] = {1: 4, 2: 10, 3: 100, 4: 1000, 5: 10000}  # numbers in [0, n)

    def params(self, level: int) -> dict[str, Any]:
        return {"numbers": f"0-{self.LEVELS[self._check_level(level)] - 1}"}

    def actions(self, level: int) -> tuple[str, ...]:
        return DIGITS[: min(10, self.LEVELS[self._check_level(level)])]

    def horizon(self, level: int) -> int:
        return len(str(self.LEVELS[self._check_level(level)] - 1)) + 1

    def enumerate(self, level: int) -> Iterator[tuple[Any, ...]] | None:
        n = self.LEVELS[self._check_level(level)]
        if n > 64:
            return None
        return ((a, b) for a in range(n) for b in range(n) if a != b)

    def sample(self, level: int, rng: np.random.Generator) -> tuple[Any, ...]:
        n = self.LEVELS[self._check_level(level)]
        a, b = (int(x) for x in rng.choice(n, size=2, replace=False))
        return (a, b)

    def render(self, key: tuple[Any, ...]) -> Instance:
        a, b = key
        return Instance(f"Larger: {a} or {b}?", str(max(a, b)), {})


class ArithmeticFamily(Family):
    """Single-digit arithmetic with a non-negative result (``3 + 4 =`` -> ``7``)."""

    name = "arithmetic"
    title = "Arithmetic"
    description = "single-digit arithmetic (+ at level 1-2, then -, *, three operands); answer as digits"
    unit = "char"
    #: level -> (operand count, operators, operands in [0, n))
    LEVELS: ClassVar[dict[int, tuple[int, str, int]]] = {
        1: (2, "+", 4),
        2: (2, "+", 10),
        3: (2, "+-", 10),
        4: (2, "+-*", 10),
        5: (3, "+-", 10),
    }

    def params(self, level: int) -> dict[str, Any]:
        k, ops, n = self.LEVELS[self._check_level(level)]
        return {"operands": k, "operators": " ".join(ops), "digits": f"0-{n - 1}"}

    def actions(self, level: int) -> tuple[str, ...]:
        return DIGITS if self._check_level(level) > 1 else DIGITS[:7]

    def horizon(self, level: int) -> int:
        return 2 if self._check_level(level) == 1 else 3

    @staticmethod
    def _value(key: tuple[Any, ...]) -> int:
        value = key[0]
        for op, x in zip(key[1::2], key[2::2]):
            value = value + x if op == "+" else value - x if op == "-" else value * x
        return int(value)

    def enumerate(self, level: int) -> Iterator[tuple[Any, ...]] | None:
        k, ops, n = self.LEVELS[self._check_level(level)]
        out = []
        for nums in itertools.product(range(n), repeat=k):
            for chosen in itertools.product(ops, repeat=k - 1):
                key: tuple[Any, ...] = (nums[0], *itertools.chain(*zip(chosen, nums[1:])))
                if self._value(key) >= 0:
                    out.append(key)
        return iter(out)

    def sample(self, level: int, rng: np.random.Generator) -> tuple[Any, ...]:
        keys = list(self.enumerate(level) or ())
        return keys[int(rng.integers(len(keys)))]

    def render(self, key: tuple[Any, ...]) -> Instance:
        return Instance(" ".join(map(str, key)) + " =", str(self._value(key)), {})


class ListFormatFamily(Family):
    """Follow a format rule: ``n`` distinct colours, comma-separated, a given first one, one colour excluded.

    Many completions are right (a verifier, not a string match): ``List 2 colours, first blue, not red:`` accepts
    ``blue, green`` and ``blue, yellow``. The canonical answer is the alphabetically first right one.
    """

    name = "list_format"
    title = "ListFormat"
    description = (
        "write n distinct colours, comma-separated, a given one first, one excluded; verified by rule"
    )
    #: level -> (min n, max n, alphabet size)
    LEVELS: ClassVar[dict[int, tuple[int, int, int]]] = {
        1: (1, 2, 3),
        2: (2, 3, 4),
        3: (3, 4, 5),
        4: (4, 5, 6),
        5: (5, 6, 8),
    }

    def params(self, level: int) -> dict[str, Any]:
        lo, hi, k = self.LEVELS[self._check_level(level)]
        return {"items": f"{lo}-{hi}", "words": k}

    def actions(self, level: int) -> tuple[str, ...]:
        return (*(" " + w for w in COLOURS[: self.LEVELS[self._check_level(level)][2]]), ",")

    def horizon(self, level: int) -> int:
        return 2 * self.LEVELS[self._check_level(level)][1]

    def enumerate(self, level: int) -> Iterator[tuple[Any, ...]] | None:
        lo, hi, k = self.LEVELS[self._check_level(level)]
        return (
            (n, k, first, excl)
            for n in range(lo, hi + 1)
            for first in range(k)
            for excl in (-1, *range(k))
            if excl != first and n <= k - (excl >= 0)
        )

    def sample(self, level: int, rng: np.random.Generator) -> tuple[Any, ...]:
        keys = list(self.enumerate(level) or ())
        return keys[int(rng.integers(len(keys)))]

    def render(self, key: tuple[Any, ...]) -> Instance:
        n, k, first, excl = key
        allowed = [COLOURS[i] for i in range(k) if i != excl]
        rest = sorted(w for w in allowed if w != COLOURS[first])[: n - 1]
        noun = "colour" if n == 1 else "colours"
        prompt = f"List {n} {noun}, first {COLOURS[first]}" + (
            f", not {COLOURS[excl]}:" if excl >= 0 else ":"
        )
        return Instance(
            prompt, ", ".join([COLOURS[first], *rest]), {"n": n, "first": COLOURS[first], "allowed": allowed}
        )

    def _items(self, completion: str) -> list[str]:
        return [" ".join(part.split()) for part in completion.split(",")]

    def check(self, completion: str, answer: str, rule: dict[str, Any]) -> bool:
        items = self._items(completion)
        return (
            len(items) == rule["n"]
            and items[0] == rule["first"]
            and len(set(items)) == len(items)
            and all(it in rule["allowed"] for it in items)
        )

    def partial(self, completion: str, answer: str, rule: dict[str, Any]) -> float:
        if self.check(completion, answer, rule):
            return 1.0
        items = self._items(completion)
        seen: set[str] = set()
        good = 0
        for i, it in enumerate(items):
            ok = it in rule["allowed"] and it not in seen and (i > 0 or it == rule["first"])
            seen.add(it)
            good += ok
        return min(good / max(len(items), rule["n"]), 0.99)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        CopyFamily(),
        ReverseFamily(),
        SortFamily(),
        CountFamily(),
        CompareFamily(),
        ArithmeticFamily(),
        ListFormatFamily(),
    )
}


def get_family(name: str | Family) -> Family:
    """A family by name (``"copy"``, ``"Copy"`` or ``"list_format"``) or the family itself."""
    if isinstance(name, Family):
        return name
    for fam in FAMILIES.values():
        if str(name).lower() in (fam.name, fam.title.lower()):
            return fam
    raise ValueError(f"unknown procedural task {name!r}; tasks: {', '.join(FAMILIES)}")


def instance_rows(
    family: str | Family,
    level: int,
    split: str = "train",
    num_instances: int = 1000,
    instance_seed: int = 0,
) -> list[dict[str, Any]]:
    """The prompt rows of one level and split: every instance when the level's split has at most
    ``num_instances``, else ``num_instances`` distinct ones drawn with ``instance_seed``.

    Rows carry the context columns the checker reads: ``task``, ``answer``, ``rule`` (JSON) and ``difficulty``.

    :param split: ``"train"``, ``"test"`` (disjoint: decided by :func:`instance_split`) or ``"all"``.
    :raises ValueError: for an unknown split, a bad level, or a split with no instances.
    """
    fam = get_family(family)
    level = fam._check_level(level)
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if isinstance(num_instances, bool) or not isinstance(num_instances, int) or num_instances <= 0:
        raise ValueError(f"num_instances must be a positive integer, got {num_instances!r}")

    def keep(inst: Instance) -> bool:
        return split == "all" or instance_split(inst.prompt) == split

    chosen: dict[str, Instance] = {}
    keys = fam.enumerate(level)
    if keys is not None:
        pool = [inst for inst in map(fam.render, keys) if keep(inst)]
        if len(pool) > num_instances:
            rng = np.random.default_rng(instance_seed)
            pool = [pool[i] for i in sorted(rng.choice(len(pool), size=num_instances, replace=False))]
        chosen = {inst.prompt: inst for inst in pool}
    else:
        rng = np.random.default_rng(instance_seed)
        for _ in range(50 * num_instances):
            inst = fam.render(fam.sample(level, rng))
            if keep(inst):
                chosen.setdefault(inst.prompt, inst)
                if len(chosen) >= num_instances:
                    break
    if not chosen:
        raise ValueError(f"task {fam.name!r} level {level} has no {split} instances")
    return [
        {
            "prompt": inst.prompt,
            "answer": inst.answer,
            "rule": json.dumps(inst.rule, sort_keys=True),
            "task": fam.name,
            "difficulty": level,
        }
        for inst in chosen.values()
    ]


def is_procedural_rows(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether every row is a procedural instance row (:func:`instance_rows`: ``task`` names a family, ``answer``)."""
    return bool(rows) and all(
        isinstance(r.get("answer"), str) and str(r.get("task", "")).lower() in FAMILIES for r in rows
    )


def demonstration_pairs(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(prompt, right completion) of each procedural row, for supervised fine-tuning: the canonical answer that the
    exact checker accepts, written as the policy writes it (:meth:`Family.demonstration`). Pass the rows of a train
    split only: a row's answer is the ground truth of its instance.

    :raises ValueError: when a row is not a procedural instance row.
    """
    if not is_procedural_rows(rows):
        raise ValueError(
            "expected procedural instance rows (columns 'prompt', 'task' naming a family, 'answer')"
        )
    return [(r["prompt"], get_family(r["task"]).demonstration(r["answer"])) for r in rows]


class ProceduralScorer(BaseScorer):
    """The exact checker of every procedural family as a scorer; context columns ``task``, ``answer``, ``rule``.

    :param reward: ``"exact"`` (1.0 for a right answer, else 0.0) or ``"partial"`` (positional credit per word or
        digit, 1.0 only for a right answer). Both are reported in ``info["reward_components"]`` (``exact``,
        ``partial``) whichever is paid.
    """

    name = "procedural"
    requires = ("task", "answer", "rule")
    REWARDS = ("exact", "partial")

    def __init__(self, reward: str = "exact") -> None:
        if reward not in self.REWARDS:
            raise ValueError(f"reward must be one of {self.REWARDS}, got {reward!r}")
        self.reward = reward

    def components(
        self, completions: Sequence[str], tasks: Sequence[str], answers: Sequence[str], rules: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """``exact`` and ``partial`` (float32, (B,)) for a batch."""
        exact = np.zeros(len(completions), dtype=np.float32)
        part = np.zeros(len(completions), dtype=np.float32)
        for i, (c, t, a, r) in enumerate(zip(completions, tasks, answers, rules)):
            fam, rule = get_family(t), json.loads(r) if r else {}
            exact[i] = float(fam.check(c, a, rule))
            part[i] = fam.partial(c, a, rule)
        return {"exact": exact, "partial": part}

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        return self.components(completions, context["task"], context["answer"], context["rule"])[self.reward]

    def score_with_components(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        total = self(prompts, completions, **context)
        comps = self.components(completions, context["task"], context["answer"], context["rule"])
        return total, comps
