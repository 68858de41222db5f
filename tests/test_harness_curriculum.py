"""Curricula in the benchmark harness: the suite's ``curriculum`` tables, the Curriculum-wrapped training env, the
level in every curve point, the report and plots, and (at a fixed seed) a curriculum that masters a higher level
than a fixed schedule in the same budget."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

from aligngym.agents.base import RandomAgent
from aligngym.benchmarks.backends import run_suite
from aligngym.benchmarks.report import load_records
from aligngym.benchmarks.run import execute_run, make_test_env, make_train_env
from aligngym.benchmarks.suite import RunSpec, expand_suite, load_suite
from aligngym.envs.curriculum import Curriculum, find_curriculum

COUNT = "aligngym/Count-Token-v0"
BUDGET = 8000  # env steps per run: Q-learning takes a few seconds on one core


def _suite(curriculum: dict[str, Any] | None = None, **agents: dict[str, Any]) -> dict[str, Any]:
    env = {"max_difficulty": 3, "heldout": False}
    if curriculum is not None:
        env["curriculum"] = curriculum
    return {
        "envs": {COUNT: env},
        "agents": agents,
        "runs": [{"envs": [COUNT], "agents": list(agents)}],
    }


ADAPTIVE = {"target_success": 0.7, "hysteresis": 0.7, "window": 32, "eval_difficulty": 2}


def test_suite_curriculum_tables_merge_env_and_agent_keys() -> None:
    suite = _suite(
        ADAPTIVE,
        qlearning={},
        fixed={"agent": "qlearning", "curriculum": {"schedule": "linear"}},
        plain={"agent": "qlearning", "curriculum": False},
    )
    specs = {s.agent: s for s in expand_suite(suite, seeds=1, steps=100, device="cpu")}
    assert specs["qlearning"].curriculum == ADAPTIVE
    assert specs["fixed"].curriculum == {**ADAPTIVE, "schedule": "linear"}
    assert specs["plain"].curriculum is None
    for spec in specs.values():
        assert "curriculum" not in spec.env_kwargs and "curriculum" not in spec.agent_kwargs
    assert specs["qlearning"].fingerprint() != specs["fixed"].fingerprint()


def test_a_run_without_curriculum_keeps_its_old_fingerprint() -> None:
    spec = RunSpec(env_id=COUNT, agent="random", steps=10)
    fields = dataclasses.asdict(spec)
    del fields["curriculum"]  # what the harness hashed before runs could have a curriculum
    del fields["train_prompts"]  # ... or practice prompts
    old = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert spec.fingerprint() == old


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"target": 0.7}, "unknown curriculum key"),
        ({"schedule": "cosine"}, "linear"),
        ({"eval_difficulty": 0}, "eval_difficulty"),
    ],
)
def test_bad_curriculum_tables_fail_before_running(table: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        expand_suite(_suite(table, qlearning={}), seeds=1, steps=100)


def test_train_env_is_wrapped_and_test_env_stays_held_out_at_the_stated_level() -> None:
    spec = RunSpec(
        env_id=COUNT,
        agent="random",
        steps=300,
        env_kwargs={"max_difficulty": 3},
        curriculum={"schedule": "linear", "eval_difficulty": 2},
    )
    train, test = make_train_env(spec), make_test_env(spec)
    curriculum = find_curriculum(train)
    assert isinstance(curriculum, Curriculum)
    assert curriculum.controller.schedule == [(0, 1), (100, 2), (200, 3)]  # "linear" spreads the budget
    assert find_curriculum(test) is None and test.unwrapped.difficulty == 2
    assert test.unwrapped.procedural.split == "test" and test.unwrapped.procedural.instance_split == "test"
    assert test.action_space == train.action_space  # max_difficulty is kept: the spaces match
    plain = dataclasses.replace(spec, curriculum=None)
    assert find_curriculum(make_train_env(plain)) is None and make_test_env(plain).unwrapped.difficulty == 1


class OwnEnvAgent(RandomAgent):
    """Trains on an env it builds itself from the id (as agents with their own vector env do)."""

    def learn(self, total_timesteps: int, callback: Any = None) -> OwnEnvAgent:
        env = gym.make(self.env.spec.id, max_difficulty=3)
        env.reset(seed=0)
        for _ in range(total_timesteps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        self.num_timesteps += total_timesteps
        return self


def test_an_agent_that_bypasses_the_wrapped_env_fails_the_run() -> None:
    spec = RunSpec(
        env_id=COUNT,
        agent="own",
        agent_name="tests.test_harness_curriculum:OwnEnvAgent",
        steps=20,
        eval_points=1,
        eval_episodes=2,
        device="cpu",
        env_kwargs={"max_difficulty": 3},
        curriculum={"target_success": 0.7},
    )
    rec = execute_run(spec, "/unused", write=False)
    assert rec["status"] == "failed" and "cannot move it" in rec["error"]


@pytest.fixture(scope="module")
def curriculum_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Q-learning on Count (levels 1-3) for the same budget: adaptive curriculum against a linear schedule."""
    out = tmp_path_factory.mktemp("curriculum")
    suite = _suite(
        ADAPTIVE,
        qlearning={"exploration_fraction": 0.2},
        **{
            "qlearning-fixed": {
                "agent": "qlearning",
                "exploration_fraction": 0.2,
                "curriculum": {"schedule": "linear"},
            }
        },
    )
    specs = expand_suite(suite, seeds=1, steps=BUDGET, eval_points=2, eval_episodes=16, device="cpu")
    result = run_suite(specs, out, workers=1, progress=False, log=lambda _: None)
    assert result.failed == []
    return out


