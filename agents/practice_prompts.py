"""Practice prompts for RL: new prompts of a task's kind that the shipped reference LM never saw.

Why: the Keywords task's 98 train prompts (and the CommonGen-style lines built from the corpus) were part of the
reference LM's pretraining, so on them the LM already *recalls* a sentence that uses the keywords. RL on those
prompts rewards recall, which does not transfer to the held-out test prompts (greedy train coverage 0.374 vs 0.125
on test). :func:`keyword_practice_rows` draws keyword triples at random from the vocabulary of the reference LM's
*train* documents: no sentence of the corpus holds the three together, so the only way to raise coverage on them
is to use the words the prompt gives, which is the skill the test prompts measure.

Use them as any prompt set: ``gym.make("aligngym/Keywords-Sequence-v0", prompts=keyword_practice_rows(3000))``; the
benchmark harness takes ``train_prompts = {source = "keyword-practice", n = 3000}`` in a suite's agent table and
trains on them while evaluating on the task's test split. No test row is read to build them; a triple that equals a
task prompt's keywords (of any split) is dropped.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from aligngym.envs.runtime import positive_int

#: a practice word must occur at least this often in the train documents (rare words are noise to a small LM)
KEYWORD_MIN_COUNT = 5


def _train_line_words() -> list[list[str]]:
    """The content words (3+ letters, not stopwords) of each line of the reference LM's train documents, in order
    (lines that are prompts are skipped)."""
    from aligngym.agents.pretrain_reference import STOPWORDS, load_split
    from aligngym.envs.data import data_path

    train_docs, _, _ = load_split(data_path("corpus.txt"), data_path("corpus_split.json"))
    return [
        [w for w in re.findall(r"[a-z]+", line.lower()) if len(w) > 2 and w not in STOPWORDS]
        for line in train_docs
        if not re.match(r"^(Write|Q:|Paraphrase)", line)
    ]


def _frequent_words(lines: list[list[str]], min_count: int) -> list[str]:
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts = collections.Counter(w for words in lines for w in words)
    return sorted(w for w, c in counts.items() if c >= min_count)


def keyword_vocabulary(min_count: int = KEYWORD_MIN_COUNT) -> list[str]:
    """Content words (3+ letters, not :data:`~aligngym.agents.pretrain_reference.STOPWORDS`) that occur at least
    ``min_count`` times in the reference LM's train documents (lines that are prompts are skipped), sorted."""
    return _frequent_words(_train_line_words(), min_count)


def _task_triples() -> set[frozenset[str]]:
    """The keyword sets of the Keywords task's shipped prompts, every split (a practice triple never equals one)."""
    from aligngym.envs.prompts import load_prompt_rows
    from aligngym.envs.tasks import get_task

    return {frozenset(r["keywords"]) for r in load_prompt_rows(get_task("Keywords"), split="all")}


def _keyword_row(pick: list[str]) -> dict[str, Any]:
    return {"prompt": f"Write a sentence using: {', '.join(pick)}.", "keywords": pick}


def keyword_linked_rows(n: int, seed: int = 0, min_count: int = KEYWORD_MIN_COUNT) -> list[dict[str, Any]]:
    """``n`` Keywords prompt rows whose triples hang together but appear in no train line together: two words of
    one train line and a third word of another line that shares one of them (dog, ball | ball, field ->
    ``dog, ball, field``). A sentence that uses all three exists in spirit, none in the corpus, so recall is not
    enough: the policy has to use the words the prompt gives. Deterministic in ``seed``.

    :raises ValueError: for ``n < 1``.
    """
    n = positive_int("n", n)
    words = _train_line_words()
    vocab = set(_frequent_words(words, min_count))
    lines = [sorted(set(w for w in ws if w in vocab)) for ws in words]
    lines = [ws for ws in lines if len(ws) >= 2]
    where: dict[str, set[int]] = collections.defaultdict(set)
    for i, ws in enumerate(lines):
        for w in ws:
            where[w].add(i)
    taken = _task_triples()
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for _ in range(200 * n):
        if len(rows) >= n:
            break
        i = int(rng.integers(len(lines)))
        a, b = (lines[i][j] for j in rng.choice(len(lines[i]), size=2, replace=False))
        others = sorted(where[b] - {i})
        if not others:
            continue
        j = others[int(rng.integers(len(others)))]
        fresh = [w for w in lines[j] if w not in lines[i]]
        if not fresh:
            continue
        c = fresh[int(rng.integers(len(fresh)))]
        if where[a] & where[b] & where[c] or frozenset((a, b, c)) in taken:
            continue  # some line holds all three (recall would do), or a task prompt has this triple
        taken.add(frozenset((a, b, c)))
        rows.append(_keyword_row([str(w) for w in rng.permutation([a, b, c])]))
    if len(rows) < n:
        raise ValueError(f"only {len(rows)} linked keyword triples found; asked for {n}")
    return rows


