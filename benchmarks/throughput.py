"""Env and rollout micro-benchmarks, reported as ratios measured side by side in one process.

(a) env steps/s of the native vector env vs ``SyncVectorEnv`` / ``AsyncVectorEnv`` of single envs; (b) tokens/s of a
KV-cached policy rolling out through the env API vs ``model.generate``; (c) the env's per-step cost as a fraction of
the policy's. ``python -m aligngym.benchmarks.throughput [--quick] [--device cuda] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

DEFAULT_ENV = "aligngym/Sentiment-Token-v0"
#: the targets of the throughput issue: (a) native >= 5x Sync at 64 envs with a trivial scorer, (b) env-API rollout
#: >= 1.0x generate tokens/s, (c) env step <= 10 % of a policy step at batch 64
TARGETS = {"a_native_vs_sync": 5.0, "b_rollout_vs_generate": 1.0, "c_env_overhead": 0.10}


# -- timing ---------------------------------------------------------------------------------------------------------
def alternate(contenders: dict[str, Callable[[int], float]], reps: int) -> dict[str, list[float]]:
    """Run every contender once per repetition, in turn (a, b, c, a, b, c, ...); returns each one's values.

    Alternating spreads slow phases of a shared machine over all contenders; report the median of each.
    """
    values: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(reps):
        for name, fn in contenders.items():
            values[name].append(float(fn(rep)))
    return values


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


# -- (a) env steps/s ------------------------------------------------------------------------------------------------
def make_single_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` after registering aligngym's ids (module-level, so spawned workers can call it)."""
    import aligngym.envs  # noqa: F401  (registration)

    return gym.make(env_id, **kwargs)


def build_vector_env(
    kind: str, env_id: str, num_envs: int, context: str = "forkserver", **kwargs: Any
) -> Any:
    """``kind``: ``"native"`` (the vector entry point), ``"sync"`` or ``"async"`` (single envs in worker processes)."""
    import aligngym.envs  # noqa: F401

    if kind == "native":
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    if kind == "sync":
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)
    if kind == "async":
        if context == "forkserver":
            multiprocessing.set_forkserver_preload(["aligngym.envs"])
        fns = [partial(make_single_env, env_id, **kwargs) for _ in range(num_envs)]
        return gym.vector.AsyncVectorEnv(fns, context=context)
    raise ValueError(f"vector env kind must be 'native', 'sync' or 'async', got {kind!r}")


def _step_rate(venv: Any, actions: list[np.ndarray], min_time: float) -> float:
    """Env steps/s (rows x batched steps per second): cycle through ``actions`` until ``min_time`` has passed."""
    n, steps = venv.num_envs, 0
    t0 = time.perf_counter()
    while True:
        for a in actions:
            venv.step(a)
        steps += len(actions)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return steps * n / elapsed


def _timed_steps(venv: Any, actions: list[np.ndarray], min_time: float, rep: int) -> float:
    """One repetition of :func:`_step_rate` (the signature :func:`alternate` calls)."""
    return _step_rate(venv, actions, min_time)


def bench_env_steps(
    env_id: str,
    num_envs: int,
    scorer: str,
    kinds: Sequence[str],
    *,
    reps: int,
    min_time: float,
    max_new_tokens: int,
    context: str,
    seed: int = 0,
) -> dict[str, Any]:
    """Env steps/s of each vector env kind on the same task, scorer, actions and seeds (NEXT_STEP autoreset)."""
    kwargs = {"scorer": scorer, "max_new_tokens": max_new_tokens}
    envs = {kind: build_vector_env(kind, env_id, num_envs, context=context, **kwargs) for kind in kinds}
    try:
        n_actions = int(next(iter(envs.values())).single_action_space.n)
        rng = np.random.default_rng(seed)
        actions = [
            rng.integers(0, n_actions, size=num_envs, dtype=np.int64) for _ in range(2 * max_new_tokens)
        ]
        for venv in envs.values():  # warm up: lazy scorer construction, first episodes
            venv.reset(seed=seed)
            for a in actions:
                venv.step(a)
        runs = alternate(
            {kind: partial(_timed_steps, venv, actions, min_time) for kind, venv in envs.items()}, reps
        )
    finally:
        for venv in envs.values():
            venv.close()
    rates = {kind: _median(v) for kind, v in runs.items()}
    ratios = {f"native_vs_{k}": _ratio(rates["native"], rates[k]) for k in rates if k != "native"}
    return {
        "scorer": scorer,
        "num_envs": num_envs,
        "steps_per_s": rates,
        "ratios": ratios,
        "runs": runs,
    }