def test_curriculum_masters_a_higher_level_than_a_fixed_schedule_in_the_harness(curriculum_out: Path) -> None:
    recs = {r["agent"]: r for r in load_records(curriculum_out)}
    adaptive, fixed = recs["qlearning"], recs["qlearning-fixed"]
    for rec in (adaptive, fixed):
        assert rec["status"] == "ok" and rec["env_steps"] >= BUDGET
        for point in rec["curve"]:
            assert {"difficulty", "mastered", "eval_difficulty"} <= set(point)
            assert point["eval_difficulty"] == 2  # the stated level, every time
    assert fixed["curriculum"]["moves"] == [[2667, 2], [5333, 3]] and fixed["final"]["difficulty"] == 3
    # seed 0: the adaptive rule stays on level 1 until it is mastered (about 2,700 steps) and masters it; the linear
    # schedule leaves level 1 at step 2,667, before Q-learning has learnt it, and masters no level
    assert adaptive["final"]["mastered"] > fixed["final"]["mastered"], (
        adaptive["curriculum"],
        fixed["curriculum"],
    )
    assert adaptive["curriculum"]["mode"] == "adaptive" and adaptive["curriculum"]["moves"][0][1] == 2


def test_report_curves_csv_and_plot_show_the_level(curriculum_out: Path) -> None:
    report = (curriculum_out / "report.md").read_text()
    assert "| env | agent | curriculum | training level at end | mastered | evaluated at level |" in report
    assert "| Count-Token-v0 | qlearning-fixed | fixed: linear | 3.00 | 0.00 | 2 |" in report
    csv_path = next(curriculum_out.glob("*curves*.csv"))
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["difficulty"] and r["eval_difficulty"] == "2" for r in rows)
    png = curriculum_out / "plots" / "Count-Token-v0_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_procedural_suite_has_curriculum_against_fixed_schedule_rows() -> None:
    specs = expand_suite(load_suite("procedural"))
    curricula = {s.agent: s.curriculum for s in specs if s.curriculum is not None}
    assert any(c.get("schedule") == "linear" for c in curricula.values())
    assert any(c.get("schedule") is None for c in curricula.values())
