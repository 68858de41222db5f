"""The env's reference term (``ref_logprob_coef``) per step: KV-cached as the envs run it, uncached (the old path),
and one KV-cached forward of the same model as the yardstick, at two completion lengths (part (d) of
``aligngym throughput``). Flat in the context means the per-step cost at 32 new tokens is close to that at 8.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from aligngym.benchmarks.timing import Sample, Stopwatch, _ratio, _summary, alternate

#: targets: cached per-step cost at the longest length <= 1.3x that at the shortest; <= 1.5x a KV-cached forward
REF_TARGETS = {"d_ref_flat": 1.3, "d_ref_vs_kv_forward": 1.5}


def _episode_prompts(env_id: str, batch: int, max_new_tokens: int, seed: int) -> dict[str, np.ndarray]:
    """The observation a native vector env of ``env_id`` starts its rows with (prompts left-padded)."""
    import aligngym.envs  # noqa: F401  (registers the ids)

    venv = gym.make_vec(env_id, num_envs=batch, scorer="length", max_new_tokens=max_new_tokens, gold=False)
    obs, _ = venv.reset(seed=seed)
    venv.close()
    return {k: np.array(v) for k, v in obs.items()}


def reference_episode(
    reference: Any,
    obs: dict[str, np.ndarray],
    prompt_slot: int,
    tokens: np.ndarray,
    cached: bool,
    rep: int = 0,
) -> Sample:
    """The reference term of one episode of every row, called as the token vector env calls it.

    :param reference: a :class:`~aligngym.envs.reference.ReferenceModel`.
    :param obs: the rows' start observation (``input_ids``/``attention_mask`` int (B, L)).
    :param prompt_slot: ``max_prompt_tokens`` (the column of the first new token).
    :param tokens: int (B, T) the tokens the rows write, one column per step.
    :param cached: through a fresh :class:`~aligngym.envs.reference.ReferenceKVCache` (as the envs do) or not.
    :param rep: the repetition (unused: every repetition replays the same episode).
    :return: steps done (T) and the time taken.
    """
    from aligngym.envs.reference import ReferenceKVCache

    ids, mask = obs["input_ids"].copy(), obs["attention_mask"].copy()
    B, T = tokens.shape
    cache = ReferenceKVCache(B, ids.shape[1]) if cached else None
    watch = Stopwatch()
    for t in range(T):
        reference.next_token_logprobs(ids, mask, cache=cache, tokens=tokens[:, t])
        ids[:, prompt_slot + t], mask[:, prompt_slot + t] = tokens[:, t], 1
    return Sample(T, watch.wall(), watch.cpu())


def kv_forward_episode(
    reference: Any, obs: dict[str, np.ndarray], prompt_slot: int, tokens: np.ndarray, rep: int = 0
) -> Sample:
    """The yardstick: the same model decoding the same tokens with a plain ``transformers`` KV cache (a prompt
    forward, then one forward of one token per step, next-token log-softmax each time), as ``generate`` runs it.
    """
    import torch

    from aligngym.envs.hf import cache_kwarg, output_cache

    model, dev, V = reference.model, reference.device, reference.vocab_size
    ids = torch.as_tensor(obs["input_ids"][:, :prompt_slot], device=dev)
    mask = torch.as_tensor(obs["attention_mask"][:, :prompt_slot], device=dev)
    toks = torch.as_tensor(tokens, device=dev)
    B, T = tokens.shape
    watch = Stopwatch()
    with torch.inference_mode():
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        torch.log_softmax(out.logits[:, -1, :V].float(), dim=-1)
        nxt = mask.sum(-1, keepdim=True)
        for t in range(T - 1):
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=dev)], 1)
            out = model(
                **cache_kwarg(model, output_cache(out)),
                input_ids=toks[:, t : t + 1],
                attention_mask=mask,
                position_ids=nxt + t,
                use_cache=True,
            )
            torch.log_softmax(out.logits[:, -1, :V].float(), dim=-1)
    return Sample(T, watch.wall(), watch.cpu())


def bench_reference(
    env_id: str,
    batch: int,
    lengths: Sequence[int] = (8, 32),
    *,
    reps: int,
    reference: Any = "default",
    device: str = "cpu",
    with_uncached: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-step cost (ms per batched step of ``batch`` rows) of the reference term at each completion length.

    Contenders per length, alternating: ``cached`` (the envs' path), ``uncached`` (every step re-reads the whole
    context, the path before the KV cache) and ``kv_forward`` (one KV-cached forward of the same model per step).

    :param env_id: a token-level id (its prompts and observation layout).
    :param batch: rows (B).
    :param lengths: completion lengths T; the first and last give the flatness ratio.
    :param reps: alternating repetitions.
    :param reference: what ``reference_model=`` takes (default: the shipped reference LM).
    :param device: the reference model's device.
    :param with_uncached: also time the uncached path (slow at long lengths).
    :param seed: prompts and tokens.
    """
    from aligngym.envs.reference import load_reference_model
    from aligngym.envs.tokenization import load_tokenizer

    T_max = max(lengths)
    obs = _episode_prompts(env_id, batch, T_max, seed)
    import aligngym.envs  # noqa: F401

    rt = gym.make(env_id, max_new_tokens=T_max, gold=False).unwrapped.runtime  # type: ignore[attr-defined]
    ref = load_reference_model(reference, load_tokenizer(rt.tokenizer), device=device)
    P = rt.max_prompt_tokens
    rng = np.random.default_rng(seed)
    contenders: dict[str, Callable[[int], Sample]] = {}
    for T in lengths:
        tokens = rng.integers(4, rt.vocab_size, size=(batch, T))
        sub = {k: v[:, : P + T] for k, v in obs.items()}
        contenders[f"cached_{T}"] = partial(reference_episode, ref, sub, P, tokens, True)
        if with_uncached:
            contenders[f"uncached_{T}"] = partial(reference_episode, ref, sub, P, tokens, False)
        contenders[f"kv_forward_{T}"] = partial(kv_forward_episode, ref, sub, P, tokens)
    for fn in contenders.values():  # warm up
        fn(-1)
    summary = _summary(alternate(contenders, reps))
    ms = {
        clock: {k: (None if r is None else 1e3 / r) for k, r in rates.items()}
        for clock, rates in summary["rates"].items()
    }
    lo, hi = min(lengths), max(lengths)
    ratios = {
        clock: {
            "cached_flat": _ratio(m[f"cached_{hi}"], m[f"cached_{lo}"]),
            **({"uncached_flat": _ratio(m[f"uncached_{hi}"], m[f"uncached_{lo}"])} if with_uncached else {}),
            **{f"cached_vs_kv_forward_{T}": _ratio(m[f"cached_{T}"], m[f"kv_forward_{T}"]) for T in lengths},
        }
        for clock, m in ms.items()
    }
    return {
        "batch": batch,
        "lengths": list(lengths),
        "reference": repr(ref),
        "ms_per_step": ms,
        "ratios": ratios,
        "samples": summary["samples"],
    }


def format_reference(r: dict[str, Any], clock: str) -> list[str]:
    """Markdown lines of :func:`bench_reference`'s result."""
    ms, lengths = r["ms_per_step"], r["lengths"]
    lines = [
        f"**(d) reference term per step** (batch {r['batch']}, {r['reference']}; ms per batched step, episode mean, {clock} clock)",
        "",
        "| path | " + " | ".join(f"T={T}" for T in lengths) + f" | T={lengths[-1]} / T={lengths[0]} |",
        "|---|" + "---:|" * (len(lengths) + 1),
    ]
    for path in ("cached", "uncached", "kv_forward"):
        if f"{path}_{lengths[0]}" not in ms["wall"]:
            continue
        vals = [ms[clock][f"{path}_{T}"] for T in lengths]
        flat = _ratio(vals[-1], vals[0])
        lines.append(
            f"| {path} | "
            + " | ".join(f"{v:.2f}" for v in vals)
            + f" | {'-' if flat is None else f'{flat:.2f}x'} |"
        )
    return lines


__all__ = ["REF_TARGETS", "bench_reference", "format_reference", "kv_forward_episode", "reference_episode"]
