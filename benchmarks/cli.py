"""The ``aligngym`` command (also ``python -m aligngym.benchmarks``): run, report, list, throughput, serve.

``aligngym run --config default --out bench_out`` runs the shipped suite; ``run --envs ... --agents ...`` an ad hoc
one. ``throughput`` and ``serve`` hand their arguments to :mod:`aligngym.benchmarks.throughput` and
:mod:`aligngym.envs.serving`, imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LIST_WHAT = ("envs", "scorers", "agents", "suites")


def _csv_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="suite file (.toml / .yaml) or a shipped suite name ('default'); CLI options override it",
    )
    p.add_argument(
        "--envs",
        nargs="+",
        help="env ids or short names (Target-Token, aligngym/Sentiment-Token-v0); comma lists ok",
    )
    p.add_argument(
        "--agents", nargs="+", help="named agents (see 'aligngym list agents') or pkg.module:Class"
    )
    p.add_argument("--seeds", help="N (seeds 0..N-1) or an explicit list '0,3,7' ('5,' is seed 5 alone)")
    p.add_argument("--steps", type=int, help="training budget per run in env steps")
    p.add_argument(
        "--eval-points", type=int, help="evaluations on the test split after training chunks (plus step 0)"
    )
    p.add_argument(
        "--eval-episodes", type=int, help="test episodes per evaluation (default: every test prompt once)"
    )
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--out", default="bench_out", help="output directory (default: bench_out)")
    p.add_argument(
        "--resume", action="store_true", help="skip runs that already finished (same settings) in --out"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="runs at a time (1: in this process; more: spawned processes)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument(
        "--backend", choices=("local", "ray"), default="local", help="local processes or Ray tasks"
    )
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aligngym",
        description="aligngym benchmarks: agents x envs x seeds -> JSON, CSV, Markdown report, PNG curves.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run", help="run a benchmark suite", description="Run agents x envs x seeds and report."
    )
    _add_run_args(run)
    rep = sub.add_parser("report", help="rebuild CSV, report and plots from an output directory's run JSONs")
    rep.add_argument("out", help="output directory of an earlier 'run'")
    rep.add_argument("--config", help="suite file whose [report] thresholds to use")
    lst = sub.add_parser("list", help="list envs, scorers, agents and shipped suites")
    lst.add_argument("what", nargs="*", help=f"any of {', '.join(LIST_WHAT)} (default: everything)")
    sub.add_parser(
        "throughput", help="env and rollout micro-benchmarks (arguments go to throughput.py)", add_help=False
    )
    sub.add_parser(
        "serve", help="serve an env as an OpenEnv server: serve ENV_ID --host H --port P", add_help=False
    )
    sub.add_parser(
        "probe-scorers", help="exploit probes on every scorer (benchmarks/probes.py)", add_help=False
    )
    sub.add_parser(
        "overopt", help="Goodhart curves: overopt --env TASK (benchmarks/overopt.py)", add_help=False
    )
    return parser


def _print_list(what: Sequence[str]) -> None:
    from aligngym.benchmarks.agents import list_agents
    from aligngym.benchmarks.suite import list_suites

    for item in what or LIST_WHAT:
        if item == "envs":
            import aligngym.envs

            table = aligngym.envs.list_envs()
        elif item == "scorers":
            from aligngym.envs.scorers import list_scorers

            scorers = list_scorers()
            table = scorers if isinstance(scorers, dict) else {name: "" for name in scorers}
        elif item == "agents":
            table = list_agents()
        else:
            table = list_suites()
        print(f"{item}:")
        width = max((len(k) for k in table), default=0)
        for key, desc in table.items():
            print(f"  {key:<{width}}  {desc}".rstrip())


def _delegate(module: str, argv: list[str], extra: str) -> int:
    """Call ``module.main(argv)``; a missing module gives a clear message and exit status 2."""
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        print(
            f"aligngym: cannot import {module} ({type(err).__name__}: {err}).\nThis command needs it{extra}.",
            file=sys.stderr,
        )
        return 2
    main = getattr(mod, "main", None)
    if not callable(main):
        print(f"aligngym: {module} has no main(argv) function", file=sys.stderr)
        return 2
    rc = main(argv)
    return int(rc or 0)


def _cmd_run(args: argparse.Namespace) -> int:
    from aligngym.benchmarks.backends import run_suite
    from aligngym.benchmarks.suite import expand_suite, hacking_rule_of, load_suite

    suite: dict[str, Any] = load_suite(args.config) if args.config else {}
    envs = [e for item in args.envs or [] for e in _csv_list(item)]
    agents = [a for item in args.agents or [] for a in _csv_list(item)]
    specs = expand_suite(
        suite,
        envs=envs or None,
        agents=agents or None,
        seeds=args.seeds,
        steps=args.steps,
        eval_points=args.eval_points,
        eval_episodes=args.eval_episodes,
        device=args.device,
    )
    meta = {k: v for k, v in suite.get("suite", {}).items() if k in ("name", "path", "description")}
    meta.setdefault("name", Path(args.config).stem if args.config else "ad hoc")
    print(f"aligngym: {len(specs)} run(s) -> {args.out}", file=sys.stderr)
    result = run_suite(
        specs,
        args.out,
        workers=args.workers,
        backend=args.backend,
        address=args.address,
        resume=args.resume,
        threads=args.threads,
        progress=not args.no_progress,
        rule=hacking_rule_of(suite),
        suite_meta=meta,
    )
    if result.table:
        print(result.table)
    if result.report_path is not None:
        print(f"\nreport: {result.report_path}\ncsv: {result.csv_path}", file=sys.stderr)
    if result.interrupted:
        return 130
    if result.failed:
        print(f"aligngym: {len(result.failed)} run(s) failed: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from aligngym.benchmarks.report import load_records, write_outputs
    from aligngym.benchmarks.suite import hacking_rule_of, load_suite

    unreadable: list[dict[str, str]] = []
    with warnings.catch_warnings():  # listed below and in the report instead
        warnings.simplefilter("ignore", UserWarning)
        records = load_records(args.out, unreadable=unreadable)
    for bad in unreadable:
        print(f"aligngym: unreadable run file {bad['file']}: {bad['reason']}", file=sys.stderr)
    if not records:
        print(f"aligngym: no readable run JSON in {Path(args.out) / 'runs'}", file=sys.stderr)
        return 2
    suite = load_suite(args.config) if args.config else {}
    stored = (
        json.loads((Path(args.out) / "suite.json").read_text())
        if (Path(args.out) / "suite.json").is_file()
        else {}
    )
    meta = stored.get("suite") if isinstance(stored, dict) else None
    _, report, table = write_outputs(
        records, args.out, rule=hacking_rule_of(suite), suite_meta=meta, unreadable=unreadable
    )
    print(table)
    print(f"\nreport: {report}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aligngym`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "throughput":
        return _delegate("aligngym.benchmarks.throughput", argv[1:], " (benchmarks/throughput.py)")
    if argv and argv[0] == "probe-scorers":
        return _delegate("aligngym.benchmarks.probes", argv[1:], " (benchmarks/probes.py)")
    if argv and argv[0] == "overopt":
        return _delegate("aligngym.benchmarks.overopt", argv[1:], " (benchmarks/overopt.py)")
    if argv and argv[0] == "serve":
        return _delegate(
            "aligngym.envs.serving",
            argv[1:],
            " and the serve extra: pip install 'aligngym[serve]'; usage: aligngym serve ENV_ID --host H --port P",
        )
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "list":
        bad = [w for w in args.what if w not in LIST_WHAT]
        if bad:
            parser.error(f"list: unknown {bad}; choose from {', '.join(LIST_WHAT)}")
        _print_list(args.what)
        return 0
    if args.command == "report":
        return _cmd_report(args)
    try:
        return _cmd_run(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"aligngym run: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
