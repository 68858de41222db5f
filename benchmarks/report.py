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

from aligngym.benchmarks.metrics import HackingRule, _finite, mean_std
from aligngym.benchmarks.plots import plot_env
from aligngym.benchmarks.run import RUNS_DIR, _machine, read_record
from aligngym.benchmarks.suite import RunSpec, env_slug

PLOTS_DIR = "plots"
RESULTS_CSV = "results.csv"
CURVES_CSV = "curves.csv"
REPORT_MD = "report.md"


def _suite_order(out_dir: Path) -> dict[str, int]:
    """Run id -> position in the last suite run in ``out_dir`` (``suite.json``), empty when there is none."""
    try:
        suite = json.loads((out_dir / "suite.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    order: dict[str, int] = {}
    for i, spec in enumerate(suite.get("runs", []) if isinstance(suite, dict) else []):
        try:
            order[RunSpec(**spec).run_id] = i
        except (TypeError, ValueError):  # a suite.json written by another version
            continue
    return order


def load_records(
    out_dir: str | Path, *, unreadable: list[dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Every readable run record under ``out_dir/runs``, in the order of the last suite run there (``suite.json``),
    the rest by run id.

    A file that cannot be read as a run record (truncated, corrupt, not a record) is never dropped silently: it is
    appended to ``unreadable`` as ``{"file", "reason"}`` when a list is given, and a ``UserWarning`` names it.
    """
    out = Path(out_dir)
    found: list[dict[str, Any]] = []
    for path in sorted((out / RUNS_DIR).glob("*.json")):
        try:
            found.append(upgrade_record(read_record(path)))
        except ValueError as err:
            entry = {"file": str(path), "reason": str(err)}
            if unreadable is not None:
                unreadable.append(entry)
            warnings.warn(f"unreadable run record {path}: {err}", UserWarning, stacklevel=2)
    order = _suite_order(out)
    return sorted(found, key=lambda r: (order.get(r["run_id"], len(order)), r["run_id"]))


def upgrade_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A record of an older harness in today's terms (in place): schema 1 stored the agent's last training-batch
    ``charts/kl`` as ``kl``; it moves to ``train_kl`` so that no table shows it as the KL measured on evaluation."""
    if int(rec.get("schema") or 1) < 2:
        for point in [*(rec.get("curve") or []), rec.get("final") or {}]:
            if "kl" in point and "kl_note" not in point:
                point["train_kl"] = point.pop("kl")
                point["kl_note"] = (
                    "recorded by an older harness (schema 1): only the training-batch KL (train_kl)"
                )
    return rec


def unreadable_records(out_dir: str | Path) -> list[dict[str, str]]:
    """``{"file", "reason"}`` for every ``runs/*.json`` of ``out_dir`` that is not a readable run record."""
    bad: list[dict[str, str]] = []
    for path in sorted((Path(out_dir) / RUNS_DIR).glob("*.json")):
        try:
            read_record(path)
        except ValueError as err:
            bad.append({"file": str(path), "reason": str(err)})
    return bad


def _fmt(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "-"


def _mean_std(values: Sequence[Any], digits: int = 3) -> str:
    """``"mean ± sample std"`` (ddof=1) of the finite values; one value alone, ``-`` for none."""
    mean, std, _ = mean_std(values)
    if mean is None:
        return "-"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


#: the evaluation metrics of every run, in the order of the CSVs (see :mod:`aligngym.benchmarks.metrics`)
METRICS = (
    "mean_return",
    "std_return",
    "mean_score",
    "std_score",
    "gold_score",
    "gold_minus_score",
    "kl",
    "ref_ppl",
    "distinct_1",
    "distinct_2",
    "repetition",
    "length",
    "mean_length",
)
CSV_FIELDS = (
    "run_id",
    "env_id",
    "agent",
    "agent_name",
    "oracle",
    "seed",
    "status",
    "env_steps",
    "train_time_s",
    "wall_time_s",
    *METRICS,
    "kl_note",
    "ref_ppl_note",
    "reward_components",
    "gold_components",
    "hacking_flag",
    "hacking_reason",
    "device",
    "error",
)


def _metric(point: dict[str, Any], key: str) -> Any:
    """A metric of an evaluation point; ``gold_minus_score`` derived, ``length`` from ``mean_length`` if absent."""
    if key == "gold_minus_score":
        g: Any = point.get("gold_score")
        sc: Any = point.get("mean_score")
        return float(g) - float(sc) if _finite(g) and _finite(sc) else None
    if key == "length" and point.get("length") is None:
        return point.get("mean_length")
    return point.get(key)


def _groups(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["env_id"], rec["agent"]), []).append(rec)
    return groups


def agent_label(agent: str, recs: Sequence[dict[str, Any]]) -> str:
    """The agent's name in tables: ``"guided-decoding (oracle)"`` when a run of it is an oracle."""
    return f"{agent} (oracle)" if any(r.get("oracle") for r in recs) else agent


def write_csv(records: Sequence[dict[str, Any]], path: Path, rule: HackingRule) -> Path:
    """One row per run: the final evaluation's metrics (with notes where one is not measured), timings, status and
    the hacking flag with its reason."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for rec in records:
            final = rec.get("final") or {}
            chk = rule.check(rec.get("curve") or []) if rec.get("status") == "ok" else None
            writer.writerow(
                {
                    "run_id": rec["run_id"],
                    "env_id": rec["env_id"],
                    "agent": rec["agent"],
                    "agent_name": rec.get("agent_name", rec["agent"]),
                    "oracle": bool(rec.get("oracle")),
                    "seed": rec.get("seed"),
                    "status": rec.get("status"),
                    "env_steps": rec.get("env_steps"),
                    "train_time_s": rec.get("train_time"),
                    "wall_time_s": rec.get("wall_time"),
                    **{k: _metric(final, k) for k in METRICS},
                    "kl_note": final.get("kl_note"),
                    "ref_ppl_note": final.get("ref_ppl_note"),
                    "reward_components": json.dumps(final.get("reward_components") or {}, sort_keys=True),
                    "gold_components": json.dumps(final.get("gold_components") or {}, sort_keys=True),
                    "hacking_flag": chk["flagged"] if chk else None,
                    "hacking_reason": chk["reason"] if chk else None,
                    "device": rec.get("device"),
                    "error": rec.get("error"),
                }
            )
    return path


def write_curves_csv(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row per evaluation point of every run (the learning curves)."""
    fields = ["run_id", "env_id", "agent", "seed", "step", "train_time", "wall_time", *METRICS, *LEVEL_FIELDS]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for rec in records:
            for point in rec.get("curve") or []:
                writer.writerow(
                    {
                        **{k: _metric(point, k) for k in METRICS},
                        "step": point.get("step"),
                        "train_time": point.get("train_time"),
                        "wall_time": point.get("wall_time"),
                        **{k: point.get(k) for k in LEVEL_FIELDS},
                        "run_id": rec["run_id"],
                        "env_id": rec["env_id"],
                        "agent": rec["agent"],
                        "seed": rec.get("seed"),
                    }
                )
    return path


#: (column title, metric key, digits) of the results table
TABLE_COLUMNS = (
    ("return", "mean_return", 3),
    ("score", "mean_score", 3),
    ("gold", "gold_score", 3),
    ("KL", "kl", 3),
    ("ref ppl", "ref_ppl", 2),
    ("distinct-1", "distinct_1", 3),
    ("distinct-2", "distinct_2", 3),
    ("repetition", "repetition", 3),
    ("length", "length", 1),
)


def results_table(records: Sequence[dict[str, Any]], rule: HackingRule) -> str:
    """The Markdown table: one row per (env, agent), final test metrics as mean ± sample std (ddof=1) over the
    finished seeds (their number is the "seeds ok" column, n); ``-`` where a metric is not measured (see notes)."""
    titles = " | ".join(t for t, _, _ in TABLE_COLUMNS)
    head = (
        f"| env | agent | seeds ok | env steps | {titles} | train s | hacking flag |\n"
        f"|{'---|' * (len(TABLE_COLUMNS) + 6)}"
    )
    rows = [head]
    for (env_id, agent), recs in _groups(records).items():
        ok = [r for r in recs if r.get("status") == "ok"]
        finals = [r.get("final") or {} for r in ok]
        cells = [_mean_std([_metric(f, key) for f in finals], digits) for _, key, digits in TABLE_COLUMNS]
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
            f"| {env_slug(env_id)} | {agent_label(agent, recs)} | {len(ok)}/{len(recs)} | {steps} | "
            f"{' | '.join(cells)} | {_mean_std([r.get('train_time') for r in ok], 1)} | {flag} |"
        )
    return "\n".join(rows)


def notes_table(records: Sequence[dict[str, Any]]) -> str:
    """Why a metric is missing, per (env, agent): the distinct ``kl_note`` / ``ref_ppl_note`` / ``gold_note``."""
    rows = ["| env | agent | metric | not measured because |", "|---|---|---|---|"]
    for (env_id, agent), recs in _groups(records).items():
        finals = [r.get("final") or {} for r in recs if r.get("status") == "ok"]
        for key in ("kl", "ref_ppl", "gold"):
            for note in dict.fromkeys(f.get(f"{key}_note") for f in finals if f.get(f"{key}_note")):
                rows.append(
                    f"| {env_slug(env_id)} | {agent_label(agent, recs)} | {key} | {_md_cell(note, 300)} |"
                )
    return "\n".join(rows) if len(rows) > 2 else ""


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
        rows.append(f"| {env_slug(env_id)} | {agent_label(agent, recs)} | {cells} |")
    return "\n".join(rows)


#: what a curve point of an env with difficulty levels adds (see :func:`aligngym.benchmarks.run.level_fields`)
LEVEL_FIELDS = ("difficulty", "eval_difficulty", "mastered", "highest_level")


def levels_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table of difficulty per (env, agent) for envs with levels: the training level at the end, the
    highest level a curriculum mastered, and the level of the evaluation (mean ± std over finished seeds);
    empty when no run has levels."""
    rows = [
        "| env | agent | curriculum | training level at end | mastered | evaluated at level |",
        "|---|---|---|---|---|---|",
    ]
    for (env_id, agent), recs in _groups(records).items():
        ok = [r for r in recs if r.get("status") == "ok"]
        finals = [r.get("final") or {} for r in ok]
        if not any(f.get("difficulty") is not None for f in finals):
            continue
        config = next((r["curriculum"].get("config") for r in ok if r.get("curriculum")), None)
        mode = (
            "-"
            if config is None
            else ("fixed: " + str(config["schedule"]) if config.get("schedule") else "adaptive")
        )
        rows.append(
            f"| {env_slug(env_id)} | {agent_label(agent, recs)} | {_md_cell(mode, 40)} | "
            f"{_mean_std([f.get('difficulty') for f in finals], 2)} | "
            f"{_mean_std([f.get('mastered') for f in finals], 2)} | "
            f"{_mean_std([f.get('eval_difficulty') for f in finals], 0)} |"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def _md_cell(text: Any, limit: int = 120) -> str:
    s = str(text).replace("\r", " ").replace("\n", "⏎").replace("|", "\\|").replace("`", "'")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def render_report(
    records: Sequence[dict[str, Any]],
    rule: HackingRule,
    plots: dict[str, list[Path]],
    out_dir: Path,
    suite_meta: dict[str, Any] | None = None,
    unreadable: Sequence[dict[str, str]] = (),
) -> str:
    """The Markdown report (results table, curves, hacking diagnostics, unreadable files, failures, samples).

    :param unreadable: ``{"file", "reason"}`` of run files that could not be read (listed, never dropped).
    """
    ok = [r for r in records if r.get("status") == "ok"]
    machine = next((r.get("machine") for r in records if r.get("machine")), None) or _machine()
    devices = sorted({str(r.get("device")) for r in ok if r.get("device")}) or ["-"]
    name = (suite_meta or {}).get("name", "ad hoc")
    lines = [
        "# aligngym benchmark report",
        "",
        f"Suite **{name}**: {len(records)} runs, {len(ok)} ok, {len(records) - len(ok)} failed"
        + (f", {len(unreadable)} unreadable run file(s)" if unreadable else "")
        + ". "
        f"Machine: {machine.get('platform')}, {machine.get('cpu_count')} CPUs"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU")
        + f"; device(s): {', '.join(devices)}.",
        "",
        "## Results",
        "",
        "Final evaluation on each env's test split (every test prompt once unless the suite sets `eval_episodes`). "
        "Cells are mean ± sample std (ddof=1) over seeds, n = the number of finished seeds (the *seeds ok* column; "
        "a single value when n = 1). *score* is the task scorer (the training reward's score); *gold* the env's "
        '`info["gold_score"]`, a judge the agent never trains on; *KL* is KL(policy || reference) measured on the '
        "evaluation completions (sum over generated tokens of log pi - log pi_ref, mean over completions; pi = the "
        "agent's policy model at its sampling temperature, pi_ref = the env's reference LM); *ref ppl* the "
        "perplexity of the completions under the reference LM; distinct-n is corpus-level over the completions' "
        "token ids; *repetition* the share of completion tokens that repeat one earlier in the same completion; "
        "length in tokens (EOS included). `-`: not measured (reasons below). Agents marked *(oracle)* read the "
        "evaluation scorer or the test rows' context: not a fair comparison.",
        "",
        results_table(records, rule),
        "",
    ]
    notes = notes_table(records)
    if notes:
        lines += ["Metrics not measured, and why:", "", notes, ""]
    lines += [
        'Reward components (`info["reward_components"]`, mean over the final evaluation, mean ± sample std over seeds):',
        "",
        components_table(records),
        "",
    ]
    levels = levels_table(records)
    if levels:
        lines += [
            "Difficulty levels (curriculum runs train on a moving level; *mastered*: the highest level with a full "
            "window of training episodes at the target success rate; evaluation is on held-out instances of the "
            "stated level):",
            "",
            levels,
            "",
        ]
    lines += [
        "## Learning curves",
        "",
    ]
    for env_id, paths in plots.items():
        png = next((p for p in paths if p.name.endswith("_curves.png")), None)
        if png is not None:
            lines += [f"![{env_slug(env_id)} learning curves]({png.relative_to(out_dir).as_posix()})", ""]
    lines += ["## Reward-hacking diagnostics", "", rule.describe(), ""]
    lines += [
        "| run | score start -> end | gold start -> end | metric | diversity start -> end | ratio | KL end | flagged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rec in ok:
        curve = rec.get("curve") or []
        chk = rule.check(curve)
        s0 = curve[0].get("mean_score") if curve else None
        st = curve[-1].get("mean_score") if curve else None
        g0 = curve[0].get("gold_score") if curve else None
        gt = curve[-1].get("gold_score") if curve else None
        gold = f"{_fmt(g0)} -> {_fmt(gt)}" if _finite(g0) or _finite(gt) else "-"
        lines.append(
            f"| {rec['run_id']}{' (oracle)' if rec.get('oracle') else ''} | {_fmt(s0)} -> {_fmt(st)} | {gold} | "
            f"{chk['metric']} | {_fmt(chk['diversity_start'])} -> "
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
    if unreadable:
        lines += ["## Unreadable run files", "", "| file | reason |", "|---|---|"]
        lines += [f"| `{Path(u['file']).name}` | {_md_cell(u['reason'], 300)} |" for u in unreadable]
        lines += ["", "Rerun these runs with `--resume` (they count as not finished).", ""]
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
            f"**{env_slug(env_id)} / {agent_label(agent, recs)}** (seed {rec.get('seed')})",
            "",
            "| prompt | completion | score | gold |",
            "|---|---|---|---|",
        ]
        for s in rec.get("samples") or []:
            lines.append(
                f"| {_md_cell(s.get('prompt'))} | {_md_cell(s.get('completion'))} | {_fmt(s.get('score'))} | "
                f"{_fmt(s.get('gold_score'))} |"
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
    unreadable: Sequence[dict[str, str]] | None = None,
) -> tuple[Path, Path, str]:
    """``results.csv``, ``curves.csv``, ``plots/*.png`` and ``report.md`` from run records.

    :param unreadable: run files that could not be read (default: every unreadable ``runs/*.json`` in ``out_dir``);
        the report lists them with the reason.
    :returns: the CSV path, the report path and the results table (Markdown).
    """
    rule = rule or HackingRule()
    out = Path(out_dir)
    if unreadable is None:
        unreadable = unreadable_records(out)
    plots_dir = out / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(records, out / RESULTS_CSV, rule)
    write_curves_csv(records, out / CURVES_CSV)
    env_ids = list(dict.fromkeys(r["env_id"] for r in records if r.get("status") == "ok" and r.get("curve")))
    plots = {env_id: plot_env(records, env_id, plots_dir, rule) for env_id in env_ids}
    report = render_report(records, rule, plots, out, suite_meta, unreadable)
    report_path = out / REPORT_MD
    tmp = report_path.with_name(f".{REPORT_MD}.tmp")
    tmp.write_text(report, encoding="utf-8")
    os.replace(tmp, report_path)
    return csv_path, report_path, results_table(records, rule)
