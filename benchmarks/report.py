"""The benchmark report: load run records, write the CSVs, the Markdown report and the PNG plots.

Everything here reads run records (the JSON of :mod:`aligngym.benchmarks.run`), so ``aligngym report DIR`` rebuilds
the outputs of an earlier suite without running anything.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.benchmarks.metrics import HackingRule, _finite
from aligngym.benchmarks.run import RUNS_DIR, _machine, _read_record
from aligngym.benchmarks.suite import RunSpec, env_slug

PLOTS_DIR = "plots"
RESULTS_CSV = "results.csv"
CURVES_CSV = "curves.csv"
REPORT_MD = "report.md"


def load_records(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every run record under ``out_dir/runs``, in the order of the last suite run there (``suite.json``), the
    rest by run id; unreadable files are skipped."""
    recs = [_read_record(p) for p in sorted((Path(out_dir) / RUNS_DIR).glob("*.json"))]
    found = [r for r in recs if r is not None and "run_id" in r]
    suite = _read_record(Path(out_dir) / "suite.json") or {}
    order: dict[str, int] = {}
    for i, spec in enumerate(suite.get("runs", [])):
        try:
            order[RunSpec(**spec).run_id] = i
        except (TypeError, ValueError):  # a suite.json written by another version
            continue
    return sorted(found, key=lambda r: (order.get(r["run_id"], len(order)), r["run_id"]))


def _fmt(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "-"


def _mean_std(values: Sequence[Any], digits: int = 3) -> str:
    vals = [float(v) for v in values if _finite(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals):.{digits}f}"


CSV_FIELDS = (
    "run_id",
    "env_id",
    "agent",
    "agent_name",
    "seed",
    "status",
    "env_steps",
    "train_time_s",
    "wall_time_s",
    "mean_return",
    "std_return",
    "mean_score",
    "std_score",
    "kl",
    "distinct_1",
    "distinct_2",
    "mean_length",
    "reward_components",
    "hacking_flag",
    "device",
    "error",
)


def _groups(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["env_id"], rec["agent"]), []).append(rec)
    return groups


def write_csv(records: Sequence[dict[str, Any]], path: Path, rule: HackingRule) -> Path:
    """One row per run: the final evaluation, timings, status and the hacking flag."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for rec in records:
            final = rec.get("final") or {}
            ok = rec.get("status") == "ok"
            writer.writerow(
                {
                    "run_id": rec["run_id"],
                    "env_id": rec["env_id"],
                    "agent": rec["agent"],
                    "agent_name": rec.get("agent_name", rec["agent"]),
                    "seed": rec.get("seed"),
                    "status": rec.get("status"),
                    "env_steps": rec.get("env_steps"),
                    "train_time_s": rec.get("train_time"),
                    "wall_time_s": rec.get("wall_time"),
                    **{
                        k: final.get(k)
                        for k in ("mean_return", "std_return", "mean_score", "std_score", "kl")
                    },
                    **{k: final.get(k) for k in ("distinct_1", "distinct_2", "mean_length")},
                    "reward_components": json.dumps(final.get("reward_components") or {}, sort_keys=True),
                    "hacking_flag": rule.check(rec.get("curve") or [])["flagged"] if ok else None,
                    "device": rec.get("device"),
                    "error": rec.get("error"),
                }
            )
    return path


def write_curves_csv(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row per evaluation point of every run (the learning curves)."""
    fields = ["run_id", "env_id", "agent", "seed", "step", "train_time", "wall_time"]
    fields += [
        "mean_return",
        "std_return",
        "mean_score",
        "std_score",
        "kl",
        "distinct_1",
        "distinct_2",
        "mean_length",
    ]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for rec in records:
            for point in rec.get("curve") or []:
                writer.writerow(
                    {
                        **point,
                        "run_id": rec["run_id"],
                        "env_id": rec["env_id"],
                        "agent": rec["agent"],
                        "seed": rec.get("seed"),
                    }
                )
    return path