def keyword_practice_rows(n: int, seed: int = 0, min_count: int = KEYWORD_MIN_COUNT) -> list[dict[str, Any]]:
    """``n`` Keywords prompt rows (``prompt``, ``keywords``; no ``reference``) whose three keywords are drawn at
    random from :func:`keyword_vocabulary`. Deterministic in ``seed``.

    :raises ValueError: for ``n < 1``.
    """
    n = positive_int("n", n)
    vocab = keyword_vocabulary(min_count)
    taken = _task_triples()
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        pick = [vocab[j] for j in rng.choice(len(vocab), size=3, replace=False)]
        if frozenset(pick) in taken:
            continue
        taken.add(frozenset(pick))
        rows.append(_keyword_row(pick))
    return rows


#: practice prompt sources by name: ``source(n, seed) -> rows`` and the task they are prompts of
PRACTICE_SOURCES: dict[str, tuple[str, Callable[..., list[dict[str, Any]]]]] = {
    "keyword-practice": ("Keywords", keyword_practice_rows),
    "keyword-linked": ("Keywords", keyword_linked_rows),
}


def check_practice_config(config: Any) -> str:
    """Validate a ``{source, n, seed}`` table without building rows; returns the task the source makes prompts of.

    :raises TypeError: when ``config`` is not a table.
    :raises ValueError: for an unknown source or key, or a non-positive ``n``.
    """
    if not isinstance(config, dict):
        raise TypeError(f"train_prompts must be a table (dict), got {type(config).__name__}: {config!r}")
    unknown = set(config) - {"source", "n", "seed", "train_share"}
    if unknown:
        raise ValueError(
            f"train_prompts: unknown key(s) {sorted(unknown)}; expected source, n, seed, train_share"
        )
    share = config.get("train_share", 0.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share < 1.0:
        raise ValueError(f"train_prompts: train_share must be a number in [0, 1), got {share!r}")
    name = config.get("source")
    if name not in PRACTICE_SOURCES:
        raise ValueError(
            f"train_prompts: unknown source {name!r}; expected one of {sorted(PRACTICE_SOURCES)}"
        )
    positive_int("train_prompts: n", config.get("n", 3000))
    return PRACTICE_SOURCES[name][0]


def practice_rows(config: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """Rows of a practice source from a config table ``{source, n, seed, train_share}`` (``n`` defaults to 3000,
    ``seed`` to 0). With ``train_share`` > 0 the task's own train rows are mixed in, repeated so that they make up
    about that share of the rows (an env draws its prompts uniformly from the rows).

    :param task: the name of the env's task; the source must be one of its prompts.
    :raises ValueError: for an unknown source or key, or a source of another task.
    """
    source_task = check_practice_config(config)
    name = config["source"]
    build = PRACTICE_SOURCES[name][1]
    if source_task != task:
        raise ValueError(
            f"train_prompts source {name!r} makes {source_task} prompts; this env's task is {task!r}"
        )
    rows = build(int(config.get("n", 3000)), seed=int(config.get("seed", 0)))
    share = float(config.get("train_share", 0.0))
    if share > 0:
        from aligngym.envs.prompts import load_prompt_rows
        from aligngym.envs.tasks import get_task

        train = load_prompt_rows(get_task(task), split="train")
        repeats = max(1, round(share * len(rows) / ((1.0 - share) * len(train))))
        rows = rows + [dict(r) for _ in range(repeats) for r in train]
    return rows


__all__ = [
    "KEYWORD_MIN_COUNT",
    "PRACTICE_SOURCES",
    "check_practice_config",
    "keyword_linked_rows",
    "keyword_practice_rows",
    "keyword_vocabulary",
    "practice_rows",
]
