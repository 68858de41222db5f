"""Train the shipped default reference model: a small GPT-2 on ``envs/data/corpus.txt`` with the default tokenizer.

``python -m aligngym.agents.pretrain_reference`` writes ``envs/data/reference_lm/`` (``config.json`` +
``model.safetensors``), the model behind ``reference_model="default"`` and the default PPO/GRPO policy. It runs in
about ten minutes on one CPU thread and prints the held-out perplexity and a few samples. Besides the corpus it
trains on CommonGen-style lines made from corpus sentences ("Write a sentence using: w1, w2, w3. <sentence>", the
words drawn from the sentence) and the train rows of the keyword prompt set, so the model can copy concepts into a
sentence at all (test prompts are never used).
"""

from __future__ import annotations

import argparse
import re
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aligngym.agents.lm import CausalLMPolicy, default_reference_dir
from aligngym.agents.sft import SFTConfig, SFTTrainer, read_corpus
from aligngym.envs.tasks import data_path, read_jsonl
from aligngym.envs.tokenization import load_tokenizer

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
    rows = read_jsonl(data_path("keywords.jsonl"))
    return [
        f"{r['prompt']} {r['reference']}" for r in rows if r.get("split") == "train" and r.get("reference")
    ]


def build_model(vocab_size: int, eos_id: int, pad_id: int, args: argparse.Namespace) -> Any:
    """A GPT-2 of the given size over the default tokenizer's ids (dropout only while pretraining)."""
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


def samples(
    model: torch.nn.Module, prompts: tuple[str, ...], max_new_tokens: int = 24, seed: int = 0
) -> list[str]:
    """Sampled continuations (temperature 0.8, top-k 40) of ``prompts`` with the default tokenizer."""
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
    out = policy.sample(
        ids, mask, max_new_tokens, temperature=0.8, top_k=40, eos_action=tok.eos_id, generator=gen
    )
    return [tok.decode(row[: int(n)].tolist()) for row, n in zip(out.tokens, out.lengths)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_reference_dir())
    parser.add_argument("--corpus", type=Path, default=data_path("corpus.txt"))
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-positions", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=2200)
    parser.add_argument("--max-seconds", type=float, default=570.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keyword-examples", type=int, default=8000, help="synthetic CommonGen-style lines")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tok = load_tokenizer("default")
    if tok.eos_id is None:
        raise ValueError("the default tokenizer has no EOS token")
    model = build_model(len(tok), tok.eos_id, tok.pad_id, args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"GPT-2 {args.n_layer}x{args.n_embd}, vocab {len(tok)}: {n_params / 1e6:.2f} M parameters")
    cfg = SFTConfig(
        learning_rate=args.lr,
        batch_size=args.batch_size,
        block_size=args.block_size,
        max_steps=args.steps,
        max_seconds=args.max_seconds,
        warmup_steps=100,
        eval_fraction=0.03,
        seed=args.seed,
        device="cpu",
    )
    docs = read_corpus(args.corpus)
    extra = keyword_examples(docs, args.keyword_examples, args.seed) + task_examples()
    print(f"{len(docs)} corpus lines + {len(extra)} keyword lines, e.g. {extra[0]!r}")
    trainer = SFTTrainer(model, tok, cfg, corpus=docs + extra)
    t0 = time.perf_counter()
    before = trainer.evaluate()
    metrics = before
    while trainer.step < cfg.max_steps and trainer.seconds < cfg.max_seconds:
        metrics = trainer.train(steps=100)
        print(
            f"  step {trainer.step}: train loss {metrics['train_loss']:.3f}, eval loss {metrics['eval_loss']:.3f}, "
            f"{trainer.seconds:.0f} s",
            flush=True,
        )
    print(
        f"{trainer.step} steps in {time.perf_counter() - t0:.0f} s: eval loss {before['eval_loss']:.3f} -> "
        f"{metrics['eval_loss']:.3f} nats/token, perplexity {before['perplexity']:.1f} -> {metrics['perplexity']:.2f}"
    )
    for attr in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):  # inference config: no dropout
        setattr(model.config, attr, 0.0)
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out), safe_serialization=True)
    extra = args.out / "generation_config.json"
    if extra.exists():
        extra.unlink()  # config.json + model.safetensors are all that ships
    size = sum(f.stat().st_size for f in args.out.iterdir()) / 1e6
    print(f"wrote {args.out} ({size:.1f} MB)")
    for prompt, text in zip(SAMPLE_PROMPTS, samples(model, SAMPLE_PROMPTS)):
        print(f"  {prompt!r} -> {text!r}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")
    return metrics


if __name__ == "__main__":
    main()
