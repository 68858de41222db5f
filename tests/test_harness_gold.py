"""The benchmark harness carries the gold judge: evaluation points record ``gold_score`` from the test env's infos,
and the training env is built with ``gold=False`` (gold is an evaluation judge, never a training cost)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aligngym.benchmarks.run import execute_run, make_test_env, make_train_env
from aligngym.benchmarks.suite import expand_suite


def test_harness_records_gold_at_every_evaluation_and_trains_without_it(tmp_path: Path) -> None:
    (spec,) = expand_suite(
        envs=["Target-Token"], agents=["random"], seeds=1, steps=64, eval_points=2, device="cpu", samples=2
    )
    train_env, test_env = make_train_env(spec), make_test_env(spec)
    assert train_env.unwrapped.runtime.gold_spec is None
    assert test_env.unwrapped.runtime.gold_spec == "target"  # Target's gold is its exact reward
    train_env.close()
    test_env.close()
    record = execute_run(spec, tmp_path, write=False)
    assert record["status"] == "ok", record.get("error")
    assert len(record["curve"]) == 3  # step 0 and two chunks
    for point in record["curve"]:
        assert point["gold_score"] is not None
        assert point["gold_score"] == pytest.approx(point["mean_score"], abs=1e-6)
        assert set(point["gold_components"]) == {"target"}
    kept = record["samples_initial"] + record["samples"]  # the first and last evaluation's samples
    assert kept and all(s["gold_score"] == pytest.approx(s["score"], abs=1e-6) for s in kept)
