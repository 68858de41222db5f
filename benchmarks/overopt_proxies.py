"""Proxy rewards of several data amounts for the Goodhart curves of ``benchmarks/overopt.py``.

Sentiment: VADER (the task's reward) and sentiment heads trained on 10 %, 30 % and 100 % of the gold labels (no
quality gate); Preference: reward models trained with the shipped proxy's recipe on 40, 80 and 160 train pairs and
the shipped ``preference_rm`` (320 pairs). Other tasks use their registered proxy alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aligngym.envs.scorers.base import BaseScorer

SENTIMENT_FRACTIONS = (0.1, 0.3, 1.0)
PREFERENCE_PAIRS = (40, 80, 160)
#: each task's own training reward under the name its best-of-n curve carries (the first of :func:`default_proxies`)
TASK_PROXY = {
    "Sentiment": ("vader", "sentiment"),
    "Preference": ("preference_rm_320pairs", "preference_rm"),
    "Keywords": ("keywords", "keywords"),
    "Similarity": ("embedding", "embedding"),
}


class SentimentHeadProxy(BaseScorer):
    """P(positive) - P(negative) of a sentiment head trained on part of the gold labels (no quality gate).

    :param head: a torch module from :func:`aligngym.envs.scorers.gold.build_sentiment_head` (eval mode, CPU).
    :param encoder: the :class:`~aligngym.envs.scorers.embedding.SentenceEncoder` the head was trained on.
    """

    def __init__(self, head: Any, encoder: Any, name: str) -> None:
        self.head = head
        self.encoder = encoder
        self.name = name

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        import torch

        from aligngym.envs.scorers.gold import sentiment_features

        feats = sentiment_features(self.encoder, prompts, completions)
        with torch.inference_mode():
            probs = torch.softmax(self.head(torch.as_tensor(feats)), dim=-1).numpy()
        return (probs[:, 2] - probs[:, 0]).astype(np.float32)


class TrainerRewardProxy(BaseScorer):
    """A reward model still in its :class:`~aligngym.agents.reward_modeling.RewardModelTrainer`, standardised with
    its training rewards' mean and std (as the ``reward_model`` scorer does)."""

    def __init__(self, trainer: Any, name: str) -> None:
        self.trainer = trainer
        self.name = name
        self.mean = float(trainer.metrics.get("reward_mean", 0.0))
        self.std = float(trainer.metrics.get("reward_std", 1.0)) or 1.0

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> np.ndarray:
        raw = np.asarray(self.trainer.reward(list(prompts), list(completions)), dtype=np.float64)
        return ((raw - self.mean) / self.std).astype(np.float32)


def sentiment_proxies(seed: int = 0, fractions: Sequence[float] = SENTIMENT_FRACTIONS) -> dict[str, Any]:
    """VADER plus sentiment heads trained on the first ``fraction`` of the (shuffled) train labels."""
    from aligngym.agents.train_gold import SENTIMENT_DATA, fit_sentiment_head
    from aligngym.envs.scorers.embedding import SentenceEncoder
    from aligngym.envs.scorers.gold import SENTIMENT_LABELS, gold_dir, sentiment_features
    from aligngym.envs.tasks import read_jsonl

    rows = [r for r in read_jsonl(gold_dir() / SENTIMENT_DATA) if r["split"] == "train"]
    rng = np.random.default_rng(seed)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    encoder = SentenceEncoder(device="cpu")
    feats = sentiment_features(encoder, [r["prompt"] for r in rows], [r["completion"] for r in rows])
    index = {n: i for i, n in enumerate(SENTIMENT_LABELS)}
    labels = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    out: dict[str, Any] = {"vader": "sentiment"}
    for frac in fractions:
        k = max(len(SENTIMENT_LABELS), round(frac * len(rows)))
        head = fit_sentiment_head(feats[:k], labels[:k], hidden=0, seed=seed)
        name = f"head_{k}labels"
        out[name] = SentimentHeadProxy(head, encoder, name)
    return out


def preference_proxies(
    seed: int = 0, sizes: Sequence[int] = PREFERENCE_PAIRS, device: str = "cpu"
) -> dict[str, Any]:
    """Reward models on ``sizes`` train pairs (drawn at random), trained with the shipped proxy's recipe
    (:func:`aligngym.agents.train_gold.proxy_rm_config`), plus the shipped 320-pair one."""
    from aligngym.agents.reward_modeling import RewardModelTrainer, load_preference_pairs
    from aligngym.agents.train_gold import proxy_rm_config
    from aligngym.envs.tasks import data_path

    rows = load_preference_pairs(data_path("preference_pairs.jsonl"), split="train")
    rng = np.random.default_rng(seed)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    out: dict[str, Any] = {}
    for k in sizes:
        trainer = RewardModelTrainer(proxy_rm_config(seed, device))
        trainer.train(rows[:k])
        out[f"rm_{k}pairs"] = TrainerRewardProxy(trainer, f"rm_{k}pairs")
    out["preference_rm_320pairs"] = "preference_rm"
    return out


def default_proxies(task: str, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """The proxies of one task, first the task's own reward (name -> scorer spec or object)."""
    if task == "Sentiment":
        return sentiment_proxies(seed)
    if task == "Preference":
        proxies = preference_proxies(seed, device=device)
        return {"preference_rm_320pairs": proxies.pop("preference_rm_320pairs"), **proxies}
    if task in TASK_PROXY:
        name, spec = TASK_PROXY[task]
        return {name: spec}
    raise ValueError(f"no proxies defined for task {task!r}; pass proxies= (name -> scorer)")
