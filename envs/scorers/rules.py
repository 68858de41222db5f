"""Rule-based scorers: keyword coverage, regular expressions, length and blocklists (pure Python, fast)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from aligngym.envs.scorers.base import BaseScorer

#: suffixes a keyword may carry and still count (dog -> dogs, catch -> catches, bake -> baked, run -> running)
KEYWORD_SUFFIXES = ("", "s", "es", "ed", "d", "ing")


def _keyword_pattern(word: str) -> re.Pattern[str]:
    word = word.strip().lower()
    stems = {re.escape(word)}
    if word.endswith("e"):
        stems.add(re.escape(word[:-1]))  # bake -> baking
    if len(word) > 2 and word[-1] not in "aeiouwxy" and word[-2] in "aeiou" and word[-3] not in "aeiou":
        stems.add(re.escape(word + word[-1]))  # run -> running, stop -> stopped
    suffix = "|".join(s for s in KEYWORD_SUFFIXES if s)
    return re.compile(rf"\b(?:{'|'.join(sorted(stems))})(?:{suffix})?\b", re.IGNORECASE)


class KeywordsScorer(BaseScorer):
    """Fraction of the keywords that the completion uses (CommonGen-style concept coverage), in [0, 1].

    A keyword counts when it appears as a whole word, case-insensitively, optionally with one of the suffixes
    -s, -es, -ed, -d, -ing (with a final e dropped or a final consonant doubled: bake/baking, run/running).

    :param keywords: fixed keywords for every prompt; otherwise the per-prompt context column ``keywords``.
    """

    name = "keywords"

    def __init__(self, keywords: Sequence[str] | None = None) -> None:
        self.keywords = None if keywords is None else [str(k) for k in keywords]

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        rows = context.get("keywords")
        if self.keywords is None and rows is None:
            raise ValueError("no keywords: pass keywords= or a prompt set with a 'keywords' column")
        out = np.zeros(len(completions), dtype=np.float32)
        for i, text in enumerate(completions):
            words = self.keywords if self.keywords is not None else rows[i]  # type: ignore[index]
            if isinstance(words, str):
                words = [w for w in re.split(r"[,\s]+", words) if w]
            if not words:
                out[i] = 0.0
                continue
            hits = sum(1 for w in words if _keyword_pattern(w).search(text))
            out[i] = hits / len(words)
        return out


class RegexScorer(BaseScorer):
    """1.0 where ``pattern`` matches the completion (``re.search``), else 0.0; ``fullmatch=True`` for format checks."""

    name = "regex"

    def __init__(self, pattern: str = r"\S", flags: int = 0, fullmatch: bool = False) -> None:
        self.pattern = re.compile(pattern, flags)
        self.fullmatch = fullmatch

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        match = self.pattern.fullmatch if self.fullmatch else self.pattern.search
        return np.array([1.0 if match(c) else 0.0 for c in completions], dtype=np.float32)


class LengthScorer(BaseScorer):
    """1.0 when the completion has between ``min_words`` and ``max_words`` words, decaying linearly outside.

    The score drops by ``1 / tolerance`` per word outside the range, down to 0.
    """

    name = "length"

    def __init__(self, min_words: int = 5, max_words: int = 20, tolerance: int = 5) -> None:
        if min_words < 0 or max_words < min_words or tolerance <= 0:
            raise ValueError(
                f"need 0 <= min_words <= max_words and tolerance > 0, got {min_words}, {max_words}, {tolerance}"
            )
        self.min_words, self.max_words, self.tolerance = min_words, max_words, tolerance

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        n = np.array([len(c.split()) for c in completions], dtype=np.float32)
        miss = np.maximum(self.min_words - n, 0) + np.maximum(n - self.max_words, 0)
        return np.clip(1.0 - miss / self.tolerance, 0.0, 1.0).astype(np.float32)


class BlocklistScorer(BaseScorer):
    """A penalty: -1.0 for a completion that contains any blocked word or phrase (whole words, any case), else 0.0."""

    name = "blocklist"

    def __init__(self, words: Sequence[str] = ("hate", "stupid", "idiot", "awful", "terrible")) -> None:
        if not words:
            raise ValueError("blocklist needs at least one word")
        self.words = [str(w) for w in words]
        self._pattern = re.compile(
            r"\b(?:" + "|".join(re.escape(w) for w in self.words) + r")\b", re.IGNORECASE
        )

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        return np.array([-1.0 if self._pattern.search(c) else 0.0 for c in completions], dtype=np.float32)
