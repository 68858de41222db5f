"""Sentiment scorer: VADER compound polarity of the completion, in [-1, 1] (the lexicon ships with vaderSentiment)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aligngym.envs.scorers.base import BaseScorer


class SentimentScorer(BaseScorer):
    """VADER compound score of each completion (or of prompt + completion with ``include_prompt=True``).

    :param include_prompt: score the prompt and completion together (a continuation is judged in context).
    """

    name = "sentiment"

    def __init__(self, include_prompt: bool = False) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.include_prompt = include_prompt
        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        texts = [f"{p} {c}" for p, c in zip(prompts, completions)] if self.include_prompt else completions
        return np.array([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        return {"include_prompt": self.include_prompt}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]
