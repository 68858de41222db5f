"""Supervised warm start: causal-LM cross-entropy on a text corpus or on (prompt, completion) pairs.

:class:`SFTTrainer` trains any ``transformers`` causal LM (or a :class:`~aligngym.agents.policies.CausalLMPolicy`) on the
env's tokenizer with AdamW/Adam/SGD and reports eval loss and perplexity; ``agents/pretrain_reference.py`` uses it
to train the shipped reference model on ``envs/data/corpus.txt``. :func:`demonstrations` reads a task's good train
examples and :class:`SFTAgent` is the supervised row of the benchmarks (RL4LMs' "supervised").
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aligngym.agents.base import AgentConfig, MetricLogger, add_batch_dim
from aligngym.agents.lm_agent import LMAgent, LMAgentConfig
from aligngym.agents.policies import CausalLMPolicy, check_vocab
from aligngym.agents.sampling import positions_from_mask
from aligngym.envs.device import resolve_device
from aligngym.envs.reference import load_causal_lm
from aligngym.envs.tokenization import TextTokenizer, load_tokenizer

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclasses.dataclass
class SFTConfig:
    """Hyper-parameters of :class:`SFTTrainer`.

    :param learning_rate: peak step size (linear warm-up over ``warmup_steps``, then cosine decay to
        ``min_lr_ratio`` * peak by ``max_steps``).
    :param optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (momentum 0.9).
    :param weight_decay: AdamW / SGD weight decay.
    :param batch_size: sequences per step.
    :param block_size: tokens per training sequence (corpus mode: windows that start at a document start and run
        on across the EOS-separated documents that follow; pairs mode: longer pairs are cut).
    :param max_steps: optimizer steps of :meth:`SFTTrainer.train` (and the length of the LR schedule).
    :param max_seconds: training wall-time budget over all ``train`` calls (0: none); with a budget the schedule
        follows whichever of steps and seconds runs out first, so the learning rate still decays in time.
    :param eval_fraction: share of documents/pairs held out for :meth:`SFTTrainer.evaluate`.
    :param eval_every: evaluate every this many steps (0: only at the end of ``train``).
    :param max_grad_norm: gradient clipping (0: off).
    :param seed: data order and held-out split.
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    :param log_dir: TensorBoard directory (``losses/train_loss``, ``charts/eval_loss``, ``charts/perplexity``).
    """

    learning_rate: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    batch_size: int = 16
    block_size: int = 64
    max_steps: int = 1000
    max_seconds: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    eval_fraction: float = 0.05
    eval_every: int = 0
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "auto"
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("batch_size", "block_size", "max_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


def read_corpus(source: str | Path | Sequence[str]) -> list[str]:
    """Documents of a corpus: a text file (one document per non-empty line) or a list of strings."""
    if isinstance(source, str | Path) and Path(source).is_file():
        with open(source, encoding="utf-8") as fh:
            return [line.strip() for line in fh if line.strip()]
    if isinstance(source, str | Path):
        raise FileNotFoundError(f"corpus {str(source)!r} is not a file; pass a path or a list of documents")
    docs = [str(d) for d in source if str(d).strip()]
    if not docs:
        raise ValueError("the corpus is empty")
    return docs


class SFTTrainer:
    """Causal-LM cross-entropy training of a model on the env's tokenizer.

    ``SFTTrainer(model, tokenizer, config, corpus=...)`` trains on documents (EOS-separated, next-token loss on every
    token); ``pairs=[(prompt, completion), ...]`` trains on completions only (loss on the completion tokens and the
    EOS after them, prompt tokens masked). :meth:`evaluate` gives the held-out mean loss per token and perplexity.

    :param model: a ``transformers`` causal LM, a :class:`CausalLMPolicy` (its LM is trained) or a spec for
        :func:`~aligngym.envs.reference.load_causal_lm`.
    :param tokenizer: the env's tokenizer (default: the shipped one); the model must have ``len(tokenizer)`` ids.
    :raises ValueError: on a vocabulary mismatch, or when both/neither of ``corpus`` and ``pairs`` are given.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        config: SFTConfig | None = None,
        corpus: str | Path | Sequence[str] | None = None,
        pairs: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self.config = config if config is not None else SFTConfig()
        cfg = self.config
        self.tokenizer: TextTokenizer = load_tokenizer(tokenizer)
        self.policy = model if isinstance(model, CausalLMPolicy) else None
        self.model: nn.Module = model.model if isinstance(model, CausalLMPolicy) else load_causal_lm(model)
        check_vocab(self.model, self.tokenizer, what="SFT")
        self.device = resolve_device(cfg.device)
        self.model.to(self.device)
        if (corpus is None) == (pairs is None):
            raise ValueError("pass exactly one of corpus= (documents) or pairs= ((prompt, completion) pairs)")
        self.rng = np.random.default_rng(cfg.seed)
        self.eos = self.tokenizer.eos_id if self.tokenizer.eos_id is not None else self.tokenizer.pad_id
        self.mode = "corpus" if corpus is not None else "pairs"
        if corpus is not None:
            docs = read_corpus(corpus)
            order = self.rng.permutation(len(docs))
            n_eval = round(len(docs) * cfg.eval_fraction)
            self.eval_docs = [docs[i] for i in order[:n_eval]]
            self.train_docs = [docs[i] for i in sorted(order[n_eval:])]
            self._train_stream, self._train_starts = self._stream(self.train_docs)
            self._eval_stream, self._eval_starts = self._stream(self.eval_docs)
            if len(self._train_stream) < 2:
                raise ValueError("the training corpus encodes to fewer than 2 tokens")
        else:
            assert pairs is not None
            rows = [self._encode_pair(p, c) for p, c in pairs]
            if not rows:
                raise ValueError("pairs is empty")
            order = self.rng.permutation(len(rows))
            n_eval = round(len(rows) * cfg.eval_fraction)
            self.eval_pairs = [rows[i] for i in order[:n_eval]]
            self.train_pairs = [rows[i] for i in order[n_eval:]]
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.seconds = 0.0  # training wall time so far (all train calls)
        self.logger = MetricLogger(cfg.log_dir)

    # -- data ------------------------------------------------------------------------------------------------------
    def _stream(self, docs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All documents as one int64 token stream, each followed by EOS, and the start offset of each document."""
        if not docs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        encoded = self.tokenizer.encode_batch(list(docs))
        lengths = np.array([len(e) + 1 for e in encoded])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        stream = np.fromiter(
            (t for e in encoded for t in (*e, self.eos)), dtype=np.int64, count=int(lengths.sum())
        )
        return stream, starts

    def _encode_pair(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        p = self.tokenizer.encode(prompt) or [self.tokenizer.bos_id]
        return p, [*self.tokenizer.encode(completion), self.eos]

    def _window(self, stream: np.ndarray, start: int) -> np.ndarray:
        w = stream[start : start + self.config.block_size + 1]
        if len(w) < self.config.block_size + 1:  # the tail of the stream: wrap to its beginning
            w = np.concatenate([w, stream[: self.config.block_size + 1 - len(w)]])
        return w

    def _corpus_batch(self, starts: np.ndarray, stream: np.ndarray) -> tuple[torch.Tensor, ...]:
        rows = np.stack([self._window(stream, int(s)) for s in starts])
        ids = torch.as_tensor(rows[:, :-1])
        labels = torch.as_tensor(rows[:, 1:])
        return ids, torch.ones_like(ids), labels

    def _pairs_batch(self, rows: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, ...]:
        seqs = []
        for p, c in rows:
            full = (p + c)[: self.config.block_size + 1]
            seqs.append((full, len(p)))
        width = max(len(s) for s, _ in seqs) - 1
        ids = torch.full((len(seqs), width), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, (s, n_prompt) in enumerate(seqs):
            n = len(s) - 1
            ids[i, :n] = torch.as_tensor(s[:-1])
            mask[i, :n] = 1
            lab = torch.as_tensor(s[1:])
            lab[: max(n_prompt - 1, 0)] = -100  # predict only completion tokens
            labels[i, :n] = lab
        return ids, mask, labels

    def _train_batch(self) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        if self.mode == "corpus":
            starts = self._train_starts[self.rng.integers(len(self._train_starts), size=cfg.batch_size)]
            return self._corpus_batch(starts, self._train_stream)
        idx = self.rng.integers(len(self.train_pairs), size=cfg.batch_size)
        return self._pairs_batch([self.train_pairs[i] for i in idx])

    # -- optimisation ----------------------------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.learning_rate)
        return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)

    def lr_at(self, step: int, seconds: float = 0.0) -> float:
        """Learning rate of optimizer step ``step`` (0-based) after ``seconds`` of training: linear warm-up, then
        cosine decay over the steps (or over ``max_seconds``, when that budget runs out first)."""
        cfg = self.config
        if step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        if cfg.max_seconds:
            progress = max(progress, seconds / cfg.max_seconds)
        progress = min(1.0, progress)
        floor = cfg.learning_rate * cfg.min_lr_ratio
        return floor + (cfg.learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def loss_on(
        self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy (nats/token) over labels != -100, and the number of such tokens."""
        ids, mask, labels = ids.to(self.device), mask.to(self.device), labels.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
        n = int((labels != -100).sum())
        loss = nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
        )
        return loss, n

    def train(self, steps: int | None = None) -> dict[str, float]:
        """Take ``steps`` optimizer steps (default: the rest of ``max_steps``); returns the last metrics."""
        cfg = self.config
        end = cfg.max_steps if steps is None else self.step + steps
        t0 = time.perf_counter()
        self.model.train()
        metrics: dict[str, float] = {}
        running: list[float] = []
        while self.step < end:
            seconds = self.seconds + time.perf_counter() - t0
            if cfg.max_seconds and seconds > cfg.max_seconds:
                break
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.step, seconds)
            loss, _ = self.loss_on(*self._train_batch())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.step += 1
            running.append(float(loss.detach()))
            if self.step % 10 == 0:
                self.logger.log(self.step, **{"losses/train_loss": float(np.mean(running[-10:]))})
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                metrics = self.evaluate()
                self.model.train()
        self.model.eval()
        metrics = {
            "train_loss": float(np.mean(running[-20:])) if running else float("nan"),
            **self.evaluate(),
        }
        metrics["steps"] = float(self.step)
        self.seconds += time.perf_counter() - t0
        metrics["seconds"] = self.seconds
        return metrics

    @torch.no_grad()
    def evaluate(self, max_batches: int = 50) -> dict[str, float]:
        """Held-out mean cross-entropy per token (``eval_loss``, nats) and ``perplexity`` = exp(eval_loss)."""
        cfg = self.config
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        if self.mode == "corpus":
            stream = self._eval_stream
            n_blocks = (len(stream) - 1) // cfg.block_size
            starts = np.arange(min(n_blocks, max_batches * cfg.batch_size)) * cfg.block_size
            batches = [
                self._corpus_batch(starts[i : i + cfg.batch_size], stream)
                for i in range(0, len(starts), cfg.batch_size)
            ]
        else:
            rows = self.eval_pairs[: max_batches * cfg.batch_size]
            batches = [
                self._pairs_batch(rows[i : i + cfg.batch_size]) for i in range(0, len(rows), cfg.batch_size)
            ]
        for batch in batches:
            loss, n = self.loss_on(*batch)
            total += float(loss) * n
            count += n
        if was_training:
            self.model.train()
        if count == 0:
            return {"eval_loss": float("nan"), "perplexity": float("nan")}
        mean = total / count
        out = {"eval_loss": mean, "perplexity": float(math.exp(min(mean, 50.0)))}
        self.logger.log(self.step, **{"charts/eval_loss": mean, "charts/perplexity": out["perplexity"]})
        return out

    def save(self, path: str | Path) -> Path:
        """Write the trained LM as a ``save_pretrained`` directory (or the whole policy when given one)."""
        if self.policy is not None:
            return self.policy.save_pretrained(path)
        out = Path(path)
        self.model.save_pretrained(str(out), safe_serialization=True)  # type: ignore[operator]
        return out


