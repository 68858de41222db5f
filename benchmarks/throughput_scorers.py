"""Scorer throughput: completions/s of every registered scorer at batch 64, called as the envs call it (one batched
call with the rows' context columns), alternating (part (f) of ``aligngym throughput``). A scorer that cannot be
built offline, or that needs context no shipped task has, is listed as skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from aligngym.benchmarks.timing import Sample, Stopwatch, _summary, alternate

#: scorers that are never timed, and why
NOT_TIMED = {"human": "asks a person at the terminal (interactive)"}
#: shipped tasks whose prompt rows (and context columns) a scorer is tried on, in order
TASKS = ("Sentiment", "Keywords", "Similarity", "Preference", "Target")


def _texts(rows: Sequence[dict[str, Any]], batch: int) -> tuple[list[dict[str, Any]], list[str]]:
    """``batch`` prompt rows and a completion for each: the text of the next row's prompt (real English)."""
    picked = [rows[i % len(rows)] for i in range(batch)]
    completions = [" " + str(rows[(i + 1) % len(rows)]["prompt"]) for i in range(batch)]
    return picked, completions


def scorer_call(runtime: Any, rows: list[dict[str, Any]], completions: list[str], rep: int = 0) -> Sample:
    """One batched scorer call through the env's runtime (context columns passed as the envs pass them)."""
    watch = Stopwatch()
    runtime.score(rows, completions)
    return Sample(len(completions), watch.wall(), watch.cpu())


def bench_scorers(
    names: Sequence[str] | None = None, *, batch: int = 64, reps: int = 5, device: str = "cpu"
) -> dict[str, Any]:
    """Completions/s of each scorer (default: every registered one) on ``batch`` completions.

    :param names: scorer names (``None``: :func:`aligngym.envs.scorers.list_scorers`).
    :param batch: completions per call.
    :param reps: alternating repetitions (after one warm-up call that builds the scorer).
    :param device: device of the model-based scorers.
    :return: ``completions_per_s`` per clock, ``task`` (whose rows each scorer ran on) and ``skipped`` (name ->
        reason).
    """
    import gymnasium as gym

    import aligngym.envs  # noqa: F401  (registers the ids)
    from aligngym.envs.scorers import list_scorers

    names = list(list_scorers() if names is None else names)
    contenders: dict[str, Callable[[int], Sample]] = {}
    tasks: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name in NOT_TIMED:
            skipped[name] = NOT_TIMED[name]
            continue
        reason = ""
        for task in TASKS:
            try:
                env = gym.make(f"aligngym/{task}-Sequence-v0", scorer=name, gold=False, device=device)
                rt = env.unwrapped.runtime  # type: ignore[attr-defined]
                rows, completions = _texts(rt.rows, batch)
                fn = partial(scorer_call, rt, rows, completions)
                fn(-1)  # builds the scorer (lazy) and checks it runs on these rows
            except Exception as err:  # any failure: try the next task, then report it
                reason = f"{type(err).__name__}: {err}".splitlines()[0][:160]
                continue
            contenders[name], tasks[name] = fn, task
            break
        else:
            skipped[name] = reason
    summary = _summary(alternate(contenders, reps)) if contenders else {"rates": {}, "samples": {}}
    return {
        "batch": batch,
        "device": device,
        "completions_per_s": summary["rates"],
        "task": tasks,
        "skipped": skipped,
        "samples": summary["samples"],
    }


def format_scorers(r: dict[str, Any], clock: str) -> list[str]:
    """Markdown lines of :func:`bench_scorers`'s result."""
    lines = [
        f"**(f) scorer throughput** (one batched call of {r['batch']} completions, as the envs call it; {r['device']}, {clock} clock)",
        "",
        "| scorer | completions/s | prompt rows of |",
        "|---|---:|---|",
    ]
    for name, rate in sorted(r["completions_per_s"].get(clock, {}).items(), key=lambda kv: -(kv[1] or 0.0)):
        lines.append(f"| {name} | {'-' if rate is None else f'{rate:,.1f}'} | {r['task'][name]} |")
    for name, reason in r["skipped"].items():
        lines.append(f"| {name} | skipped | {reason} |")
    return lines


__all__ = ["NOT_TIMED", "TASKS", "bench_scorers", "format_scorers", "scorer_call"]
