"""Train the shipped judges: the gold models in ``aligngym/envs/data/gold`` and the proxy ``preference_rm``.

``python -m aligngym.agents.train_gold sentiment`` fits the 3-way sentiment head on ``sentiment_labels.jsonl``
(built by ``envs/data/gold/build_sentiment_labels.py``); ``... preference`` trains the gold reward model on every
shipped preference pair; ``... proxy`` trains the Preference task's proxy reward model (``envs/data/reward_model``)
on the train pairs only. All write safetensors + json and print their metrics.
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
#: proxy reward model (the Preference task's training reward): train pairs only (320 of 400), a smaller head, and
#: synthetic negatives that include no answer and a 1-3 word fragment, so that it never prefers stopping at once
PROXY_RM_FEATURES = ("joint", "completion", "cosine")
PROXY_RM_HIDDEN = 32
PROXY_RM_EPOCHS = 40
PROXY_RM_NEGATIVES = ("shuffled", "random_tokens", "repeated", "empty", "truncated")


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


def proxy_rm_config(seed: int = 0, device: str = "cpu") -> Any:
    """The shipped proxy reward model's recipe as a :class:`~aligngym.agents.reward_modeling.RewardModelConfig`.

    :param seed: seeds initialisation and shuffling.
    :param device: ``"cpu"`` or ``"cuda"``.
    """
    from aligngym.agents.reward_modeling import RewardModelConfig

    return RewardModelConfig(
        model="minilm-head",
        head_features=PROXY_RM_FEATURES,
        head_hidden=PROXY_RM_HIDDEN,
        synthetic_negatives=PROXY_RM_NEGATIVES,
        epochs=PROXY_RM_EPOCHS,
        seed=seed,
        device=device,
    )


def train_proxy(out: Path, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Train the proxy reward model (the ``preference_rm`` scorer) on the train pairs and save it to ``out``.

    A fixed number of optimizer steps (``PROXY_RM_EPOCHS`` passes, seeded shuffling): a rerun reproduces the weights.
    The metrics hold its accuracy on the 80 held-out test pairs (prompts disjoint from the training pairs') beside
    the gold reward model's same-config held-out check (``proxy_vs_gold``), and the mean standardised reward of a
    held-out chosen answer, its 1-3 word fragment and no answer at all (``heldout_mean_reward``).
    """
    from aligngym.agents.reward_modeling import RewardModelTrainer, load_preference_pairs
    from aligngym.envs.tasks import data_path

    pairs = data_path("preference_pairs.jsonl")
    train_rows = load_preference_pairs(pairs, split="train")
    test_rows = load_preference_pairs(pairs, split="test")
    trainer = RewardModelTrainer(proxy_rm_config(seed, device))
    metrics = trainer.train(train_rows, eval_pairs=test_rows)
    rm = trainer.reward_model()
    prompts = list(dict.fromkeys(r["prompt"] for r in test_rows))
    chosen = [next(r["chosen"] for r in test_rows if r["prompt"] == p) for p in prompts]
    scale = (metrics["reward_mean"], metrics["reward_std"])

    def mean_reward(answers: list[str]) -> float:
        return float(np.mean((rm.reward(prompts, answers) - scale[0]) / scale[1]))

    gold_meta = json.loads((gold_dir() / "reward_model.json").read_text(encoding="utf-8"))
    extra = {
        "proxy_vs_gold": {
            "test_pairs": len(test_rows),
            "proxy_eval_accuracy": metrics["eval_accuracy"],
            "gold_heldout_eval_accuracy": gold_meta.get("heldout_check", {}).get("eval_accuracy"),
            "proxy_train_pairs": len(train_rows),
            "gold_train_pairs": gold_meta.get("train_pairs"),
        },
        "heldout_mean_reward": {
            "chosen": mean_reward(chosen),
            "fragment_first_2_words": mean_reward([" ".join(c.split()[:2]) for c in chosen]),
            "empty": mean_reward([""] * len(chosen)),
        },
        "command": "python -m aligngym.agents.train_gold proxy",
    }
    trainer.metrics.update(extra)
    trainer.save(out)
    return {**metrics, **extra}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m aligngym.agents.train_gold {sentiment,preference,proxy,all} [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("which", choices=("sentiment", "preference", "proxy", "all"))
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default: the shipped envs/data/gold; envs/data/reward_model for proxy)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: the shipped files' setting)"
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else gold_dir()
    report: dict[str, Any] = {}
    if args.which in ("sentiment", "all"):
        report["sentiment"] = train_sentiment(out, seed=args.seed)
    if args.which in ("preference", "all"):
        report["preference"] = train_preference(out, seed=args.seed)
    if args.which in ("proxy", "all"):
        from aligngym.envs.scorers.reward_model import shipped_reward_model_dir

        proxy_out = Path(args.out) if args.out and args.which == "proxy" else shipped_reward_model_dir()
        report["proxy"] = train_proxy(proxy_out, seed=args.seed)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