def results_table(records: Sequence[dict[str, Any]], rule: HackingRule) -> str:
    """The Markdown table: one row per (env, agent), final test metrics as mean ± std over finished seeds."""
    head = (
        "| env | agent | seeds ok | env steps | return | score | KL | distinct-1 | distinct-2 | length | "
        "train s | hacking flag |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for (env_id, agent), recs in _groups(records).items():
        ok = [r for r in recs if r.get("status") == "ok"]
        finals = [r.get("final") or {} for r in ok]

        def col(key: str, recs_: Sequence[dict[str, Any]] = finals, digits: int = 3) -> str:
            return _mean_std([f.get(key) for f in recs_], digits)

        flags = [rule.check(r.get("curve") or [])["flagged"] for r in ok]
        n_flag = sum(flags)
        flag = (
            "-"
            if not ok
            else (
                f"**yes** ({n_flag}/{len(ok)})"
                if 2 * n_flag >= len(ok) and n_flag
                else f"no ({n_flag}/{len(ok)})"
            )
        )
        steps = _mean_std([r.get("env_steps") for r in ok], 0)
        rows.append(
            f"| {env_slug(env_id)} | {agent} | {len(ok)}/{len(recs)} | {steps} | {col('mean_return')} | "
            f"{col('mean_score')} | {col('kl')} | {col('distinct_1')} | {col('distinct_2')} | "
            f"{col('mean_length', digits=1)} | {_mean_std([r.get('train_time') for r in ok], 1)} | {flag} |"
        )
    return "\n".join(rows)


def components_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the final reward components per (env, agent), mean ± std over finished seeds."""
    rows = ["| env | agent | components |", "|---|---|---|"]
    for (env_id, agent), recs in _groups(records).items():
        finals = [
            (r.get("final") or {}).get("reward_components") or {} for r in recs if r.get("status") == "ok"
        ]
        names = list(dict.fromkeys(k for f in finals for k in f))
        if not finals:
            continue
        cells = ", ".join(f"{k} {_mean_std([f.get(k) for f in finals])}" for k in names) or "-"
        rows.append(f"| {env_slug(env_id)} | {agent} | {cells} |")
    return "\n".join(rows)


def _md_cell(text: Any, limit: int = 120) -> str:
    s = str(text).replace("\r", " ").replace("\n", "⏎").replace("|", "\\|").replace("`", "'")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _mean_curve(
    recs: Sequence[dict[str, Any]], x_key: str, y_key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, mean y, std y over the runs' evaluation points (aligned by index, truncated to the shortest curve)."""
    curves = [r.get("curve") or [] for r in recs]
    n = min((len(c) for c in curves), default=0)
    xs = np.array([[_nan(c[i].get(x_key)) for i in range(n)] for c in curves], dtype=float).reshape(
        len(curves), n
    )
    ys = np.array([[_nan(c[i].get(y_key)) for i in range(n)] for c in curves], dtype=float).reshape(
        len(curves), n
    )
    with warnings.catch_warnings():  # all-NaN columns (KL of agents that log none) are expected
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(xs, axis=0), np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)


def _nan(x: Any) -> float:
    return float(x) if _finite(x) else float("nan")


def plot_env(
    records: Sequence[dict[str, Any]], env_id: str, plots_dir: Path, rule: HackingRule
) -> list[Path]:
    """Two PNGs for one env: learning curves (score vs env steps and vs training wall time) and the hacking
    diagnostics (score vs distinct-2 and score vs KL, one trajectory per agent from step 0 to the end)."""
    from matplotlib.figure import Figure

    ok = [r for r in records if r["env_id"] == env_id and r.get("status") == "ok" and r.get("curve")]
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        by_agent.setdefault(r["agent"], []).append(r)
    paths = []
    slug = env_slug(env_id)

    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for agent, recs in by_agent.items():
        for ax, x_key in zip(axes, ("step", "train_time")):
            x, y, s = _mean_curve(recs, x_key, "mean_score")
            (line,) = ax.plot(x, y, marker="o", ms=3, label=f"{agent} (n={len(recs)})")
            ax.fill_between(x, y - s, y + s, alpha=0.2, color=line.get_color())
    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("training wall time (s)")
    for ax in axes:
        ax.set_ylabel("mean test score")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{slug}: test score (mean ± std over seeds)")
    path = plots_dir / f"{slug}_curves.png"
    fig.savefig(path, dpi=90)
    paths.append(path)

    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    any_kl = False
    for agent, recs in by_agent.items():
        _, d, _ = _mean_curve(recs, "step", "distinct_2")
        _, y, _ = _mean_curve(recs, "step", "mean_score")
        flagged = sum(rule.check(r["curve"])["flagged"] for r in recs)
        label = f"{agent}" + (f" (flagged {flagged}/{len(recs)})" if flagged else "")
        (line,) = axes[0].plot(d, y, marker="o", ms=3, label=label)
        if len(d):
            axes[0].scatter(d[:1], y[:1], marker="s", s=30, color=line.get_color())
            axes[0].scatter(d[-1:], y[-1:], marker="*", s=80, color=line.get_color())
        _, kl, _ = _mean_curve(recs, "step", "kl")
        if np.isfinite(kl).any():
            any_kl = True
            axes[1].plot(kl, y, marker="o", ms=3, label=agent, color=line.get_color())
    axes[0].set_xlabel("distinct-2 of test completions (square: step 0, star: end)")
    axes[0].set_ylabel("mean test score")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("KL to the reference (charts/kl)")
    axes[1].set_ylabel("mean test score")
    if any_kl:
        axes[1].legend(fontsize=8)
    else:
        axes[1].text(
            0.5, 0.5, "no agent here logs charts/kl", ha="center", va="center", transform=axes[1].transAxes
        )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{slug}: reward-hacking diagnostics")
    path = plots_dir / f"{slug}_hacking.png"
    fig.savefig(path, dpi=90)
    paths.append(path)
    return paths