def _joined(prompt: str, completion: str) -> str:
    """The completion as the policy would write it after ``prompt``: with a leading space when neither side has one
    (the env's completions continue the prompt text, so a demonstration without it teaches a different token)."""
    if completion and not completion[0].isspace() and prompt and not prompt[-1].isspace():
        return " " + completion
    return completion


def demonstrations(runtime: Any) -> list[tuple[str, str]]:
    """The good examples of an env's prompt rows as (prompt, completion) pairs, for supervised fine-tuning.

    Procedural rows (``aligngym/Copy-Token-v0``, ...) give each instance's canonical answer, which the exact checker
    accepts, written with the env's action tokens. Rows with a ``reference`` column (Keywords, Similarity) give
    (prompt, reference); the Preference task gives the chosen answers of the shipped preference pairs of the same
    split (``preference_pairs.jsonl``; a pair's prompt is its own, not one of the env's prompts). Only the env's split
    is read: a train env never sees test rows. A completion gets a leading space when the prompt does not end with
    one (as the policy continues the prompt).

    :param runtime: the env's ``TaskRuntime``.
    :raises ValueError: when the task has no demonstrations (Sentiment ships prompts only).
    """
    from aligngym.envs.procedural_tasks import demonstration_pairs, is_procedural_rows

    rows = runtime.rows
    if is_procedural_rows(rows):  # procedural tasks: the checker-correct answer of each row of the split
        return demonstration_pairs(rows)
    if rows and all(isinstance(r.get("reference"), str) and r["reference"] for r in rows):
        return [(r["prompt"], _joined(r["prompt"], r["reference"])) for r in rows]
    if runtime.task.name == "Preference":
        import json

        from aligngym.envs.data import data_path

        splits = {r.get("split") for r in rows}
        pairs: dict[tuple[str, str], None] = {}
        with open(data_path("preference_pairs.jsonl"), encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    if row.get("split") in splits:
                        pairs[(row["prompt"], _joined(row["prompt"], row["chosen"]))] = None
        if pairs:
            return list(pairs)
    raise ValueError(
        f"task {runtime.task.name!r} has no demonstrations: expected a 'reference' column in every prompt row "
        "(or the Preference task's chosen answers)"
    )


#: seed of the keyword picks of :func:`corpus_demonstrations` (the reference LM's own keyword-copy lines use 0)
CORPUS_DEMO_SEED = 1


def corpus_demonstrations(runtime: Any, n: int, seed: int = CORPUS_DEMO_SEED) -> list[tuple[str, str]]:
    """``n`` extra Keywords demonstrations: ``"Write a sentence using: w1, w2, w3."`` -> a sentence that uses them,
    built from the *train* documents of the reference LM's corpus split (``corpus_split.json``) by
    :func:`aligngym.agents.pretrain_reference.keyword_rows` with new keyword picks (``seed``). No test row is read:
    the task's test sentences are not in the corpus, and a row whose prompt is a task prompt of any split is dropped.

    :param runtime: the env's ``TaskRuntime`` (must be the Keywords task).
    :param n: rows wanted (fewer when the train documents run out).
    :raises ValueError: for another task or a negative ``n``.
    """
    if runtime.task.name != "Keywords":
        raise ValueError(
            f"corpus demonstrations are CommonGen-style Keywords rows; task is {runtime.task.name!r}"
        )
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    from aligngym.agents.pretrain_reference import keyword_rows, load_split
    from aligngym.envs.data import data_path
    from aligngym.envs.prompts import load_prompt_rows

    train_docs, _, _ = load_split(data_path("corpus.txt"), data_path("corpus_split.json"))
    task_prompts = {r["prompt"] for r in load_prompt_rows(runtime.task, split="all")}
    rows = [
        r for r in keyword_rows(train_docs, n + len(task_prompts), seed) if r["prompt"] not in task_prompts
    ]
    return [(r["prompt"], _joined(r["prompt"], r["reference"])) for r in rows[:n]]


@dataclasses.dataclass
class SFTAgentConfig(LMAgentConfig, AgentConfig):
    """Hyper-parameters of :class:`SFTAgent` (plus the agent and LM fields).

    :param sft_steps: optimizer steps of supervised fine-tuning, taken on the first ``learn`` call.
    :param learning_rate: peak SFT step size (warm-up then cosine decay, :class:`SFTConfig`).
    :param batch_size: (prompt, completion) pairs per step.
    :param temperature: sampling temperature of ``predict`` when not ``deterministic``.
    :param corpus_demonstrations: Keywords only: also fine-tune on this many CommonGen-style rows built from the
        reference LM's train documents (:func:`corpus_demonstrations`); 0: the task's train rows only.
    """

    sft_steps: int = 200
    learning_rate: float = 3e-4
    batch_size: int = 16
    temperature: float = 1.0
    corpus_demonstrations: int = 0

    def __post_init__(self) -> None:
        if self.sft_steps < 0 or self.batch_size <= 0 or self.learning_rate <= 0 or self.temperature <= 0:
            raise ValueError(
                f"sft_steps must be >= 0 and batch_size, learning_rate, temperature positive, got {self.sft_steps}, "
                f"{self.batch_size}, {self.learning_rate}, {self.temperature}"
            )
        if self.corpus_demonstrations < 0:
            raise ValueError(f"corpus_demonstrations must be >= 0, got {self.corpus_demonstrations}")


def warm_start_demonstrations(runtime: Any) -> list[tuple[str, str]]:
    """:func:`demonstrations` of the env's rows; when those rows have none (an env made with a practice prompt
    set, :mod:`aligngym.agents.practice_prompts`, which has keywords but no reference sentences), the demonstrations
    of the task's shipped *train* split instead. Test rows are never read.

    :raises ValueError: when neither has demonstrations (Sentiment ships prompts only).
    """
    try:
        return demonstrations(runtime)
    except ValueError:
        from aligngym.envs.prompts import load_prompt_rows

        shipped = SimpleNamespace(task=runtime.task, rows=load_prompt_rows(runtime.task, split="train"))
        if runtime.rows == shipped.rows:
            raise
        pairs = demonstrations(shipped)
        logger.info(
            "the env's prompts carry no demonstrations; SFT uses the %d train rows of task %s",
            len(pairs),
            runtime.task.name,
        )
        return pairs


def supervised_fine_tune(policy: CausalLMPolicy, runtime: Any, steps: int, config: Any) -> dict[str, float]:
    """Fine-tune ``policy``'s LM on :func:`warm_start_demonstrations` of ``runtime`` for ``steps`` steps (no
    held-out part).

    :param policy: the policy to train in place (left in eval mode).
    :param runtime: the env's ``TaskRuntime``.
    :param steps: optimizer steps.
    :param config: a config with ``learning_rate``, ``seed``, ``device`` and optionally ``batch_size`` and
        ``corpus_demonstrations`` (extra Keywords rows from the reference LM's train documents).
    :returns: the trainer's last metrics (``train_loss``, ``steps``, ``seconds``).
    """
    sft_cfg = SFTConfig(
        learning_rate=config.learning_rate,
        batch_size=getattr(config, "batch_size", 16),
        block_size=runtime.max_prompt_tokens + runtime.max_new_tokens,
        max_steps=max(steps, 1),
        warmup_steps=min(20, max(steps // 10, 1)),
        eval_fraction=0.0,
        seed=config.seed,
        device=str(config.device),
    )
    pairs = warm_start_demonstrations(runtime)
    extra = int(getattr(config, "corpus_demonstrations", 0) or 0)
    if extra:
        pairs = pairs + corpus_demonstrations(runtime, extra)
    trainer = SFTTrainer(policy, runtime.tokenizer, sft_cfg, pairs=pairs)
    metrics = trainer.train(steps) if steps > 0 else {}
    policy.eval()
    return metrics


class SFTAgent(LMAgent):
    """Supervised row: the shipped reference LM fine-tuned on the task's good train examples, then decoding.

    The first ``learn`` call takes ``sft_steps`` steps of :func:`supervised_fine_tune` (the step budget only counts:
    SFT learns from demonstrations, not from env steps); ``predict`` gives one next token on ``-Token-v0`` envs and a
    whole completion on ``-Sequence-v0`` envs, greedy when ``deterministic``.

    :param env: a token- or sequence-level aligngym env of a task with :func:`demonstrations`.
    """

    Config: ClassVar[type[AgentConfig]] = SFTAgentConfig
    algo_name: ClassVar[str] = "sft"
    needs_reference = False
    trains = False

    def __init__(self, env: Any, config: SFTAgentConfig | None = None) -> None:
        super().__init__(env, config)
        self.config: SFTAgentConfig
        demonstrations(self.runtime)  # fail at construction, not after the first chunk
        self.sequence_level = "completion_len" in self.signature
        self.sft_metrics: dict[str, float] = {}

    def learn(self, total_timesteps: int, callback: Any = None) -> SFTAgent:
        """Fine-tune on the first call; count ``total_timesteps`` on every call."""
        if not self.sft_metrics and self.config.sft_steps > 0:
            self.sft_metrics = supervised_fine_tune(
                self.policy, self.runtime, self.config.sft_steps, self.config
            )
            self.logger.log(self.num_timesteps, **{f"sft/{k}": v for k, v in self.sft_metrics.items()})
        self.num_timesteps += int(total_timesteps)
        return self

    @torch.no_grad()
    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Next action(s) (token envs) or whole completions (sequence envs); sampled unless ``deterministic``."""
        batch, single = add_batch_dim(obs)
        rt, cfg = self.runtime, self.config
        ids = torch.as_tensor(batch["input_ids"], device=self.device)
        mask = torch.as_tensor(batch["attention_mask"], device=self.device)
        if self.sequence_level:
            p = rt.max_prompt_tokens
            out = self.policy.sample(
                ids[:, :p],
                mask[:, :p],
                rt.max_new_tokens,
                temperature=cfg.temperature,
                greedy=deterministic,
                eos_action=self.eos_action,
                pad_action=self.eos_action if self.eos_action is not None else 0,
                action_masks=self.step_masks,
                generator=self.generator,
            )
            actions = out.actions.cpu().numpy().astype(np.int64)
        else:
            done = mask[:, rt.max_prompt_tokens :].sum(-1).clamp(max=rt.max_new_tokens - 1)
            logits = self.policy(ids, mask).float().masked_fill(~self.step_masks[done], float("-inf"))
            if deterministic:
                chosen = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / cfg.temperature, dim=-1)
                chosen = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
            actions = chosen.cpu().numpy().astype(np.int64)
        return (actions[0] if single else actions), state
