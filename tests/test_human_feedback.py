"""Bounds of the human-feedback scorer: a bounded history (prompts LRU, ratings per prompt), pairs per rating and
rows written; the exact pairs of a small known sequence."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from aligngym.envs.scorers.human import (
    MAX_PAIRS_PER_RATING,
    MAX_PROMPTS,
    MAX_RATINGS_PER_PROMPT,
    HumanFeedbackScorer,
)


def scorer_with(answers: list[int], tmp_path: Path | None, **kwargs) -> HumanFeedbackScorer:
    return HumanFeedbackScorer(
        out_file=tmp_path / "prefs.jsonl" if tmp_path is not None else None,
        stdin=io.StringIO("".join(f"{a}\n" for a in answers)),
        stdout=io.StringIO(),
        **kwargs,
    )


def rows_of(path: Path) -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


def test_defaults_are_documented_values() -> None:
    s = HumanFeedbackScorer()
    assert (
        (s.max_prompts, s.max_ratings_per_prompt, s.max_pairs_per_rating, s.max_pairs_written)
        == (
            MAX_PROMPTS,
            MAX_RATINGS_PER_PROMPT,
            MAX_PAIRS_PER_RATING,
            None,
        )
        == (1000, 32, 8, None)
    )


def test_bounds_hold_under_ten_thousand_ratings(tmp_path: Path) -> None:
    n = 10_000
    rng = np.random.default_rng(0)
    answers = rng.integers(1, 6, size=n).tolist()
    prompts = [f"p{int(i)}" for i in rng.integers(0, 50, size=n)]
    completions = [f"c{i}" for i in range(n)]
    s = scorer_with(answers, tmp_path, max_prompts=20, max_ratings_per_prompt=5, max_pairs_per_rating=3)
    for start in range(0, n, 500):
        s(prompts[start : start + 500], completions[start : start + 500])
        assert len(s.history) <= 20
        assert all(len(v) <= 5 for v in s.history.values())
    written = rows_of(tmp_path / "prefs.jsonl")
    assert len(written) == s.pairs_written <= 3 * n
    assert s.pairs_written > n // 4  # pairs are still made: bounded, not switched off


def test_default_bounds_on_one_prompt_rated_ten_thousand_times(tmp_path: Path) -> None:
    n = 10_000
    answers = [1 + (i % 5) for i in range(n)]
    s = scorer_with(answers, None)
    for start in range(0, n, 1000):
        s(["same prompt"] * 1000, [f"c{i}" for i in range(start, start + 1000)])
    assert list(s.history) == ["same prompt"] and len(s.history["same prompt"]) == MAX_RATINGS_PER_PROMPT
    assert s.history["same prompt"][-1] == (f"c{n - 1}", answers[-1])


def test_pairs_written_for_a_known_sequence(tmp_path: Path) -> None:
    s = scorer_with([1, 3, 3, 5, 2], tmp_path, max_pairs_per_rating=2, max_ratings_per_prompt=3)
    scores = s(["q"] * 5, ["c1", "c2", "c3", "c4", "c5"])
    np.testing.assert_allclose(scores, [0.0, 0.5, 0.5, 1.0, 0.25])
    assert rows_of(tmp_path / "prefs.jsonl") == [
        ("q", "c2", "c1"),  # c2 (3) vs c1 (1)
        ("q", "c3", "c1"),  # c3 (3): c2 ties, only c1 differs
        ("q", "c4", "c2"),  # c4 (5): the 2 most recent that differ: c2, c3
        ("q", "c4", "c3"),
        ("q", "c3", "c5"),  # c5 (2): remembered c2, c3, c4; the 2 most recent: c3, c4
        ("q", "c4", "c5"),
    ]
    assert s.history["q"] == [("c3", 3), ("c4", 5), ("c5", 2)]


def test_max_pairs_written_stops_writing_but_not_scoring(tmp_path: Path) -> None:
    s = scorer_with([1, 3, 3, 5, 2], tmp_path, max_pairs_per_rating=2, max_pairs_written=4)
    scores = s(["q"] * 5, ["c1", "c2", "c3", "c4", "c5"])
    assert scores[-1] == pytest.approx(0.25)
    assert len(rows_of(tmp_path / "prefs.jsonl")) == s.pairs_written == 4 and s.pairs_dropped == 2


def test_history_forgets_the_least_recently_rated_prompt(tmp_path: Path) -> None:
    s = scorer_with([1, 2, 3, 4], None, max_prompts=2)
    s(["a", "b", "a", "c"], ["x", "y", "z", "w"])
    assert list(s.history) == ["a", "c"]


def test_zero_pairs_per_rating_writes_only_choices(tmp_path: Path) -> None:
    s = scorer_with([1, 5], tmp_path, max_pairs_per_rating=0)
    s(["q", "q"], ["a", "b"])
    assert not (tmp_path / "prefs.jsonl").exists() and s.pairs_written == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_prompts", 0),
        ("max_ratings_per_prompt", -1),
        ("max_pairs_per_rating", 1.5),
        ("max_pairs_written", -2),
    ],
)
def test_bad_bounds_raise_naming_the_option(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{key} must be an integer"):
        HumanFeedbackScorer(**{key: value})  # type: ignore[arg-type]
