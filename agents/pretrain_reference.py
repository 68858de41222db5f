"""Train the shipped default reference model: a small GPT-2 on the train documents of ``envs/data/corpus.txt``.

``python -m aligngym.agents.pretrain_reference`` writes ``envs/data/reference_lm/`` (``config.json``,
``model.safetensors`` and ``metadata.json``): the model behind ``reference_model="default"`` and the default PPO/GRPO
policy. The corpus is split by document first (``envs/data/corpus_split.json``, made by ``build_corpus.py``); every
derived line (CommonGen-style "Write a sentence using: w1, w2, w3. <sentence>" lines, the keyword task's train rows)
comes from the train documents only, and the held-out perplexity is measured on the held-out documents, which share
no sentence with any training line. Training stops after a fixed number of optimizer steps (seeded, fixed thread
count), so a rerun on the same software reproduces the weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aligngym.agents.lm import CausalLMPolicy
from aligngym.agents.sft import SFTConfig, SFTTrainer, read_corpus
from aligngym.envs.data import data_path
from aligngym.envs.data.build_corpus import corpus_sha256, sentences
from aligngym.envs.reference import default_reference_dir
from aligngym.envs.tokenization import TextTokenizer, load_tokenizer

#: the exact command that produced the shipped weights (recorded in ``metadata.json``)
COMMAND = "python -m aligngym.agents.pretrain_reference"
METADATA_FILE = "metadata.json"
SAMPLE_PROMPTS = (
    "The hotel room was",
    "I watched this film last night and",
    "Write a sentence using: dog, frisbee, catch.",
    "Q: How do I keep my kitchen clean?\nA:",
)

#: words never used as synthetic keywords
STOPWORDS = frozenset(
    """a an the and or but so if of to in on at by for from with about into over after before under than then this
    that these those it its it's is are was were be been being have has had do does did not no very really quite
    just too also still even much more most some any all every each other another such only own same few many
    i me my we our you your he him his she her they them their what which who whom when where why how can could
    would should will shall may might must here there again once both out up down off while because until
    during through between against whose one two three""".split()
)


def keyword_rows(docs: list[str], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` CommonGen-style rows built from corpus sentences: ``prompt`` ("Write a sentence using: w1, w2, w3."),
    ``keywords`` (three content words of the sentence, shuffled) and ``reference`` (the sentence). Lines that are
    already prompts (``Write ...``, ``Q: ...``, ``Paraphrase: ...``) are skipped. Usable as a ``Keywords`` prompt set.
    """
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    candidates = [d for d in docs if not re.match(r"^(Write|Q:|Paraphrase)", d) and 4 <= len(d.split()) <= 18]
    for i in rng.permutation(len(candidates)):
        words = sorted(
            {w for w in re.findall(r"[a-z]+", candidates[i].lower()) if len(w) > 2 and w not in STOPWORDS}
        )
        if len(words) < 3:
            continue
        pick = [words[j] for j in rng.choice(len(words), size=3, replace=False)]
        prompt = f"Write a sentence using: {', '.join(pick)}."
        out.append({"prompt": prompt, "keywords": pick, "reference": candidates[i]})
        if len(out) >= n:
            break
    return out


def keyword_examples(docs: list[str], n: int, seed: int = 0) -> list[str]:
    """:func:`keyword_rows` as training lines: ``prompt reference``."""
    return [f"{r['prompt']} {r['reference']}" for r in keyword_rows(docs, n, seed)]


