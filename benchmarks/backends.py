"""Where runs execute: in this process, in a pool of spawned local processes, or as Ray tasks.

:func:`run_suite` skips finished runs on ``resume``, fans the rest out, writes each run's JSON when it finishes and
then the report (:mod:`aligngym.benchmarks.report`).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aligngym.benchmarks.agents import agent_status
from aligngym.benchmarks.metrics import HackingRule
from aligngym.benchmarks.report import _fmt, write_outputs
from aligngym.benchmarks.run import (
    RUNS_DIR,
    _failed_record,
    _read_record,
    execute_run,
    finished_record,
    run_json_path,
    write_json_atomic,
)
from aligngym.benchmarks.suite import RunSpec

BACKENDS = ("local", "ray")


@dataclass
class SuiteResult:
    """What :func:`run_suite` did: records of the suite's runs (finished earlier ones included) and the outputs."""

    records: list[dict[str, Any]]
    ran: list[str]
    skipped: list[str]
    failed: list[str]
    interrupted: bool
    out_dir: Path
    report_path: Path | None = None
    csv_path: Path | None = None
    table: str = ""


def set_threads(n: int) -> int | None:
    """``torch.set_num_threads(n)``; returns the old value (``None`` without torch).

    One thread per run is the default: on a small shared CPU, torch's intra-op threads of parallel runs fight over
    the cores (measured here on 2 cores: SB3 PPO 512 steps took 2.3 s with 1 thread, 27 s with 2).
    """
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    return old