# -- (b) and (c) rollouts -------------------------------------------------------------------------------------------
def tiny_gpt2(
    vocab_size: int, n_positions: int, *, n_layer: int = 2, n_embd: int = 128, seed: int = 0
) -> Any:
    """A randomly initialised GPT-2 (no dropout) over the env's vocabulary, built at run time (no download)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def kv_cached_env_rollout(
    model: Any, venv: Any, *, seed: int, suppress_ids: Sequence[int] = (), device: str = "cpu"
) -> tuple[int, float]:
    """One batch of completions sampled by ``model`` through the env API, with a hand-written KV-cache loop.

    The env must be in batch autoreset mode (``autoreset_mode="batch"``): ``reset``, then step until every row has
    ended. The prompt is read from the observation (``input_ids[:, :max_prompt_tokens]``, left-padded), each new
    token from the column the env wrote; sampling is plain multinomial over softmax(logits) with ``suppress_ids``
    (e.g. EOS) masked. This is the function to swap for ``CausalLMPolicy`` once it exists.

    :return: tokens generated (rows x steps while running) and the seconds spent inside ``reset``/``step``.
    """
    import torch

    P = venv.unwrapped.runtime.max_prompt_tokens
    t0 = time.perf_counter()
    obs, _ = venv.reset(seed=seed)
    env_s = time.perf_counter() - t0
    n = venv.num_envs
    with torch.inference_mode():
        ids = torch.as_tensor(obs["input_ids"][:, :P], device=device)
        mask = torch.as_tensor(obs["attention_mask"], device=device)
        mask[:, P:] = 1  # the attention mask of every later step is a prefix of this
        pos = (mask[:, :P].cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=ids, attention_mask=mask[:, :P], position_ids=pos, use_cache=True, logits_to_keep=1
        )
        past, logits = out.past_key_values, out.logits[:, -1]
        next_pos = pos[:, -1:] + 1
        suppress = torch.as_tensor(list(suppress_ids), dtype=torch.long, device=device)
        done = np.zeros(n, dtype=np.bool_)
        tokens, t = 0, 0
        while True:
            if suppress.numel():
                logits.index_fill_(1, suppress, -float("inf"))
            action = torch.multinomial(torch.softmax(logits.float(), dim=-1), 1)
            actions = action[:, 0].cpu().numpy()
            t0 = time.perf_counter()
            obs, _, terminated, truncated, _ = venv.step(actions)
            env_s += time.perf_counter() - t0
            tokens += int((~done).sum())
            done |= terminated | truncated
            if done.all():
                return tokens, env_s
            new = torch.as_tensor(obs["input_ids"][:, P + t], device=device)[:, None]
            out = model(
                input_ids=new,
                attention_mask=mask[:, : P + t + 1],
                position_ids=next_pos + t,
                past_key_values=past,
                use_cache=True,
            )
            past, logits = out.past_key_values, out.logits[:, -1]
            t += 1


def generate_rollout(
    model: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int, eos_id: int
) -> int:
    """``model.generate`` with the rollout's sampling: multinomial, top_k=0, top_p=1, EOS off (fixed length)."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    return int((out.shape[1] - input_ids.shape[1]) * out.shape[0])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class EchoEnv:
    """The cheapest stand-in for an env in :func:`kv_cached_env_rollout`: replays fixed prompts, writes each action
    into a shared array and ends after ``max_new_tokens`` steps (no copies, no decoding, no scoring).

    Timing the same loop against it separates the loop's own cost from aligngym's env cost.
    """

    def __init__(self, obs: dict[str, np.ndarray], max_prompt_tokens: int, max_new_tokens: int) -> None:
        self.num_envs = obs["input_ids"].shape[0]
        self.unwrapped = self
        self.runtime = type("Runtime", (), {"max_prompt_tokens": max_prompt_tokens})()
        self._prompt = obs
        self._T = max_new_tokens
        self._t = 0
        self._zeros = np.zeros(self.num_envs)
        self._false = np.zeros(self.num_envs, dtype=np.bool_)

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._obs = {k: v.copy() for k, v in self._prompt.items()}
        self._t = 0
        return self._obs, {}

    def step(self, actions: np.ndarray) -> tuple[Any, ...]:
        col = self.runtime.max_prompt_tokens + self._t
        self._obs["input_ids"][:, col] = actions
        self._t += 1
        ended = np.full(self.num_envs, self._t >= self._T)
        return self._obs, self._zeros, ended, self._false, {}


