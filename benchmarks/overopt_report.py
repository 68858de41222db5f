"""Outputs of the Goodhart-curve protocol of ``benchmarks/overopt.py``.

JSON (everything), CSV (every point), Markdown (the fitted coefficients and the curves) and a PNG plot: best-of-n
in one panel, the RL runs beside it with their fitted curve and the best-of-n gold of the same proxy for comparison.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.benchmarks.overopt import FORMS, form_value

CSV_HEADER = ["task", "method", "proxy", "run", "n_or_steps", "kl", "d", "proxy_score", "gold_score"]


# -- outputs ----------------------------------------------------------------------------------------------------------
def coefficient_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (method, proxy, run, curve): alpha, beta, r2 and the form (``run`` is ``"all"`` for best-of-n and
    for the RL fit pooled over every run's checkpoints)."""
    rows = []
    bon = result.get("best_of_n") or {"curves": {}}
    for name, c in bon["curves"].items():
        for which in ("gold", "proxy"):
            f = c[f"fit_{which}"]
            rows.append(
                {
                    "method": "best_of_n",
                    "proxy": name,
                    "run": "all",
                    "curve": which,
                    "form": FORMS["bon"],
                    **f,
                }
            )
    rl = result.get("rl")
    if rl:
        fits = {"all": {"gold": rl["fit_gold"], "proxy": rl["fit_proxy"]}} if "fit_gold" in rl else {}
        fits.update({k: v for k, v in rl.get("fits", {}).items() if "gold" in v})
        for run, pair in fits.items():
            for which in ("gold", "proxy"):
                rows.append(
                    {
                        "method": "rl_ppo",
                        "proxy": rl["proxy"],
                        "run": run,
                        "curve": which,
                        "form": FORMS["rl"],
                        **pair[which],
                    }
                )
    return rows


def _csv_rows(result: dict[str, Any]) -> list[list[Any]]:
    out: list[list[Any]] = []
    task = result["task"]
    for name, c in (result.get("best_of_n") or {"curves": {}})["curves"].items():
        for r in c["points"]:
            out.append([task, "best_of_n", name, "", r["n"], r["kl"], r["d"], r["proxy"], r["gold"]])
    rl: dict[str, Any] = result.get("rl") or {}
    for run, rows in rl.get("runs", {}).items():
        for r in rows:
            out.append([task, "rl_ppo", rl["proxy"], run, r["steps"], r["kl"], r["d"], r["proxy"], r["gold"]])
    return out


