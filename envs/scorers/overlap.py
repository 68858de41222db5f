"""Reference-overlap scorers: sentence BLEU and chrF (sacrebleu) and ROUGE-L F1 (rouge-score), scaled to [0, 1].

The reference comes from the per-prompt context column ``reference`` (a string or a list of strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aligngym.envs.scorers.base import BaseScorer


def _refs(row: Any) -> list[str]:
    if isinstance(row, str):
        return [row]
    return [str(r) for r in row]


class BleuScorer(BaseScorer):
    """Sentence BLEU (sacrebleu, exponential smoothing) of the completion against the reference, / 100."""

    name = "bleu"
    requires = ("reference",)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        from sacrebleu.metrics import BLEU

        bleu = BLEU(effective_order=True)
        refs = context["reference"]
        return np.array(
            [bleu.sentence_score(c, _refs(r)).score / 100.0 for c, r in zip(completions, refs)],
            dtype=np.float32,
        )


class ChrfScorer(BaseScorer):
    """Sentence chrF (sacrebleu) of the completion against the reference, / 100."""

    name = "chrf"
    requires = ("reference",)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        from sacrebleu.metrics import CHRF

        chrf = CHRF()
        refs = context["reference"]
        return np.array(
            [chrf.sentence_score(c, _refs(r)).score / 100.0 for c, r in zip(completions, refs)],
            dtype=np.float32,
        )


class RougeLScorer(BaseScorer):
    """ROUGE-L F1 (rouge-score, with stemming) of the completion against the best-matching reference."""

    name = "rouge_l"
    requires = ("reference",)

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        refs = context["reference"]
        return np.array(
            [
                max(self._rouge.score(r, c)["rougeL"].fmeasure for r in _refs(ref))
                for c, ref in zip(completions, refs)
            ],
            dtype=np.float32,
        )

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