def _worker_init(threads: int = 1) -> None:
    """Each worker process: ``threads`` torch / BLAS threads (default 1)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    set_threads(threads)


def _pool_worker_init(threads: int = 1) -> None:
    """A local pool worker: ``threads`` threads, and Ctrl-C left to the parent, which terminates the workers.

    (A worker that caught ``KeyboardInterrupt`` itself would report it and go on with the next queued run.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_init(threads)


def _ray_execute(spec: RunSpec, out_dir: str, threads: int = 1) -> dict[str, Any]:
    _worker_init(threads)
    return execute_run(spec, out_dir, write=False)


def run_suite(
    specs: Sequence[RunSpec],
    out_dir: str | Path,
    *,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    rule: HackingRule | None = None,
    suite_meta: dict[str, Any] | None = None,
    report: bool = True,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
) -> SuiteResult:
    """Run every spec, then write ``results.csv``, ``curves.csv``, ``report.md`` and ``plots/*.png``.

    :param workers: runs at a time. ``1`` with the local backend runs in this process; more runs each run in its own
        spawned process (spawn, not fork: forking after torch started its threads hangs workers), ``workers`` at a
        time, each with ``threads`` torch threads; a process that dies mid-run fails that run alone
        (``WorkerDied: ... killed by SIGKILL``) and the others go on.
    :param backend: ``"local"`` or ``"ray"`` (``ray.init(address)`` when ``address`` is given, else a local Ray with
        ``workers`` CPUs; every run is a task with ``num_cpus=1`` and the driver writes its JSON).
    :param resume: skip runs whose JSON says ``ok`` with the same fingerprint (failed runs run again).
    :param progress: tqdm bars (runs; plus env steps of the current run in-process).
    :param rule: the reward-hacking rule of the report.
    :param threads: torch threads per run (in this process it is restored afterwards).
    :returns: a :class:`SuiteResult`; a ``KeyboardInterrupt`` stops the suite (``interrupted=True``): runs that had
        finished keep their JSON, and the report covers them.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers < 1 or threads < 1:
        raise ValueError(f"workers and threads must be >= 1, got workers={workers}, threads={threads}")
    out = Path(out_dir)
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: print(msg, file=sys.stderr))
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("run ids must be unique within a suite")
    records: dict[str, dict[str, Any]] = {}
    todo: list[RunSpec] = []
    skipped: list[str] = []
    for spec in specs:
        rec = finished_record(out, spec) if resume else None
        if rec is not None:
            records[spec.run_id] = rec
            skipped.append(spec.run_id)
        else:
            todo.append(spec)
    for name in sorted({s.factory_name for s in todo}):
        status = agent_status(name)
        if status != "ok":
            say(f"warning: agent {name!r} is {status}; its runs will be recorded as failed")
    if skipped:
        say(f"resume: {len(skipped)} finished run(s) skipped, {len(todo)} to run")
    write_json_atomic(
        out / "suite.json", {"suite": suite_meta or {}, "runs": [dataclasses.asdict(s) for s in specs]}
    )

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="runs", unit="run", position=0)

    def finished(rec: dict[str, Any]) -> None:
        records[rec["run_id"]] = rec
        msg = f"[{rec['status']}] {rec['run_id']}"
        if rec["status"] == "ok":
            msg += (
                f": score {_fmt(rec.get('final', {}).get('mean_score'))} in {_fmt(rec.get('wall_time'), 1)} s"
            )
        else:
            msg += f": {rec.get('error')}"
        if bar is not None:
            bar.update(1)
            bar.write(msg)
        else:
            say(msg)

    interrupted = False
    try:
        if backend == "ray":
            _run_ray(todo, out, workers, address, threads, finished)
        elif workers == 1:
            old_threads = set_threads(threads) if todo else None
            try:
                for spec in todo:
                    finished(execute_run(spec, out, progress=progress))
            finally:
                if old_threads is not None:
                    set_threads(old_threads)
        else:
            _run_processes(todo, out, workers, threads, finished)
    except KeyboardInterrupt:
        interrupted = True
        say(
            f"interrupted: {len(records) - len(skipped)} run(s) finished and kept in {out / RUNS_DIR}; rerun with --resume"
        )
    finally:
        if bar is not None:
            bar.close()
    ordered = [records[s.run_id] for s in specs if s.run_id in records]
    result = SuiteResult(
        records=ordered,
        ran=[s.run_id for s in todo if s.run_id in records],
        skipped=skipped,
        failed=[r["run_id"] for r in ordered if r.get("status") != "ok"],
        interrupted=interrupted,
        out_dir=out,
    )
    if report and ordered:
        result.csv_path, result.report_path, result.table = write_outputs(
            ordered, out, rule=rule or HackingRule(), suite_meta=suite_meta
        )
    return result


class WorkerDied(RuntimeError):
    """The process running a run ended without writing its record (killed by a signal, out of memory, a crash)."""


def _process_main(spec: RunSpec, out_dir: str, threads: int) -> None:
    """Body of one run's spawned process: ``threads`` threads, Ctrl-C left to the parent, the record written here."""
    _pool_worker_init(threads)
    execute_run(spec, out_dir, write=True)


def _exit_cause(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name} (exit code {exitcode})"
    return f"exited with code {exitcode}"


def _run_processes(
    todo: Sequence[RunSpec], out: Path, workers: int, threads: int, finished: Callable[[dict[str, Any]], None]
) -> None:
    """One spawned process per run, at most ``workers`` at a time; each writes its own record.

    A process per run (not a pool) so that a worker killed mid-run (SIGKILL, the out-of-memory killer) fails that
    run alone: the parent records it as failed with the cause (:class:`WorkerDied`) and the other runs go on. Spawn,
    not fork: forking after torch started its threads hangs workers.
    """
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    pending = list(todo)
    running: dict[int, tuple[Any, RunSpec, int]] = {}  # sentinel -> (process, spec, launch time ns)
    try:
        while pending or running:
            while pending and len(running) < workers:
                spec = pending.pop(0)
                proc = ctx.Process(target=_process_main, args=(spec, str(out), threads), name=spec.run_id)
                launched = time.time_ns()
                proc.start()
                running[proc.sentinel] = (proc, spec, launched)
            for sentinel in wait(list(running)):
                proc, spec, launched = running.pop(sentinel)  # type: ignore[arg-type]
                proc.join()
                path = run_json_path(out, spec.run_id)
                rec = _read_record(path) if path.is_file() and path.stat().st_mtime_ns >= launched else None
                if rec is None or proc.exitcode != 0:
                    cause = _exit_cause(proc.exitcode)
                    if rec is not None:  # it wrote its record, then died (teardown): keep what it measured
                        rec["status"], rec["error"] = (
                            "failed",
                            f"WorkerDied: the worker process {cause} after the run",
                        )
                    else:
                        err = WorkerDied(f"the worker process {cause} before the run finished")
                        rec = _failed_record(spec, err)
                    write_json_atomic(path, rec)
                finished(rec)
    except BaseException:
        # Ctrl-C (or an error here): unfinished runs die without writing anything; queued ones never start
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, _ in running.values():
            proc.join(timeout=10)
        raise


def _run_ray(
    todo: Sequence[RunSpec],
    out: Path,
    workers: int,
    address: str | None,
    threads: int,
    finished: Callable[[dict[str, Any]], None],
) -> None:
    try:
        import ray
    except ImportError as err:
        raise ImportError("--backend ray needs Ray: pip install 'aligngym[ray]'") from err
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=workers * threads, include_dashboard=False)
    remote = ray.remote(num_cpus=threads)(_ray_execute)
    refs = {remote.remote(spec, str(out), threads): spec for spec in todo}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                spec = refs.pop(ref)
                try:
                    rec = ray.get(ref)
                except Exception as err:  # the task's worker died
                    rec = _failed_record(spec, err)
                write_json_atomic(run_json_path(out, spec.run_id), rec)
                finished(rec)
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
