"""Train the shipped gold models in ``aligngym/envs/data/gold``: the sentiment head and the gold reward model.

``python -m aligngym.agents.train_gold sentiment`` fits the 3-way sentiment head on ``sentiment_labels.jsonl``
(built by ``envs/data/gold/build_sentiment_labels.py``); ``... preference`` trains the gold reward model on every
shipped preference pair. Both write safetensors + json and print their metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.envs.scorers.gold import (
    SENTIMENT_FEATURES,
    SENTIMENT_HEAD_FILE,
    SENTIMENT_LABELS,
    SENTIMENT_META_FILE,
    build_sentiment_head,
    gold_dir,
    sentiment_features,
)

SENTIMENT_DATA = "sentiment_labels.jsonl"
#: gold reward model: every head input, a wider head, every synthetic negative
GOLD_RM_FEATURES = ("joint", "completion", "prompt_x_completion", "cosine")
GOLD_RM_HIDDEN = 64


def vader_labels(completions: Sequence[str], margin: float = 0.05) -> np.ndarray:
    """VADER's 3-way call on each completion (compound > margin: positive, < -margin: negative): int64 (B,)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    comp = np.array([sia.polarity_scores(c)["compound"] for c in completions])
    return np.where(comp > margin, 2, np.where(comp < -margin, 0, 1)).astype(np.int64)


def fit_sentiment_head(
    features: np.ndarray,
    labels: np.ndarray,
    hidden: int = 0,
    epochs: int = 1000,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> Any:
    """Full-batch AdamW cross-entropy on frozen features -> the trained torch head (eval mode, on CPU).

    :param features: float32 (N, F).
    :param labels: int64 (N,), indices into ``SENTIMENT_LABELS``.
    """
    import torch
    import torch.nn.functional as F

    if len(features) != len(labels) or not len(labels):
        raise ValueError(f"need as many labels as feature rows (> 0); got {len(features)} and {len(labels)}")
    torch.manual_seed(seed)
    head = build_sentiment_head(features.shape[1], hidden)
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    # balance the classes: the neutral pool is the largest
    counts = torch.bincount(y, minlength=len(SENTIMENT_LABELS)).float().clamp(min=1)
    weight = counts.sum() / (len(SENTIMENT_LABELS) * counts)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        loss = F.cross_entropy(head(x), y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def head_accuracy(head: Any, features: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax class is the label."""
    import torch

    with torch.inference_mode():
        pred = head(torch.as_tensor(features, dtype=torch.float32)).argmax(-1).numpy()
    return float(np.mean(pred == labels))


def train_sentiment(out: Path, hidden: int = 0, epochs: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Train the gold sentiment head on the shipped labels and save it to ``out`` (safetensors + json)."""
    from safetensors.torch import save_file

    from aligngym.envs.scorers.embedding import SentenceEncoder
    from aligngym.envs.tasks import read_jsonl

    rows = read_jsonl(gold_dir() / SENTIMENT_DATA)
    index = {name: i for i, name in enumerate(SENTIMENT_LABELS)}
    start = time.perf_counter()
    encoder = SentenceEncoder(device="cpu")
    feats = sentiment_features(encoder, [r["prompt"] for r in rows], [r["completion"] for r in rows])
    labels = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    train = np.array([r["split"] == "train" for r in rows])
    test = ~train
    check = fit_sentiment_head(feats[train], labels[train], hidden, epochs, seed=seed)
    kinds = np.array([r["kind"] for r in rows])
    vader = vader_labels([r["completion"] for r in rows])
    import torch

    with torch.inference_mode():
        pred = check(torch.as_tensor(feats, dtype=torch.float32)).argmax(-1).numpy()
    by_kind = {
        str(k): {
            "n": int(np.sum(test & (kinds == k))),
            "head": float(np.mean(pred[test & (kinds == k)] == labels[test & (kinds == k)])),
            "vader": float(np.mean(vader[test & (kinds == k)] == labels[test & (kinds == k)])),
        }
        for k in sorted(set(kinds[test].tolist()))
    }
    head = fit_sentiment_head(feats, labels, hidden, epochs, seed=seed)  # the shipped head sees every row
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(out / SENTIMENT_HEAD_FILE)
    )
    meta = {
        "labels": list(SENTIMENT_LABELS),
        "features": list(SENTIMENT_FEATURES),
        "encoder": "minilm",
        "in_dim": int(feats.shape[1]),
        "hidden": int(hidden),
        "epochs": int(epochs),
        "seed": int(seed),
        "rows": len(rows),
        "heldout_check": {
            "what": "a head trained on the train split only, scored on the test split (completions never seen)",
            "test_rows": int(test.sum()),
            "head_accuracy": float(np.mean(pred[test] == labels[test])),
            "vader_accuracy": float(np.mean(vader[test] == labels[test])),
            "by_kind": by_kind,
        },
        "train_accuracy": head_accuracy(head, feats, labels),
        "train_seconds": round(time.perf_counter() - start, 2),
    }
    (out / SENTIMENT_META_FILE).write_text(
        json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return meta


def train_preference(out: Path, seed: int = 0, epochs: int = 60, device: str = "cpu") -> dict[str, Any]:
    """Train the gold reward model on all shipped preference pairs and save it to ``out``.

    A same-config model trained on the train split and scored on the test split is reported as ``heldout_check``
    (the shipped one sees both splits, so it has no held-out accuracy of its own).
    """
    from aligngym.agents.reward_modeling import RewardModelConfig, RewardModelTrainer
    from aligngym.envs.tasks import data_path

    pairs = data_path("preference_pairs.jsonl")
    from aligngym.agents.reward_modeling import load_preference_pairs

    train_rows = load_preference_pairs(pairs, split="train")
    test_rows = load_preference_pairs(pairs, split="test")
    cfg = RewardModelConfig(
        model="minilm-head",
        head_features=GOLD_RM_FEATURES,
        head_hidden=GOLD_RM_HIDDEN,
        synthetic_negatives=("shuffled", "random_tokens", "repeated"),
        epochs=epochs,
        seed=seed,
        device=device,
    )
    check = RewardModelTrainer(cfg).train(train_rows, eval_pairs=test_rows)
    trainer = RewardModelTrainer(cfg)
    metrics = trainer.train(load_preference_pairs(pairs))
    trainer.metrics["heldout_check"] = {
        k: check[k] for k in ("eval_accuracy", "eval_accuracy_by_category", "eval_accuracy_synthetic")
    }
    trainer.save(out)
    metrics["heldout_check"] = trainer.metrics["heldout_check"]
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m aligngym.agents.train_gold {sentiment,preference,all} [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("which", choices=("sentiment", "preference", "all"))
    parser.add_argument("--out", default=None, help="output directory (default: the shipped envs/data/gold)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else gold_dir()
    report: dict[str, Any] = {}
    if args.which in ("sentiment", "all"):
        report["sentiment"] = train_sentiment(out, seed=args.seed)
    if args.which in ("preference", "all"):
        report["preference"] = train_preference(out, seed=args.seed)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