def bench_rollout(
    env_id: str,
    batch: int,
    max_new_tokens: int,
    scorers: Sequence[str],
    *,
    reps: int,
    device: str,
    n_layer: int,
    n_embd: int,
    with_generate: bool = True,
) -> dict[str, Any]:
    """Tokens/s of the env-API rollout (one contender per scorer), and with ``with_generate`` also of the same loop on
    an :class:`EchoEnv` and of ``generate``, all alternating; the env's share of each env-API rollout.
    """
    import torch

    envs: dict[str, Any] = {
        s: gym.make_vec(
            env_id,
            num_envs=batch,
            vectorization_mode="vector_entry_point",
            autoreset_mode="batch",
            scorer=s,
            max_new_tokens=max_new_tokens,
        )
        for s in scorers
    }
    first = next(iter(envs.values())).unwrapped
    rt = first.runtime
    if rt.action_ids is not None:
        raise ValueError(
            f"{env_id} has a restricted action vocabulary; the rollout benchmark needs token actions"
        )
    eos = rt.eos_id
    suppress = [eos] if eos is not None else []
    model = tiny_gpt2(rt.vocab_size, max(64, rt.seq_len), n_layer=n_layer, n_embd=n_embd).to(device)
    P = rt.max_prompt_tokens
    shares: dict[str, list[float]] = {s: [] for s in envs}
    env_steps: dict[str, list[float]] = {s: [] for s in envs}
    policy_steps: dict[str, list[float]] = {s: [] for s in envs}

    def prompts(rep: int) -> dict[str, np.ndarray]:
        obs, _ = first.reset(seed=1001 + rep)  # every contender of a repetition gets the same prompts
        return obs

    def env_api(rep: int, name: str) -> float:
        venv = envs[name] if name in envs else EchoEnv(prompts(rep), P, max_new_tokens)
        torch.manual_seed(rep + 1)
        _sync(device)
        t0 = time.perf_counter()
        tokens, env_s = kv_cached_env_rollout(
            model, venv, seed=1001 + rep, suppress_ids=suppress, device=device
        )
        _sync(device)
        total = time.perf_counter() - t0
        if name in envs:
            shares[name].append(env_s / total)
            steps = tokens / batch
            env_steps[name].append(env_s / steps)
            policy_steps[name].append((total - env_s) / steps)
        return tokens / total

    def generate(rep: int) -> float:
        obs = prompts(rep)
        ids = torch.as_tensor(obs["input_ids"][:, :P], device=device)
        mask = torch.as_tensor(obs["attention_mask"][:, :P], device=device)
        torch.manual_seed(rep + 1)
        _sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            tokens = generate_rollout(model, ids, mask, max_new_tokens, eos if eos is not None else 0)
        _sync(device)
        return tokens / (time.perf_counter() - t0)

    contenders: dict[str, Callable[[int], float]] = {
        f"env_api_{s}": partial(env_api, name=s) for s in scorers
    }
    if with_generate:
        contenders["kv_loop_no_env"] = partial(env_api, name="echo")
        contenders["generate"] = generate
    for fn in contenders.values():  # warm up (lazy scorers, first-call allocations)
        fn(-1)
    for d in (shares, env_steps, policy_steps):
        for v in d.values():
            v.clear()
    runs = alternate(contenders, reps)
    for venv in envs.values():
        venv.close()
    rates = {k: _median(v) for k, v in runs.items()}
    out: dict[str, Any] = {
        "batch": batch,
        "max_new_tokens": max_new_tokens,
        "model": {"n_layer": n_layer, "n_embd": n_embd, "vocab_size": rt.vocab_size},
        "tokens_per_s": rates,
        "env_share": {s: _median(v) for s, v in shares.items()},
        "env_step_ms": {s: 1e3 * _median(v) for s, v in env_steps.items()},
        "policy_step_ms": {s: 1e3 * _median(v) for s, v in policy_steps.items()},
        "env_vs_policy_step": {
            s: _median([e / p for e, p in zip(env_steps[s], policy_steps[s])]) for s in scorers
        },
        "runs": runs,
    }
    if with_generate:
        out["ratios"] = {
            f"{k}_vs_generate": _ratio(v, rates["generate"]) for k, v in rates.items() if k != "generate"
        }
    return out