def render_report(
    records: Sequence[dict[str, Any]],
    rule: HackingRule,
    plots: dict[str, list[Path]],
    out_dir: Path,
    suite_meta: dict[str, Any] | None = None,
) -> str:
    """The Markdown report (results table, curves, hacking diagnostics, failures, samples)."""
    ok = [r for r in records if r.get("status") == "ok"]
    machine = next((r.get("machine") for r in records if r.get("machine")), None) or _machine()
    devices = sorted({str(r.get("device")) for r in ok if r.get("device")}) or ["-"]
    name = (suite_meta or {}).get("name", "ad hoc")
    lines = [
        "# aligngym benchmark report",
        "",
        f"Suite **{name}**: {len(records)} runs, {len(ok)} ok, {len(records) - len(ok)} failed. "
        f"Machine: {machine.get('platform')}, {machine.get('cpu_count')} CPUs"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU")
        + f"; device(s): {', '.join(devices)}.",
        "",
        "## Results",
        "",
        "Final evaluation on each env's test split (every test prompt once unless the suite sets `eval_episodes`), "
        "mean ± std over seeds. KL is the agent's own `charts/kl` to the reference (- where it logs none); distinct-n "
        "is corpus-level over the completions' token ids; length is in tokens.",
        "",
        results_table(records, rule),
        "",
        'Reward components (`info["reward_components"]`, mean over the final evaluation, mean ± std over seeds):',
        "",
        components_table(records),
        "",
        "## Learning curves",
        "",
    ]
    for env_id, paths in plots.items():
        png = next((p for p in paths if p.name.endswith("_curves.png")), None)
        if png is not None:
            lines += [f"![{env_slug(env_id)} learning curves]({png.relative_to(out_dir).as_posix()})", ""]
    lines += ["## Reward-hacking diagnostics", "", rule.describe(), ""]
    lines += [
        "| run | score start -> end | metric | diversity start -> end | ratio | KL end | flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for rec in ok:
        curve = rec.get("curve") or []
        chk = rule.check(curve)
        s0 = curve[0].get("mean_score") if curve else None
        st = curve[-1].get("mean_score") if curve else None
        lines.append(
            f"| {rec['run_id']} | {_fmt(s0)} -> {_fmt(st)} | {chk['metric']} | {_fmt(chk['diversity_start'])} -> "
            f"{_fmt(chk['diversity_end'])} | {_fmt(chk['diversity_ratio'], 2)} | {_fmt((rec.get('final') or {}).get('kl'))} | "
            f"{'**yes**' if chk['flagged'] else 'no'} |"
        )
    lines.append("")
    for env_id, paths in plots.items():
        hack = next((p for p in paths if p.name.endswith("_hacking.png")), None)
        if hack is not None:
            lines += [
                f"![{env_slug(env_id)} hacking diagnostics]({hack.relative_to(out_dir).as_posix()})",
                "",
            ]
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        lines += ["## Failed runs", "", "| run | error |", "|---|---|"]
        lines += [f"| {r['run_id']} | {_md_cell(r.get('error'), 200)} |" for r in failed]
        lines += ["", f"Tracebacks are in `{RUNS_DIR}/<run>.json`.", ""]
    lines += [
        "## Sample completions",
        "",
        "First test prompts at the final evaluation of each row's first finished seed.",
        "",
    ]
    for (env_id, agent), recs in _groups(ok).items():
        rec = recs[0]
        lines += [
            f"**{env_slug(env_id)} / {agent}** (seed {rec.get('seed')})",
            "",
            "| prompt | completion | score |",
            "|---|---|---|",
        ]
        for s in rec.get("samples") or []:
            lines.append(
                f"| {_md_cell(s.get('prompt'))} | {_md_cell(s.get('completion'))} | {_fmt(s.get('score'))} |"
            )
        lines.append("")
    lines += [
        "## Files",
        "",
        f"`{RUNS_DIR}/<run>.json` (spec, curve, samples, traceback), `{RESULTS_CSV}` (one row per run), "
        f"`{CURVES_CSV}` (every evaluation point), `{PLOTS_DIR}/*.png`, TensorBoard logs in `{RUNS_DIR}/<run>/tb` "
        f"(`tensorboard --logdir {out_dir / RUNS_DIR}`).",
        "",
    ]
    return "\n".join(lines)


def write_outputs(
    records: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    rule: HackingRule | None = None,
    suite_meta: dict[str, Any] | None = None,
) -> tuple[Path, Path, str]:
    """``results.csv``, ``curves.csv``, ``plots/*.png`` and ``report.md`` from run records.

    :returns: the CSV path, the report path and the results table (Markdown).
    """
    rule = rule or HackingRule()
    out = Path(out_dir)
    plots_dir = out / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(records, out / RESULTS_CSV, rule)
    write_curves_csv(records, out / CURVES_CSV)
    env_ids = list(dict.fromkeys(r["env_id"] for r in records if r.get("status") == "ok" and r.get("curve")))
    plots = {env_id: plot_env(records, env_id, plots_dir, rule) for env_id in env_ids}
    report = render_report(records, rule, plots, out, suite_meta)
    report_path = out / REPORT_MD
    tmp = report_path.with_name(f".{REPORT_MD}.tmp")
    tmp.write_text(report, encoding="utf-8")
    os.replace(tmp, report_path)
    return csv_path, report_path, results_table(records, rule)
