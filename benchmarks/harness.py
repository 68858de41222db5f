"""Deprecated alias: the benchmark harness now lives in :mod:`~aligngym.benchmarks.suite`,
:mod:`~aligngym.benchmarks.run`, :mod:`~aligngym.benchmarks.backends`, :mod:`~aligngym.benchmarks.metrics` and
:mod:`~aligngym.benchmarks.report`. This module re-exports their public names so old imports keep working.
"""

from __future__ import annotations

from aligngym.benchmarks.backends import BACKENDS, SuiteResult, run_suite, set_threads
from aligngym.benchmarks.metrics import HackingRule, distinct_n
from aligngym.benchmarks.plots import plot_env
from aligngym.benchmarks.report import (
    CSV_FIELDS,
    CURVES_CSV,
    PLOTS_DIR,
    REPORT_MD,
    RESULTS_CSV,
    components_table,
    load_records,
    render_report,
    results_table,
    write_csv,
    write_curves_csv,
    write_outputs,
)
from aligngym.benchmarks.run import (
    RUNS_DIR,
    SCHEMA_VERSION,
    EpisodeInfoRecorder,
    evaluate_point,
    execute_run,
    finished_record,
    run_json_path,
    write_json_atomic,
)
from aligngym.benchmarks.suite import (
    SUITE_DEFAULTS,
    RunSpec,
    env_slug,
    expand_suite,
    find_suite,
    hacking_rule_of,
    list_suites,
    load_suite,
    parse_seeds,
    resolve_env_id,
    suite_dir,
)

__all__ = [
    "BACKENDS",
    "CSV_FIELDS",
    "CURVES_CSV",
    "PLOTS_DIR",
    "REPORT_MD",
    "RESULTS_CSV",
    "RUNS_DIR",
    "SCHEMA_VERSION",
    "SUITE_DEFAULTS",
    "EpisodeInfoRecorder",
    "HackingRule",
    "RunSpec",
    "SuiteResult",
    "components_table",
    "distinct_n",
    "env_slug",
    "evaluate_point",
    "execute_run",
    "expand_suite",
    "find_suite",
    "finished_record",
    "hacking_rule_of",
    "list_suites",
    "load_records",
    "load_suite",
    "parse_seeds",
    "plot_env",
    "render_report",
    "resolve_env_id",
    "results_table",
    "run_json_path",
    "run_suite",
    "set_threads",
    "suite_dir",
    "write_csv",
    "write_curves_csv",
    "write_json_atomic",
    "write_outputs",
]