# -- the whole benchmark --------------------------------------------------------------------------------------------
def run_throughput(
    env_id: str = DEFAULT_ENV,
    *,
    num_envs: int = 64,
    async_envs: int = 16,
    scorers: Sequence[str] = ("length", "sentiment"),
    max_new_tokens: int = 16,
    rollout_batch: int = 32,
    rollout_tokens: int = 32,
    overhead_batch: int = 64,
    n_layer: int = 2,
    n_embd: int = 128,
    reps: int = 5,
    min_time: float = 0.3,
    device: str = "cpu",
    threads: int | None = 1,
    context: str = "forkserver",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure (a) env steps/s, (b) rollout tokens/s and (c) env overhead; returns the JSON-ready result.

    :param num_envs: rows for native vs Sync (target (a)); :param async_envs: rows for native vs Sync vs Async
        (0 skips Async; keep <= 16 on a small machine: each worker is a process).
    :param scorers: scorer names for (a) and the env-API rollouts; the first is the "trivial" one of the targets.
    :param max_new_tokens: episode length in (a); :param rollout_tokens: new tokens per completion in (b) and (c).
    :param reps: alternating repetitions per contender (medians are reported); :param min_time: seconds per (a) rep.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (for the policy; envs and scorers stay where they are).
    :param threads: ``torch.set_num_threads`` (``None`` leaves torch's default).
    """
    import torch

    from aligngym.envs.device import resolve_device

    say = progress or (lambda msg: None)
    device = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(int(threads))
    started = time.perf_counter()
    env_steps = []
    for scorer in scorers:
        say(f"(a) env steps/s: {scorer}, {num_envs} envs, native vs sync")
        env_steps.append(
            bench_env_steps(
                env_id,
                num_envs,
                scorer,
                ("native", "sync"),
                reps=reps,
                min_time=min_time,
                max_new_tokens=max_new_tokens,
                context=context,
            )
        )
        if async_envs:
            say(f"(a) env steps/s: {scorer}, {async_envs} envs, native vs sync vs async ({context})")
            env_steps.append(
                bench_env_steps(
                    env_id,
                    async_envs,
                    scorer,
                    ("native", "sync", "async"),
                    reps=reps,
                    min_time=min_time,
                    max_new_tokens=max_new_tokens,
                    context=context,
                )
            )
    say(f"(b) rollout tokens/s: batch {rollout_batch}, {rollout_tokens} new tokens, env API vs generate")
    rollout = bench_rollout(
        env_id,
        rollout_batch,
        rollout_tokens,
        scorers,
        reps=reps,
        device=device,
        n_layer=n_layer,
        n_embd=n_embd,
    )
    say(f"(c) env overhead: batch {overhead_batch}")
    overhead = bench_rollout(
        env_id,
        overhead_batch,
        rollout_tokens,
        scorers,
        reps=reps,
        device=device,
        n_layer=n_layer,
        n_embd=n_embd,
        with_generate=False,
    )
    trivial = scorers[0]
    a = next(r for r in env_steps if r["scorer"] == trivial and r["num_envs"] == num_envs)
    values = {
        "a_native_vs_sync": a["ratios"]["native_vs_sync"],
        "b_rollout_vs_generate": rollout["ratios"][f"env_api_{trivial}_vs_generate"],
        "c_env_overhead": overhead["env_vs_policy_step"][trivial],
    }
    targets = {
        k: {
            "value": v,
            "target": TARGETS[k],
            "met": bool(v <= TARGETS[k]) if k == "c_env_overhead" else bool(v >= TARGETS[k]),
        }
        for k, v in values.items()
    }
    import transformers

    return {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gymnasium": gym.__version__,
            "numpy": np.__version__,
            "device": device,
            "device_name": torch.cuda.get_device_name(0)
            if device.startswith("cuda")
            else platform.processor(),
            "torch_threads": torch.get_num_threads(),
        },
        "settings": {
            "env_id": env_id,
            "num_envs": num_envs,
            "async_envs": async_envs,
            "async_context": context,
            "scorers": list(scorers),
            "max_new_tokens": max_new_tokens,
            "rollout_batch": rollout_batch,
            "rollout_tokens": rollout_tokens,
            "overhead_batch": overhead_batch,
            "reps": reps,
            "min_time": min_time,
            "timing": "median of alternating repetitions in one process",
        },
        "env_steps": env_steps,
        "rollout": rollout,
        "overhead": overhead,
        "targets": targets,
        "wall_s": time.perf_counter() - started,
    }


def _fmt(x: float | None, suffix: str = "") -> str:
    return "-" if x is None else f"{x:,.0f}{suffix}" if x >= 100 else f"{x:.2f}{suffix}"


def format_markdown(result: dict[str, Any]) -> str:
    """The result as Markdown tables (rates are medians; ratios are of medians)."""
    s = result["settings"]
    m = result["machine"]
    lines = [
        f"Throughput on {m['device']} ({m['device_name'] or m['platform']}, {m['cpu_count']} CPUs, "
        f"torch threads {m['torch_threads']}); {s['env_id']}; median of {s['reps']} alternating repetitions.",
        "",
        "**(a) env steps/s** (rows x steps per second, NEXT_STEP autoreset, "
        f"{s['max_new_tokens']} tokens per episode)",
        "",
        "| scorer | envs | native | sync | async | native / sync | native / async |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["env_steps"]:
        rates, ratios = r["steps_per_s"], r["ratios"]
        lines.append(
            f"| {r['scorer']} | {r['num_envs']} | {_fmt(rates.get('native'))} | {_fmt(rates.get('sync'))} | "
            f"{_fmt(rates.get('async'))} | {_fmt(ratios.get('native_vs_sync'), 'x')} | "
            f"{_fmt(ratios.get('native_vs_async'), 'x')} |"
        )
    ro = result["rollout"]
    lines += [
        "",
        f"**(b) rollout tokens/s** (batch {ro['batch']}, {ro['max_new_tokens']} new tokens, GPT-2 "
        f"n_layer={ro['model']['n_layer']} n_embd={ro['model']['n_embd']} V={ro['model']['vocab_size']}, "
        "multinomial sampling, EOS suppressed)",
        "",
        "| contender | tokens/s | vs generate | env share of the rollout |",
        "|---|---:|---:|---:|",
    ]
    for name, rate in ro["tokens_per_s"].items():
        ratio = ro["ratios"].get(f"{name}_vs_generate")
        scorer = name.removeprefix("env_api_")
        share = ro["env_share"].get(scorer)
        label = {
            "generate": "`model.generate`",
            "kv_loop_no_env": "same KV-cache loop, no env (EchoEnv)",
        }.get(name, f"env API + KV cache ({scorer} scorer)")
        lines.append(
            f"| {label} | {rate:,.0f} | {'-' if ratio is None else f'{ratio:.2f}x'} | "
            f"{'-' if share is None else f'{100 * share:.1f} %'} |"
        )
    ov = result["overhead"]
    lines += [
        "",
        f"**(c) env overhead per step at batch {ov['batch']}** (inside an env-API rollout)",
        "",
        "| scorer | env step (ms) | policy step (ms) | env / policy |",
        "|---|---:|---:|---:|",
    ]
    for scorer, ratio in ov["env_vs_policy_step"].items():
        lines.append(
            f"| {scorer} | {ov['env_step_ms'][scorer]:.3f} | {ov['policy_step_ms'][scorer]:.3f} | "
            f"{100 * ratio:.1f} % |"
        )
    lines += ["", "**Targets**", "", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    names = {
        "a_native_vs_sync": f"(a) native / Sync at {s['num_envs']} envs, {s['scorers'][0]} scorer",
        "b_rollout_vs_generate": f"(b) env-API rollout / generate at batch {ro['batch']}",
        "c_env_overhead": f"(c) env step / policy step at batch {ov['batch']}",
    }
    for key, t in result["targets"].items():
        if key == "c_env_overhead":
            measured, goal = f"{100 * t['value']:.1f} %", f"<= {100 * t['target']:.0f} %"
        else:
            measured, goal = f"{t['value']:.2f}x", f">= {t['target']:.1f}x"
        lines.append(f"| {names[key]} | {measured} | {goal} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aligngym throughput",
        description="Env and rollout micro-benchmarks as ratios: native vector env vs SyncVectorEnv/AsyncVectorEnv, "
        "env-API KV-cached rollout vs transformers generate, env overhead vs a policy step.",
    )
    p.add_argument("--env", default=DEFAULT_ENV, help=f"token-level env id (default {DEFAULT_ENV})")
    p.add_argument("--num-envs", type=int, default=64, help="rows for native vs Sync (default 64)")
    p.add_argument(
        "--async-envs",
        type=int,
        default=16,
        help="rows for native vs Sync vs Async (default 16; 0 skips Async)",
    )
    p.add_argument(
        "--scorers",
        default="length,sentiment",
        help="comma list; the first is the trivial one (default length,sentiment)",
    )
    p.add_argument("--max-new-tokens", type=int, default=16, help="episode length for (a) (default 16)")
    p.add_argument("--rollout-batch", type=int, default=32, help="batch for (b) (default 32)")
    p.add_argument(
        "--rollout-tokens", type=int, default=32, help="new tokens per completion in (b), (c) (default 32)"
    )
    p.add_argument("--overhead-batch", type=int, default=64, help="batch for (c) (default 64)")
    p.add_argument("--n-layer", type=int, default=2, help="tiny GPT-2 layers (default 2)")
    p.add_argument("--n-embd", type=int, default=128, help="tiny GPT-2 width (default 128)")
    p.add_argument("--reps", type=int, default=5, help="alternating repetitions per contender (default 5)")
    p.add_argument(
        "--min-time", type=float, default=0.3, help="seconds per env-step repetition (default 0.3)"
    )
    p.add_argument("--device", default="cpu", help="policy device: cpu (default), cuda or auto")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1; 0 leaves torch's default)"
    )
    p.add_argument(
        "--context", default="forkserver", choices=("forkserver", "spawn"), help="AsyncVectorEnv start method"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes and 2 repetitions (a smoke test, not a measurement)"
    )
    p.add_argument("--out", help="write the JSON result here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``aligngym throughput`` / ``python -m aligngym.benchmarks.throughput``: print Markdown, optionally write JSON."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    kwargs: dict[str, Any] = {
        "num_envs": args.num_envs,
        "async_envs": args.async_envs,
        "scorers": [s.strip() for s in args.scorers.split(",") if s.strip()],
        "max_new_tokens": args.max_new_tokens,
        "rollout_batch": args.rollout_batch,
        "rollout_tokens": args.rollout_tokens,
        "overhead_batch": args.overhead_batch,
        "n_layer": args.n_layer,
        "n_embd": args.n_embd,
        "reps": args.reps,
        "min_time": args.min_time,
        "device": args.device,
        "threads": args.threads or None,
        "context": args.context,
    }
    if args.quick:
        kwargs.update(
            num_envs=8,
            async_envs=2,
            scorers=kwargs["scorers"][:1],
            max_new_tokens=4,
            rollout_batch=4,
            rollout_tokens=4,
            overhead_batch=4,
            n_layer=1,
            n_embd=32,
            reps=2,
            min_time=0.01,
        )
    if not kwargs["scorers"]:
        print("aligngym throughput: --scorers is empty", file=sys.stderr)
        return 2
    try:
        result = run_throughput(args.env, progress=lambda msg: print(msg, file=sys.stderr), **kwargs)
    except (ValueError, TypeError) as err:
        print(f"aligngym throughput: {err}", file=sys.stderr)
        return 2
    print(format_markdown(result))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
