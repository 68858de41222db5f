"""Env and rollout micro-benchmarks, reported as ratios measured side by side in one process.

(a) env steps/s of the native vector env vs ``SyncVectorEnv`` / ``AsyncVectorEnv`` of single envs (here); (b) tokens/s
of our ``CausalLMPolicy`` rolling out through the env API vs ``model.generate``, and (c) the env's per-step cost as a
fraction of the policy's (:mod:`aligngym.benchmarks.throughput_lm`).
``python -m aligngym.benchmarks.throughput [--quick] [--device cuda] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from aligngym.benchmarks.throughput_agents import AGENT_TARGETS, bench_agents
from aligngym.benchmarks.throughput_lm import (  # re-exported: the old home of the rollout benchmark
    EchoEnv,
    RolloutTimes,
    bench_rollout,
    generate_rollout,
    kv_cached_env_rollout,
    policy_env_rollout,
    rollout_policy,
    tiny_gpt2,
)
from aligngym.benchmarks.throughput_ref import REF_TARGETS, bench_reference
from aligngym.benchmarks.throughput_report import format_markdown
from aligngym.benchmarks.throughput_scorers import bench_scorers
from aligngym.benchmarks.timing import (
    CLOCKS,
    Sample,
    Stopwatch,
    _ratio,
    _summary,
    alternate,
)

DEFAULT_ENV = "aligngym/Sentiment-Token-v0"
#: the parts: (a) env steps/s, (b) rollout tokens/s, (c) env overhead, (d) reference term, (e) agent updates,
#: (f) scorer throughput
PARTS = ("a", "b", "c", "d", "e", "f")
#: the targets (issue 18): (a) native >= 10x Sync at 64 envs with a trivial scorer, (b) env-API rollout >= 1.0x
#: generate tokens/s, (c) env step <= 10 % of a policy step at batch 64, (d) reference term flat in the context and
#: close to a KV-cached forward, (e) our GRPO update >= 4x TRL's GRPOTrainer completions/s
TARGETS = {
    "a_native_vs_sync": 10.0,
    "b_rollout_vs_generate": 1.0,
    "c_env_overhead": 0.10,
    **REF_TARGETS,
    **AGENT_TARGETS,
}
#: targets met from below (a cost ratio), the others from above
LOWER_IS_BETTER = ("c_env_overhead", "d_ref_flat", "d_ref_vs_kv_forward")


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
        if (
            context == "forkserver"
        ):  # workers fork from a server that never ran torch (forking after torch hangs)
            multiprocessing.set_forkserver_preload(["aligngym.envs"])
        fns = [partial(make_single_env, env_id, **kwargs) for _ in range(num_envs)]
        return gym.vector.AsyncVectorEnv(fns, context=context)
    raise ValueError(f"vector env kind must be 'native', 'sync' or 'async', got {kind!r}")


def timed_steps(venv: Any, actions: list[np.ndarray], min_time: float, in_process: bool, rep: int) -> Sample:
    """One repetition: cycle through ``actions`` until ``min_time`` wall seconds have passed.

    :return: env steps (rows x batched steps) and the time taken.
    """
    steps = 0
    watch = Stopwatch()
    while True:
        for a in actions:
            venv.step(a)
        steps += len(actions)
        wall = watch.wall()
        if wall >= min_time:
            return Sample(steps * venv.num_envs, wall, watch.cpu() if in_process else None)


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
    kwargs = {
        "scorer": scorer,
        "max_new_tokens": max_new_tokens,
        "gold": False,
    }  # the scorer alone: no gold judge
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
        samples = alternate(
            {
                kind: partial(timed_steps, venv, actions, min_time, kind != "async")
                for kind, venv in envs.items()
            },
            reps,
        )
    finally:
        for venv in envs.values():
            venv.close()
    summary = _summary(samples)
    ratios = {
        clock: {f"native_vs_{k}": _ratio(rates["native"], v) for k, v in rates.items() if k != "native"}
        for clock, rates in summary["rates"].items()
    }
    return {"scorer": scorer, "num_envs": num_envs, "steps_per_s": summary["rates"], "ratios": ratios,
            "samples": summary["samples"]}  # fmt: skip


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
    clock: str | None = None,
    progress: Callable[[str], None] | None = None,
    parts: Sequence[str] = PARTS,
    ref_batch: int = 64,
    ref_lengths: Sequence[int] = (8, 32),
    agent_prompts: int = 4,
    agent_generations: int = 8,
    agent_tokens: int = 16,
    with_trl: bool = True,
    scorer_batch: int = 64,
) -> dict[str, Any]:
    """Measure the parts (a)-(f) (see :data:`PARTS`); returns the JSON-ready result.

    :param env_id: a token-level env id.
    :param num_envs: rows for native vs Sync (target (a)).
    :param async_envs: rows for native vs Sync vs Async (0 skips Async; keep <= 16 on a small machine: each worker
        is a process).
    :param scorers: scorer names for (a) and the env-API rollouts; the first is the "trivial" one of the targets.
    :param max_new_tokens: episode length in (a).
    :param rollout_batch: rows of the rollout in (b).
    :param rollout_tokens: new tokens per completion in (b) and (c).
    :param overhead_batch: rows of the rollout in (c).
    :param n_layer: layers of the rollout policy's ``tiny_causal_lm``.
    :param n_embd: its width.
    :param reps: alternating repetitions per contender (medians are reported).
    :param min_time: seconds per (a) repetition.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (for the policy; envs and scorers stay where they are).
    :param threads: ``torch.set_num_threads`` (``None`` leaves torch's default).
    :param clock: clock of the target verdicts: ``"cpu"`` (process CPU time; the default on CPU, robust to other
        load on a shared machine) or ``"wall"`` (the default with CUDA). Both clocks are always reported; Async is
        compared on wall time only (its work runs in other processes).
    :param parts: which of (a)-(f) to run.
    :param ref_batch: rows of (d), the reference term.
    :param ref_lengths: completion lengths of (d); the first and last give the flatness ratio.
    :param agent_prompts: prompts per update in (e).
    :param agent_generations: completions per prompt in (e).
    :param agent_tokens: new tokens per completion in (e).
    :param with_trl: include TRL's GRPOTrainer in (e) when ``trl`` is installed.
    :param scorer_batch: completions per scorer call in (f).
    """
    import torch

    from aligngym.envs.device import resolve_device

    say = progress or (lambda msg: None)
    device = resolve_device(device)
    clock = clock or ("wall" if device.startswith("cuda") else "cpu")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"parts must be among {PARTS}, got {unknown}")
    started = time.perf_counter()
    env_steps = []
    for scorer in scorers if "a" in parts else ():
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
    rollout = overhead = reference = agents = scorer_rates = None
    if "b" in parts:
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
    if "c" in parts:
        say(f"(c) env overhead: batch {overhead_batch}")
        overhead = bench_rollout(
            env_id, overhead_batch, rollout_tokens, scorers, reps=reps, device=device, n_layer=n_layer,
            n_embd=n_embd, with_generate=False,
        )  # fmt: skip
    if "d" in parts:
        say(f"(d) reference term: batch {ref_batch}, {list(ref_lengths)} new tokens, cached vs uncached")
        reference = bench_reference(env_id, ref_batch, ref_lengths, reps=reps, device=device)
    if "e" in parts:
        say(f"(e) agent updates: {agent_prompts} x {agent_generations} completions, GRPO, PPO, TRL")
        agents = bench_agents(
            prompts=agent_prompts, generations=agent_generations, max_new_tokens=agent_tokens, reps=reps,
            device=device, with_trl=with_trl,
        )  # fmt: skip
    if "f" in parts:
        say(f"(f) scorer throughput: batch {scorer_batch}")
        scorer_rates = bench_scorers(batch=scorer_batch, reps=reps, device=device)
    trivial = scorers[0]
    values: dict[str, float | None] = {}
    if env_steps:
        a = next(r for r in env_steps if r["scorer"] == trivial and r["num_envs"] == num_envs)
        values["a_native_vs_sync"] = a["ratios"][clock]["native_vs_sync"]
    if rollout is not None:
        values["b_rollout_vs_generate"] = rollout["ratios"][clock][f"env_api_{trivial}_vs_generate"]
    if overhead is not None:
        values["c_env_overhead"] = overhead["env_vs_policy_step"][clock][trivial]
    if reference is not None:
        ratios = reference["ratios"][clock]
        values["d_ref_flat"] = ratios["cached_flat"]
        vs_kv = [v for k, v in ratios.items() if k.startswith("cached_vs_kv_forward_")]
        values["d_ref_vs_kv_forward"] = None if None in vs_kv else max(vs_kv)
    if agents is not None and agents["ratios"][clock]:
        values["e_grpo_vs_trl"] = agents["ratios"][clock]["grpo_update_vs_trl"]
    targets = {
        k: {
            "value": v,
            "target": TARGETS[k],
            "clock": clock,
            "met": v is not None and (v <= TARGETS[k] if k in LOWER_IS_BETTER else v >= TARGETS[k]),
        }
        for k, v in values.items()
    }
    import transformers

    return {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
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
            "clock": clock,
            "parts": list(parts),
            "timing": "median of alternating repetitions in one process; wall and process-CPU clocks",
        },
        "env_steps": env_steps,
        "rollout": rollout,
        "overhead": overhead,
        "reference": reference,
        "agents": agents,
        "scorers": scorer_rates,
        "targets": targets,
        "wall_s": time.perf_counter() - started,
    }


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
        "--clock",
        choices=CLOCKS,
        help="clock of the target verdicts (default: cpu on CPU, robust to a shared machine; wall with CUDA)",
    )
    p.add_argument(
        "--context",
        default="forkserver",
        choices=("forkserver", "spawn"),
        help="AsyncVectorEnv start method",
    )
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of parts a-f to run (default all)")
    p.add_argument("--ref-batch", type=int, default=64, help="rows of (d), the reference term (default 64)")
    p.add_argument("--ref-lengths", default="8,32", help="completion lengths of (d) (default 8,32)")
    p.add_argument("--agent-prompts", type=int, default=4, help="prompts per update in (e) (default 4)")
    p.add_argument(
        "--agent-generations", type=int, default=8, help="completions per prompt in (e) (default 8)"
    )
    p.add_argument(
        "--agent-tokens", type=int, default=16, help="new tokens per completion in (e) (default 16)"
    )
    p.add_argument("--no-trl", action="store_true", help="leave TRL's GRPOTrainer out of (e)")
    p.add_argument(
        "--scorer-batch", type=int, default=64, help="completions per scorer call in (f) (default 64)"
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
        "clock": args.clock,
        "parts": [x.strip() for x in args.parts.split(",") if x.strip()],
        "ref_batch": args.ref_batch,
        "ref_lengths": [int(x) for x in args.ref_lengths.split(",") if x.strip()],
        "agent_prompts": args.agent_prompts,
        "agent_generations": args.agent_generations,
        "agent_tokens": args.agent_tokens,
        "with_trl": not args.no_trl,
        "scorer_batch": args.scorer_batch,
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
            ref_batch=4,
            ref_lengths=[2, 4],
            agent_prompts=2,
            agent_generations=2,
            agent_tokens=4,
            scorer_batch=4,
        )
    if not kwargs["scorers"]:
        print("aligngym throughput: --scorers is empty", file=sys.stderr)
        return 2
    try:
        result = run_throughput(args.env, progress=lambda msg: print(msg, file=sys.stderr), **kwargs)
    except (ValueError, TypeError) as err:
        print(f"aligngym throughput: {err}", file=sys.stderr)
        return 2
    result["settings"]["quick"] = bool(args.quick)
    print(format_markdown(result))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {path}", file=sys.stderr)
    return 0


__all__ = [
    "CLOCKS",
    "DEFAULT_ENV",
    "LOWER_IS_BETTER",
    "PARTS",
    "TARGETS",
    "EchoEnv",
    "RolloutTimes",
    "Sample",
    "Stopwatch",
    "alternate",
    "bench_env_steps",
    "bench_rollout",
    "build_vector_env",
    "format_markdown",
    "generate_rollout",
    "kv_cached_env_rollout",
    "main",
    "make_single_env",
    "policy_env_rollout",
    "rollout_policy",
    "run_throughput",
    "timed_steps",
    "tiny_gpt2",
]

if __name__ == "__main__":
    sys.exit(main())