def _part_line(name: str, part: dict[str, Any], result: dict[str, Any]) -> list[str]:
    command = part.get("command", result.get("command", ""))
    machine = part.get("machine", result.get("machine", ""))
    seconds = part.get("seconds", result.get("seconds"))
    took = f"; {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
    return [f"{name}: `{command}`  ", f"Machine: {machine}{took}.", ""]


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report: commands, the coefficient table, then every point."""
    lines = [f"# Goodhart curves: {result['task']} (gold: {result['gold']})", ""]
    bon, rl = result.get("best_of_n"), result.get("rl")
    if bon:
        lines += _part_line("Best-of-n command", bon, result)
    if rl:
        lines += _part_line("RL command", rl, result)
        lines += [
            f"PPO against `{rl['proxy']}` at fixed KL coefficients {rl['kl_coefs']}, {rl['steps']} env steps each "
            f"(learning rate {rl.get('learning_rate', 'n/a')}, {rl.get('num_envs', 16)} episodes per update), "
            f"{rl['evals']} checkpoints per run; at each, "
            f"{rl['n_eval']} samples on each of {rl.get('prompts', 'the')} test prompts give KL (mean over samples of "
            "sum log pi - log pi_ref), proxy and gold. Training env: `gold=False`.",
            "",
        ]
    lines += [
        "| method | proxy | run | curve | form | alpha | beta | R^2 | points |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in coefficient_rows(result):
        lines.append(
            f"| {r['method']} | {r['proxy']} | {r['run']} | {r['curve']} | {r['form']} | {r['alpha']:.4f} | "
            f"{r['beta']:.4f} | {r['r2']:.3f} | {r['points']} |"
        )
    if rl:
        from aligngym.benchmarks.overopt_rl import peak_gold

        peak = peak_gold(rl)
        lines.append("")
        if peak:
            lines.append(
                f"RL gold fit (pooled) peaks at d = {peak['d']:.2f} (KL {peak['kl']:.2f} nats), gain "
                f"{peak['gain']:+.3f} over the reference."
            )
        else:
            lines.append(
                "RL gold fit (pooled): beta <= 0, no peak (gold still rising at the largest d reached)."
            )
        lines += [
            "",
            "| run | steps | KL | d | proxy score | gold score | gold s.e. | train KL | train score |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for run, rows in rl["runs"].items():
            for r in rows:
                lines.append(
                    f"| {run} | {r['steps']} | {r['kl']:.3f} | {r['d']:.3f} | {r['proxy']:.4f} | {r['gold']:.4f} | "
                    f"{r.get('gold_se', float('nan')):.4f} | {r.get('train_kl', float('nan')):.3f} | "
                    f"{r.get('train_score', float('nan')):.3f} |"
                )
    if bon:
        lines += ["", "| proxy | n | d | proxy score | gold score |", "|---|---|---|---|---|"]
        for name, c in bon["curves"].items():
            for r in c["points"]:
                lines.append(f"| {name} | {r['n']} | {r['d']:.3f} | {r['proxy']:.4f} | {r['gold']:.4f} |")
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``overopt.json``, ``overopt.csv`` (every point), ``overopt.md`` (coefficients) and ``overopt.png``."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    files = {k: path / f"overopt.{k}" for k in ("json", "csv", "md", "png")}
    files["json"].write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with files["csv"].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        w.writerows(_csv_rows(result))
    files["md"].write_text(markdown(result), encoding="utf-8")
    plot(result, files["png"])
    return files


def plot(result: dict[str, Any], path: Path) -> None:
    """Gold (solid, with the fitted curve dashed) and proxy (dotted) against d for every proxy; RL in a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bon, rl = result.get("best_of_n"), result.get("rl")
    panels = int(bool(bon)) + int(bool(rl))
    if panels == 0:
        raise ValueError("the result has neither best_of_n nor rl; nothing to plot")
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
    if bon:
        ax = axes[0][0]
        for i, (name, c) in enumerate(bon["curves"].items()):
            color = f"C{i}"
            d = np.array([r["d"] for r in c["points"]])
            g = np.array([r["gold"] for r in c["points"]])
            p = np.array([r["proxy"] for r in c["points"]])
            f = c["fit_gold"]
            grid = np.linspace(0, d.max(), 100)
            ax.plot(d, g, "o-", color=color, label=f"gold | proxy={name}")
            ax.plot(grid, g[0] + form_value(grid, "bon", f["alpha"], f["beta"]), "--", color=color, alpha=0.6)
            ax.plot(d, p, ":", color=color, alpha=0.8, label=f"proxy {name}")
        ax.set_xlabel(f"d = sqrt(KL) (nats^0.5), best-of-n, n = 1..{bon['n_max']}")
        ax.set_ylabel("score")
        ax.set_title(f"{result['task']}: best-of-n (gold: {result['gold']})")
        ax.legend(fontsize=7)
    if rl:
        ax = axes[0][panels - 1]
        for i, (run, rows) in enumerate(rl["runs"].items()):
            rd = [r["d"] for r in rows]
            ax.plot(rd, [r["gold"] for r in rows], "o-", color=f"C{i}", label=f"gold {run}")
            ax.plot(rd, [r["proxy"] for r in rows], "x:", color=f"C{i}", alpha=0.8, label=f"proxy {run}")
        first = next(iter(rl["runs"].values()))[0]
        d_max = max(r["d"] for rows in rl["runs"].values() for r in rows)
        grid = np.linspace(0, max(d_max, 1e-6), 100)
        if "fit_gold" in rl:
            f = rl["fit_gold"]
            ax.plot(
                grid, first["gold"] + form_value(grid, "rl", f["alpha"], f["beta"]), "k--", label="gold fit"
            )
        if bon and rl["proxy"] in bon["curves"]:
            c = bon["curves"][rl["proxy"]]
            bd = [r["d"] for r in c["points"]]
            ax.plot(
                bd, [r["gold"] for r in c["points"]], "s-", color="grey", alpha=0.5, label="gold best-of-n"
            )
        ax.set_xlabel("d = sqrt(KL) on evaluation completions (PPO)")
        ax.set_ylabel("score")
        ax.set_title(f"{result['task']}: PPO against {rl['proxy']}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