def task_examples() -> list[str]:
    """Train rows of the keyword prompt set as ``prompt reference`` lines (test rows are left out)."""
    with open(data_path("keywords.jsonl"), encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [
        f"{r['prompt']} {r['reference']}" for r in rows if r.get("split") == "train" and r.get("reference")
    ]


@dataclasses.dataclass
class ReferenceData:
    """What the reference LM trains and is evaluated on.

    :param train_lines: the train documents' lines, then the derived lines (keyword-copy lines, task examples).
    :param eval_lines: the held-out documents' lines (never trained on).
    :param eval_keyword_lines: keyword-copy lines built from the held-out documents only (a second held-out figure:
        how well the model writes a held-out sentence after its keyword prompt).
    :param record: counts and hashes for ``metadata.json``.
    """

    train_lines: list[str]
    eval_lines: list[str]
    eval_keyword_lines: list[str]
    record: dict[str, Any]


def contaminated(train_lines: Sequence[str], eval_lines: Sequence[str]) -> list[str]:
    """Sentences (normalised as in ``build_corpus.sentences``) that occur in both a train and an eval line."""
    held = {s for line in eval_lines for s in sentences(line)}
    return sorted({s for line in train_lines for s in sentences(line) if s in held})


def load_split(corpus: Path, split: Path) -> tuple[list[str], list[str], dict[str, Any]]:
    """The (train, held-out) lines of ``corpus`` under the document split recorded in ``split``.

    :raises ValueError: when the split was made from another corpus (its ``corpus_sha256`` differs): rerun
        ``python envs/data/build_corpus.py``.
    """
    lines = read_corpus(corpus)
    with open(split, encoding="utf-8") as fh:
        record = json.load(fh)
    if record["corpus_sha256"] != corpus_sha256(lines):
        raise ValueError(
            f"{split} was made from another corpus than {corpus} (sha256 {record['corpus_sha256'][:12]}... != "
            f"{corpus_sha256(lines)[:12]}...); rerun `python envs/data/build_corpus.py` to rebuild both"
        )
    held = {n - 1 for doc in record["eval_line_numbers"] for n in doc}
    train = [line for i, line in enumerate(lines) if i not in held]
    evaluation = [line for i, line in enumerate(lines) if i in held]
    return train, evaluation, record


def reference_data(
    corpus: Path | None = None, split: Path | None = None, keyword_lines: int = 8000, seed: int = 0
) -> ReferenceData:
    """Build the reference LM's data: split by document, then derive every extra line from the train side.

    :param corpus: the corpus (default ``envs/data/corpus.txt``, one line per line).
    :param split: its document split (default ``envs/data/corpus_split.json``).
    :param keyword_lines: number of keyword-copy lines made from train documents.
    :param seed: seeds the keyword-copy lines.
    :raises ValueError: if a train document shares a sentence with a held-out one (a split that ``build_corpus.py``
        makes cannot; derived lines that would are dropped first and counted in ``record``).
    """
    corpus = data_path("corpus.txt") if corpus is None else Path(corpus)
    split = data_path("corpus_split.json") if split is None else Path(split)
    train_docs, eval_lines, split_record = load_split(corpus, split)
    held = {s for line in eval_lines for s in sentences(line)}
    tasks = task_examples()
    derived = keyword_examples(train_docs, keyword_lines, seed) + tasks
    kept = [line for line in derived if not held.intersection(sentences(line))]
    train_lines = train_docs + kept
    leaked = contaminated(train_lines, eval_lines)
    if leaked:
        raise ValueError(
            f"the split {split} is contaminated: train and held-out documents share {len(leaked)} sentences, "
            f"e.g. {leaked[:3]}; rebuild it with `python envs/data/build_corpus.py`"
        )
    train_sents = {s for line in train_lines for s in sentences(line)}
    eval_keyword_lines = [  # keyword prompts too must be new: drop a line whose prompt a training line has
        line
        for line in keyword_examples(eval_lines, len(eval_lines), seed)
        if not train_sents.intersection(sentences(line))
    ]
    record = {
        "corpus": corpus.name,
        "corpus_sha256": split_record["corpus_sha256"],
        "split_file": split.name,
        "split_seed": split_record["seed"],
        "split_unit": split_record["unit"],
        "sentence_rule": split_record["sentence_rule"],
        "eval_fraction": split_record["eval_fraction"],
        "train_documents": split_record["train_documents"],
        "eval_documents": split_record["eval_documents"],
        "train_corpus_lines": len(train_docs),
        "eval_lines": len(eval_lines),
        "eval_lines_sha256": hashlib.sha256("\n".join(eval_lines).encode("utf-8")).hexdigest(),
        "keyword_copy_lines": len(derived) - len(tasks),
        "task_example_lines": len(tasks),
        "derived_lines_dropped_as_overlapping": len(derived) - len(kept),
        "train_lines": len(train_lines),
        "eval_keyword_lines": len(eval_keyword_lines),
        "shared_sentences_train_eval": 0,
    }
    return ReferenceData(train_lines, eval_lines, eval_keyword_lines, record)


@torch.no_grad()
def heldout_loss(
    model: torch.nn.Module, tok: TextTokenizer, lines: Sequence[str], batch_size: int = 64
) -> dict[str, float]:
    """Mean next-token cross-entropy (nats/token) of whole lines, each scored on its own: the input is EOS + the
    line, and the targets are the line's tokens and the closing EOS (cut at the model's context length).

    :returns: ``loss``, ``perplexity`` = exp(loss) and ``tokens`` (the number of scored tokens).
    """
    if tok.eos_id is None:
        raise ValueError("held-out loss needs a tokenizer with an EOS token")
    n_ctx = int(getattr(model.config, "n_positions", 1024))
    seqs = [[tok.eos_id, *tok.encode(line), tok.eos_id][: n_ctx + 1] for line in lines]
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        width = max(len(s) for s in chunk) - 1
        ids = torch.full((len(chunk), width), tok.pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, s in enumerate(chunk):
            ids[j, : len(s) - 1] = torch.as_tensor(s[:-1])
            labels[j, : len(s) - 1] = torch.as_tensor(s[1:])
            mask[j, : len(s) - 1] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(loss)
        count += int((labels != -100).sum())
    model.train(was_training)
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(mean), "tokens": float(count)}


def build_model(vocab_size: int, eos_id: int, pad_id: int, args: argparse.Namespace) -> Any:
    """A GPT-2 of the given size over the default tokenizer's ids (dropout only while pretraining); its initial
    weights and the dropout draws come from ``torch.manual_seed(args.seed)``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=args.n_positions,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(args.seed)
    return GPT2LMHeadModel(config)


def training_config(args: argparse.Namespace) -> SFTConfig:
    """The SFT configuration of the run: a fixed number of optimizer steps (no wall-clock budget), no internal
    held-out split (the document split is made before, see :func:`reference_data`)."""
    return SFTConfig(
        learning_rate=args.lr,
        batch_size=args.batch_size,
        block_size=args.block_size,
        max_steps=args.steps,
        max_seconds=0.0,
        warmup_steps=args.warmup_steps,
        eval_fraction=0.0,
        seed=args.seed,
        device="cpu",
    )


def parser() -> argparse.ArgumentParser:
    """Command-line options; the defaults are the shipped run."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", type=Path, default=default_reference_dir())
    p.add_argument("--corpus", type=Path, default=data_path("corpus.txt"))
    p.add_argument("--split", type=Path, default=data_path("corpus_split.json"))
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-positions", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument(
        "--steps", type=int, default=2250, help="optimizer steps: training stops here, never on time"
    )
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2, help="torch threads (results are bit-exact per count)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keyword-examples", type=int, default=8000, help="synthetic CommonGen-style lines")
    p.add_argument(
        "--eval-every", type=int, default=500, help="print the held-out loss every this many steps"
    )
    return p


