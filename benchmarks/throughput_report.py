"""Markdown report of ``aligngym throughput`` (:func:`aligngym.benchmarks.throughput.run_throughput`'s result):
one table per part (a)-(f) that ran, then the targets with their verdicts.
"""

from __future__ import annotations

from typing import Any

from aligngym.benchmarks.throughput_agents import format_agents
from aligngym.benchmarks.throughput_ref import format_reference
from aligngym.benchmarks.throughput_scorers import format_scorers


def _fmt(x: float | None, suffix: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}{suffix}" if x >= 100 else f"{x:.2f}{suffix}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def format_markdown(result: dict[str, Any]) -> str:
    """The result as Markdown tables: medians on the wall clock, with the CPU clock (this process) beside them."""
    s, m = result["settings"], result["machine"]
    load = m.get("load_average")
    lines = [
        f"Throughput on {m['device']} ({m['device_name'] or m['platform']}, {m['cpu_count']} CPUs"
        + (f", load average {load[0]:.1f}" if load else "")
        + f", torch threads {m['torch_threads']}); {s['env_id']}; median of {s['reps']} alternating repetitions; "
        "rates on the wall clock, (cpu) = on this process's CPU time.",
        "",
        *(
            ["**--quick: tiny sizes, a smoke test; these figures are not measurements.**", ""]
            if s.get("quick")
            else []
        ),
    ]
    if result["env_steps"]:
        lines += [
            f"**(a) env steps/s** (rows x steps per second, NEXT_STEP autoreset, {s['max_new_tokens']} tokens per "
            "episode, no gold scorer)",
            "",
            "| scorer | envs | native | sync | async | native / sync | native / sync (cpu) | native / async |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for r in result["env_steps"]:
        wall, ratios = r["steps_per_s"]["wall"], r["ratios"]
        lines.append(
            f"| {r['scorer']} | {r['num_envs']} | {_fmt(wall.get('native'))} | {_fmt(wall.get('sync'))} | "
            f"{_fmt(wall.get('async'))} | {_fmt(ratios['wall'].get('native_vs_sync'), 'x')} | "
            f"{_fmt(ratios['cpu'].get('native_vs_sync'), 'x')} | {_fmt(ratios['wall'].get('native_vs_async'), 'x')} |"
        )
    ro, ov = result["rollout"], result["overhead"]
    lines += (
        []
        if ro is None
        else [
            "",
            f"**(b) rollout tokens/s** (batch {ro['batch']}, {ro['max_new_tokens']} new tokens, GPT-2 "
            f"n_layer={ro['model']['n_layer']} n_embd={ro['model']['n_embd']} V={ro['model']['vocab_size']}, "
            "multinomial sampling, EOS suppressed)",
            "",
            "| contender | tokens/s | vs generate | vs generate (cpu) | env share (cpu) |",
            "|---|---:|---:|---:|---:|",
        ]
    )
    for name, rate in ({} if ro is None else ro["tokens_per_s"]["wall"]).items():
        scorer = name.removeprefix("env_api_")
        label = {
            "generate": "`model.generate`",
            "kv_loop_no_env": "same KV-cache loop, no env (EchoEnv)",
        }.get(name, f"env API + KV cache ({scorer} scorer)")
        env_ms, pol_ms = ro["env_step_ms"]["cpu"].get(scorer), ro["policy_step_ms"]["cpu"].get(scorer)
        share = None if env_ms is None or pol_ms is None else env_ms / (env_ms + pol_ms)
        lines.append(
            f"| {label} | {_fmt(rate)} | {_fmt(ro['ratios']['wall'].get(f'{name}_vs_generate'), 'x')} | "
            f"{_fmt(ro['ratios']['cpu'].get(f'{name}_vs_generate'), 'x')} | {_pct(share)} |"
        )
    lines += (
        []
        if ov is None
        else [
            "",
            f"**(c) env overhead per step at batch {ov['batch']}** (inside an env-API rollout, {ov['max_new_tokens']} "
            "new tokens, reset and scoring included)",
            "",
            "| scorer | env step (ms) | policy step (ms) | env / policy | env / policy (cpu) |",
            "|---|---:|---:|---:|---:|",
        ]
    )
    for scorer in {} if ov is None else ov["env_vs_policy_step"]["wall"]:
        lines.append(
            f"| {scorer} | {ov['env_step_ms']['wall'][scorer]:.3f} | {ov['policy_step_ms']['wall'][scorer]:.3f} | "
            f"{_pct(ov['env_vs_policy_step']['wall'][scorer])} | {_pct(ov['env_vs_policy_step']['cpu'][scorer])} |"
        )
    for key, fmt in (("reference", format_reference), ("agents", format_agents), ("scorers", format_scorers)):
        if result.get(key) is not None:
            lines += ["", *fmt(result[key], s["clock"])]
    lines += [
        "",
        f"**Targets** (on the {s['clock']} clock)",
        "",
        "| target | measured | goal | met |",
        "|---|---:|---:|---|",
    ]
    names = {
        "a_native_vs_sync": f"(a) native / Sync at {s['num_envs']} envs, {s['scorers'][0]} scorer",
        "b_rollout_vs_generate": f"(b) env-API rollout / generate at batch {s['rollout_batch']}",
        "c_env_overhead": f"(c) env step / policy step at batch {s['overhead_batch']}",
        "d_ref_flat": "(d) reference term per step, longest / shortest completion",
        "d_ref_vs_kv_forward": "(d) reference term per step / one KV-cached forward (worst length)",
        "e_grpo_vs_trl": "(e) GRPOAgent update / TRL GRPOTrainer step, completions/s",
    }
    for key, t in result["targets"].items():
        if key in ("d_ref_flat", "d_ref_vs_kv_forward"):
            measured, goal = _fmt(t["value"], "x"), f"<= {t['target']:.1f}x"
        elif key == "c_env_overhead":
            measured, goal = _pct(t["value"]), f"<= {100 * t['target']:.0f} %"
        else:
            measured, goal = _fmt(t["value"], "x"), f">= {t['target']:.1f}x"
        lines.append(f"| {names[key]} | {measured} | {goal} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


__all__ = ["format_markdown"]
