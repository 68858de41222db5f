"""Outputs of the Goodhart-curve protocol of ``benchmarks/overopt.py``.

JSON (everything), CSV (every point), Markdown (the fitted coefficients and the curves) and a PNG plot.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.benchmarks.overopt import FORMS, form_value


# -- outputs ----------------------------------------------------------------------------------------------------------
def coefficient_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (method, proxy, curve): alpha, beta, r2 and the form."""
    rows = []
    for name, c in result["best_of_n"]["curves"].items():
        for which in ("gold", "proxy"):
            f = c[f"fit_{which}"]
            rows.append({"method": "best_of_n", "proxy": name, "curve": which, "form": FORMS["bon"], **f})
    rl = result.get("rl")
    if rl and "fit_gold" in rl:
        for which in ("gold", "proxy"):
            f = rl[f"fit_{which}"]
            rows.append({"method": "rl_ppo", "proxy": rl["proxy"], "curve": which, "form": FORMS["rl"], **f})
    return rows


def write_outputs(result: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``overopt.json``, ``overopt.csv`` (every point), ``overopt.md`` (coefficients) and ``overopt.png``."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    files = {k: path / f"overopt.{k}" for k in ("json", "csv", "md", "png")}
    files["json"].write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with files["csv"].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["task", "method", "proxy", "run", "n_or_steps", "kl", "d", "proxy_score", "gold_score"])
        for name, c in result["best_of_n"]["curves"].items():
            for r in c["points"]:
                w.writerow(
                    [result["task"], "best_of_n", name, "", r["n"], r["kl"], r["d"], r["proxy"], r["gold"]]
                )
        rl: dict[str, Any] = result.get("rl") or {}
        for run, rows in rl.get("runs", {}).items():
            for r in rows:
                w.writerow(
                    [
                        result["task"],
                        "rl_ppo",
                        rl["proxy"],
                        run,
                        r["steps"],
                        r["kl"],
                        r["d"],
                        r["proxy"],
                        r["gold"],
                    ]
                )
    lines = [
        f"# Goodhart curves: {result['task']} (gold: {result['gold']})",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}; {result['seconds']:.0f} s.",
        "",
        "| method | proxy | curve | form | alpha | beta | R^2 | points |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in coefficient_rows(result):
        lines.append(
            f"| {r['method']} | {r['proxy']} | {r['curve']} | {r['form']} | {r['alpha']:.4f} | {r['beta']:.4f} | "
            f"{r['r2']:.3f} | {r['points']} |"
        )
    lines += ["", "| proxy | n | d | proxy score | gold score |", "|---|---|---|---|---|"]
    for name, c in result["best_of_n"]["curves"].items():
        for r in c["points"]:
            lines.append(f"| {name} | {r['n']} | {r['d']:.3f} | {r['proxy']:.4f} | {r['gold']:.4f} |")
    files["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(result, files["png"])
    return files


def plot(result: dict[str, Any], path: Path) -> None:
    """Gold (solid, with the fitted curve dashed) and proxy (dotted) against d for every proxy; RL in a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rl = result.get("rl")
    fig, axes = plt.subplots(1, 2 if rl else 1, figsize=(12 if rl else 6.5, 4.5), squeeze=False)
    ax = axes[0][0]
    for i, (name, c) in enumerate(result["best_of_n"]["curves"].items()):
        color = f"C{i}"
        d = np.array([r["d"] for r in c["points"]])
        g = np.array([r["gold"] for r in c["points"]])
        p = np.array([r["proxy"] for r in c["points"]])
        f = c["fit_gold"]
        grid = np.linspace(0, d.max(), 100)
        ax.plot(d, g, "o-", color=color, label=f"gold | proxy={name}")
        ax.plot(grid, g[0] + form_value(grid, "bon", f["alpha"], f["beta"]), "--", color=color, alpha=0.6)
        ax.plot(d, p, ":", color=color, alpha=0.8, label=f"proxy {name}")
    ax.set_xlabel(f"d = sqrt(KL) (nats^0.5), best-of-n, n = 1..{result['best_of_n']['n_max']}")
    ax.set_ylabel("score")
    ax.set_title(f"{result['task']}: best-of-n (gold: {result['gold']})")
    ax.legend(fontsize=7)
    if rl:
        ax = axes[0][1]
        for i, (run, rows) in enumerate(rl["runs"].items()):
            rd = [r["d"] for r in rows]
            ax.plot(rd, [r["gold"] for r in rows], "o-", color=f"C{i}", label=f"gold {run}")
            ax.plot(rd, [r["proxy"] for r in rows], ":", color=f"C{i}", label=f"proxy {run}")
        ax.set_xlabel("d = sqrt(KL) on evaluation completions (PPO)")
        ax.set_title(f"{result['task']}: PPO against {rl['proxy']}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
