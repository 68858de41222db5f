"""PNG plots of the benchmark report: learning curves (score, gold score, difficulty) and reward-hacking diagnostics.

Reads run records only; :func:`plot_env` draws one env's two figures with matplotlib's object API (no pyplot state,
safe in worker processes). Bands are ± the sample std (ddof=1) over seeds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.benchmarks.metrics import HackingRule, _finite
from aligngym.benchmarks.suite import env_slug


def _nan(x: Any) -> float:
    return float(x) if _finite(x) else float("nan")


def mean_curve(
    recs: Sequence[dict[str, Any]], x_key: str, y_key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, mean y and sample std y (ddof=1; 0 for a single run) over the runs' evaluation points.

    Points are aligned by index and truncated to the shortest curve; missing values are left out of each mean.
    """
    curves = [r.get("curve") or [] for r in recs]
    n = min((len(c) for c in curves), default=0)
    xs = np.array([[_nan(c[i].get(x_key)) for i in range(n)] for c in curves], dtype=float).reshape(
        len(curves), n
    )
    ys = np.array([[_nan(c[i].get(y_key)) for i in range(n)] for c in curves], dtype=float).reshape(
        len(curves), n
    )
    with warnings.catch_warnings():  # all-NaN columns (metrics not measured for an agent) are expected
        warnings.simplefilter("ignore", category=RuntimeWarning)
        std = np.nanstd(ys, axis=0, ddof=1) if len(curves) > 1 else np.zeros(n)
        return np.nanmean(xs, axis=0), np.nanmean(ys, axis=0), np.nan_to_num(std)


def _label(agent: str, recs: Sequence[dict[str, Any]]) -> str:
    return f"{agent} (oracle)" if any(r.get("oracle") for r in recs) else agent


def _plot_levels(ax: Any, recs: Sequence[dict[str, Any]], color: Any) -> None:
    """The training level at each evaluation point (solid, mean over seeds) and, under a curriculum, the highest
    level mastered so far (dashed)."""
    x, level, _ = mean_curve(recs, "step", "difficulty")
    if np.isfinite(level).any():
        ax.plot(x, level, drawstyle="steps-post", marker="o", ms=3, color=color)
    x, mastered, _ = mean_curve(recs, "step", "mastered")
    if np.isfinite(mastered).any():
        ax.plot(x, mastered, drawstyle="steps-post", ls="--", color=color)


def _level_title(recs: Sequence[dict[str, Any]]) -> str:
    levels = sorted(
        {int(p["eval_difficulty"]) for r in recs for p in r["curve"] if _finite(p.get("eval_difficulty"))}
    )
    where = f"; evaluated at level {', '.join(map(str, levels))}" if levels else ""
    return f"training level (solid), mastered (dashed){where}"


def plot_env(
    records: Sequence[dict[str, Any]], env_id: str, plots_dir: Path, rule: HackingRule
) -> list[Path]:
    """Two PNGs for one env.

    ``<env>_curves.png``: test score vs env steps and vs training wall time, plus the gold score vs env steps when
    the env reports one (gold beside the proxy score), and the training difficulty level vs env steps when the env
    has levels (a curriculum's mastered level dashed). ``<env>_hacking.png``: score vs distinct-2 and score vs KL
    to the reference measured on the evaluation completions, one trajectory per agent from step 0 to the end.
    """
    from matplotlib.figure import Figure

    ok = [r for r in records if r["env_id"] == env_id and r.get("status") == "ok" and r.get("curve")]
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        by_agent.setdefault(r["agent"], []).append(r)
    paths = []
    slug = env_slug(env_id)
    has_gold = any(_finite(p.get("gold_score")) for r in ok for p in r["curve"])
    has_level = any(_finite(p.get("difficulty")) for r in ok for p in r["curve"])

    panels = [("step", "mean_score"), ("train_time", "mean_score")] + (
        [("step", "gold_score")] if has_gold else []
    )
    fig = Figure(figsize=(5.5 * (len(panels) + has_level), 4), layout="constrained")
    axes = fig.subplots(1, len(panels) + has_level)
    for agent, recs in by_agent.items():
        color = None
        for ax, (x_key, y_key) in zip(axes, panels):
            x, y, s = mean_curve(recs, x_key, y_key)
            (line,) = ax.plot(
                x, y, marker="o", ms=3, label=f"{_label(agent, recs)} (n={len(recs)})", color=color
            )
            color = line.get_color()
            ax.fill_between(x, y - s, y + s, alpha=0.2, color=color)
        if has_level:
            _plot_levels(axes[len(panels)], recs, color)
    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("training wall time (s)")
    for ax, (_, y_key) in zip(axes, panels):
        ax.set_ylabel("mean test gold score" if y_key == "gold_score" else "mean test score (proxy)")
        ax.grid(alpha=0.3)
    if has_gold:
        axes[2].set_xlabel("env steps")
        axes[2].set_title("gold score (never in the reward)", fontsize=9)
    if has_level:
        ax = axes[len(panels)]
        ax.set_xlabel("env steps")
        ax.set_ylabel("difficulty level")
        ax.set_title(_level_title(ok), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{slug}: test score (mean ± sample std over seeds, ddof=1)")
    path = plots_dir / f"{slug}_curves.png"
    fig.savefig(path, dpi=90)
    paths.append(path)

    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    any_kl = False
    for agent, recs in by_agent.items():
        _, d, _ = mean_curve(recs, "step", "distinct_2")
        _, y, _ = mean_curve(recs, "step", "mean_score")
        flagged = sum(rule.check(r["curve"])["flagged"] for r in recs)
        label = _label(agent, recs) + (f" (flagged {flagged}/{len(recs)})" if flagged else "")
        (line,) = axes[0].plot(d, y, marker="o", ms=3, label=label)
        if len(d):
            axes[0].scatter(d[:1], y[:1], marker="s", s=30, color=line.get_color())
            axes[0].scatter(d[-1:], y[-1:], marker="*", s=80, color=line.get_color())
        _, kl, _ = mean_curve(recs, "step", "kl")
        if np.isfinite(kl).any():
            any_kl = True
            axes[1].plot(kl, y, marker="o", ms=3, label=_label(agent, recs), color=line.get_color())
    axes[0].set_xlabel("distinct-2 of test completions (square: step 0, star: end)")
    axes[0].set_ylabel("mean test score")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("KL(policy || reference) on the test completions (nats per completion)")
    axes[1].set_ylabel("mean test score")
    if any_kl:
        axes[1].legend(fontsize=8)
    else:
        axes[1].text(
            0.5,
            0.5,
            "KL not measured for any agent here (see the report's notes)",
            ha="center",
            va="center",
            transform=axes[1].transAxes,
        )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{slug}: reward-hacking diagnostics")
    path = plots_dir / f"{slug}_hacking.png"
    fig.savefig(path, dpi=90)
    paths.append(path)
    return paths