def samples(
    model: torch.nn.Module,
    prompts: Sequence[str],
    max_new_tokens: int = 24,
    seed: int = 0,
    greedy: bool = False,
) -> list[str]:
    """Continuations of ``prompts`` with the default tokenizer: greedy, or sampled (temperature 0.8, top-k 40)."""
    tok = load_tokenizer("default")
    policy = CausalLMPolicy(model, tokenizer=tok, value_head=False)
    enc = [tok.encode(p) for p in prompts]
    width = max(len(e) for e in enc)
    ids = torch.full((len(enc), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, width - len(e) :] = torch.as_tensor(e)
        mask[i, width - len(e) :] = 1
    gen = torch.Generator().manual_seed(seed)
    kwargs: dict[str, Any] = (
        {"greedy": True} if greedy else {"temperature": 0.8, "top_k": 40, "generator": gen}
    )
    out = policy.sample(ids, mask, max_new_tokens, eos_action=tok.eos_id, **kwargs)
    return [tok.decode(row[: int(n)].tolist()) for row, n in zip(out.tokens, out.lengths)]


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names, shapes and float32 bytes in name order): equal iff the weights are."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(args: argparse.Namespace, data: ReferenceData, log: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train a fresh model on ``data.train_lines`` for exactly ``args.steps`` optimizer steps.

    :returns: the model (inference config: no dropout, eval mode) and the training figures.
    """
    torch.set_num_threads(args.threads)
    tok = load_tokenizer("default")
    if tok.eos_id is None:
        raise ValueError("the default tokenizer has no EOS token")
    model = build_model(len(tok), tok.eos_id, tok.pad_id, args)
    cfg = training_config(args)
    trainer = SFTTrainer(model, tok, cfg, corpus=data.train_lines)
    before = heldout_loss(model, tok, data.eval_lines)
    t0 = time.perf_counter()
    metrics: dict[str, float] = {}
    while trainer.step < cfg.max_steps:
        metrics = trainer.train(steps=min(args.eval_every, cfg.max_steps - trainer.step))
        if log:
            held = heldout_loss(model, tok, data.eval_lines)
            print(
                f"  step {trainer.step}: train loss {metrics['train_loss']:.3f}, held-out loss {held['loss']:.3f} "
                f"(ppl {held['perplexity']:.2f}), {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    seconds = time.perf_counter() - t0
    for attr in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):  # inference config: no dropout
        setattr(model.config, attr, 0.0)
    model.eval()
    return model, {
        "steps": trainer.step,
        "train_loss_last_20": metrics.get("train_loss", float("nan")),
        "initial_heldout_loss": before["loss"],
        "seconds": seconds,
    }


def machine() -> str:
    """The CPU this ran on: its model name, architecture, core count and the torch threads used."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def recorded_command(argv: Sequence[str]) -> str:
    """The command line to record: :data:`COMMAND` and the options given, less ``--out`` (where the files go does
    not change them)."""
    kept: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            kept.append(a)
    return " ".join([COMMAND, *kept])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    data = reference_data(args.corpus, args.split, args.keyword_examples, args.seed)
    rec = data.record
    print(
        f"{rec['train_corpus_lines']} train corpus lines ({rec['train_documents']} documents) + "
        f"{rec['keyword_copy_lines'] + rec['task_example_lines'] - rec['derived_lines_dropped_as_overlapping']} "
        f"derived lines; held out {rec['eval_lines']} lines ({rec['eval_documents']} documents); "
        f"shared sentences train/held-out: 0"
    )
    model, fit = train(args, data)
    tok = load_tokenizer("default")
    held = heldout_loss(model, tok, data.eval_lines)
    held_kw = heldout_loss(model, tok, data.eval_keyword_lines)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{fit['steps']} steps in {fit['seconds']:.0f} s: held-out loss {fit['initial_heldout_loss']:.3f} -> "
        f"{held['loss']:.3f} nats/token, perplexity {held['perplexity']:.2f} over {held['tokens']:.0f} tokens "
        f"(keyword-copy lines from held-out documents: {held_kw['perplexity']:.2f})"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out), safe_serialization=True)
    extra = args.out / "generation_config.json"
    if extra.exists():
        extra.unlink()  # config.json + model.safetensors + metadata.json are all that ships
    import transformers

    metadata = {
        "command": recorded_command(sys.argv[1:] if argv is None else argv),
        "model": {
            "architecture": "GPT2LMHeadModel",
            "n_layer": args.n_layer,
            "n_embd": args.n_embd,
            "n_head": args.n_head,
            "n_positions": args.n_positions,
            "vocab_size": len(tok),
            "parameters": n_params,
            "tokenizer": "envs/data/tokenizer.json",
            "weights_sha256": weights_sha256(model),
        },
        "training": {
            "steps": fit["steps"],
            "stop": "fixed number of optimizer steps (no wall-clock budget)",
            "batch_size": args.batch_size,
            "block_size": args.block_size,
            "learning_rate": args.lr,
            "warmup_steps": args.warmup_steps,
            "schedule": "linear warm-up, cosine decay to 0.1 x peak at the last step",
            "dropout": args.dropout,
            "seed": args.seed,
            "torch_threads": args.threads,
            "train_loss_last_20_steps": round(fit["train_loss_last_20"], 4),
            "seconds": round(fit["seconds"], 1),
            "machine": machine(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "data": rec,
        "heldout": {
            "what": "held-out documents of corpus.txt, each line scored on its own (EOS + line -> line + EOS)",
            "loss_nats_per_token": round(held["loss"], 4),
            "perplexity": round(held["perplexity"], 3),
            "tokens": int(held["tokens"]),
            "keyword_copy_perplexity": round(held_kw["perplexity"], 3),
            "keyword_copy_tokens": int(held_kw["tokens"]),
        },
    }
    (args.out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in args.out.iterdir()) / 1e6
    print(f"wrote {args.out} ({size:.1f} MB, {n_params / 1e6:.2f} M parameters)")
    for prompt, text in zip(SAMPLE_PROMPTS, samples(model, SAMPLE_PROMPTS)):
        print(f"  {prompt!r} -> {text!r}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")
    return metadata


if __name__ == "__main__":
    main()
