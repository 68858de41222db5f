"""Task-success scorers: exact match, a user verifier callable, and the word-by-word target match of the Target task."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from aligngym.envs.scorers.base import BaseScorer


def normalize_text(text: str) -> str:
    """Lowercase, strip punctuation at word edges and collapse whitespace."""
    words = [re.sub(r"^\W+|\W+$", "", w) for w in text.lower().split()]
    return " ".join(w for w in words if w)


class ExactMatchScorer(BaseScorer):
    """1.0 when the normalized completion equals the normalized ``target`` context column, else 0.0."""

    name = "exact_match"
    requires = ("target",)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        targets = context["target"]
        return np.array(
            [
                1.0 if normalize_text(c) == normalize_text(str(t)) else 0.0
                for c, t in zip(completions, targets)
            ],
            dtype=np.float32,
        )


class TargetScorer(BaseScorer):
    """Word-by-word match against the ``target`` column: matched positions / max(len(completion), len(target)).

    Exactly 1.0 only for the target itself; every right word in the right place earns a share, every extra or
    missing word costs one. The exact reward of the tabular-sized ``Target`` task.
    """

    name = "target"
    requires = ("target",)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        out = np.zeros(len(completions), dtype=np.float32)
        for i, (c, t) in enumerate(zip(completions, context["target"])):
            got, want = normalize_text(c).split(), normalize_text(str(t)).split()
            denom = max(len(got), len(want))
            out[i] = 1.0 if denom == 0 else sum(g == w for g, w in zip(got, want)) / denom
        return out


class VerifierScorer(BaseScorer):
    """Task success from a user verifier ``verify(prompt, completion, **row_context) -> bool | float``.

    The verifier sees one row at a time, with that row's context values. A class, so it pickles when ``verify`` does.
    """

    name = "verifier"

    def __init__(self, verify: Callable[..., Any], name: str = "verifier") -> None:
        if not callable(verify):
            raise TypeError(f"verify must be callable, got {type(verify).__name__}")
        self.verify = verify
        self.name = name

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        out = []
        for i, (p, c) in enumerate(zip(prompts, completions)):
            row = {
                k: v[i]
                for k, v in context.items()
                if isinstance(v, list | tuple) and len(v) == len(completions)
            }
            out.append(float(self.verify(p, c, **row)))
        return np.array(out, dtype=np.float32)
