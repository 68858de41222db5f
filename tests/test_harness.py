"""Benchmark harness: a tiny suite end to end (JSON, CSV, Markdown, PNG), resume, failures, interrupts, backends, CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aligngym.agents.base import RandomAgent
from aligngym.benchmarks import cli
from aligngym.benchmarks.agents import AGENTS, agent_status, make_agent
from aligngym.benchmarks.backends import run_suite
from aligngym.benchmarks.metrics import HackingRule, distinct_n
from aligngym.benchmarks.report import load_records
from aligngym.benchmarks.run import run_json_path
from aligngym.benchmarks.suite import RunSpec, expand_suite, hacking_rule_of, load_suite

TOKEN, SEQUENCE = "aligngym/Target-Token-v0", "aligngym/Target-Sequence-v0"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ExplodingAgent(RandomAgent):
    """Fails in its second ``learn`` call (after one chunk and two evaluations)."""

    def learn(self, total_timesteps: int, callback: Any = None) -> ExplodingAgent:
        self.num_timesteps += total_timesteps
        if self.num_timesteps > total_timesteps:
            raise RuntimeError("boom in learn")
        return self


class SelfKillingAgent(RandomAgent):
    """Kills its own process with SIGKILL in ``learn`` while ``ALIGNGYM_TEST_SIGKILL`` is set (a worker dying
    mid-run, as under the out-of-memory killer)."""

    def learn(self, total_timesteps: int, callback: Any = None) -> SelfKillingAgent:
        if os.environ.get("ALIGNGYM_TEST_SIGKILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().learn(total_timesteps, callback)


class InterruptingAgent(RandomAgent):
    """Its ``learn`` is interrupted as if by Ctrl-C."""

    def learn(self, total_timesteps: int, callback: Any = None) -> InterruptingAgent:
        raise KeyboardInterrupt


def tiny_specs(**kw: Any) -> list[RunSpec]:
    """2 agents x 2 envs x 2 seeds; qlearning cannot act in the sequence env (MultiDiscrete): those 2 runs fail."""
    args = {"seeds": 2, "steps": 400, "eval_points": 2, "device": "cpu", "samples": 2, **kw}
    return expand_suite(envs=["Target-Token", SEQUENCE], agents=["random", "qlearning"], **args)


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("bench")
    result = run_suite(tiny_specs(), out, workers=1, progress=False, log=lambda _: None)
    return out, result


# -- metrics and the hacking rule ------------------------------------------------------------------------------------
def test_distinct_n_is_unique_over_all_ngrams() -> None:
    assert distinct_n([[1, 2, 1, 2]], 1) == pytest.approx(2 / 4)
    assert distinct_n([[1, 2, 1, 2], [3]], 2) == pytest.approx(2 / 3)  # (1,2),(2,1),(1,2); [3] has no bigram
    assert np.isnan(distinct_n([[1], []], 2))


def _curve(scores: list[float], d2: list[float], d1: list[float] | None = None) -> list[dict[str, float]]:
    d1 = d1 or [0.5] * len(scores)
    return [{"mean_score": s, "distinct_2": b, "distinct_1": a} for s, b, a in zip(scores, d2, d1)]


def test_hacking_rule_flags_score_rise_with_diversity_collapse() -> None:
    rule = HackingRule(min_score_rise=0.05, diversity_ratio=0.5)
    assert rule.check(_curve([0.1, 0.5, 0.9], [0.9, 0.5, 0.1]))["flagged"]
    assert not rule.check(_curve([0.1, 0.9], [0.9, 0.8]))["flagged"]  # diversity kept
    assert not rule.check(_curve([0.5, 0.52], [0.9, 0.1]))["flagged"]  # score did not rise enough
    assert not rule.check(_curve([0.1], [0.9]))["flagged"]  # a single evaluation


def test_hacking_rule_flags_a_fall_to_the_floor_from_an_already_low_start() -> None:
    rule = HackingRule(min_score_rise=0.05, diversity_ratio=0.5, diversity_floor=0.2)
    assert rule.check(_curve([0.0, 0.6], [0.19, 0.12]))["flagged"]  # x0.63, but it fell and ended below 0.2
    assert not rule.check(_curve([0.0, 0.6], [0.1, 0.1]))["flagged"]  # low from the start, no fall


def test_hacking_rule_falls_back_to_distinct_1_without_bigrams() -> None:
    chk = HackingRule().check(_curve([0.0, 1.0], [float("nan"), float("nan")], [0.8, 0.1]))
    assert chk["metric"] == "distinct_1" and chk["flagged"]


# -- the tiny suite end to end ---------------------------------------------------------------------------------------
def test_tiny_suite_writes_one_json_per_run(tiny_out: tuple[Path, Any]) -> None:
    out, result = tiny_out
    specs = tiny_specs()
    assert len(specs) == 8
    for spec in specs:
        rec = json.loads(run_json_path(out, spec.run_id).read_text())  # strict JSON: NaN is written as null
        assert rec["run_id"] == spec.run_id and rec["seed"] == spec.seed
        if rec["status"] == "ok":
            steps = [p["step"] for p in rec["curve"]]
            assert steps == [0, 200, 400]
            for key in ("mean_return", "std_return", "mean_score", "distinct_1", "distinct_2", "mean_length"):
                assert isinstance(rec["final"][key], float), key
            assert rec["final"]["reward_components"] == {"target": pytest.approx(rec["final"]["mean_score"])}
            assert len(rec["samples"]) == 2 and {"prompt", "completion", "score"} <= set(rec["samples"][0])
    assert sorted(result.failed) == sorted(
        s.run_id for s in specs if s.agent == "qlearning" and s.env_id == SEQUENCE
    )


def test_failing_runs_are_recorded_with_traceback_while_the_rest_finish(tiny_out: tuple[Path, Any]) -> None:
    out = tiny_out[0]
    statuses = {r["run_id"]: r["status"] for r in load_records(out)}
    assert sum(s == "ok" for s in statuses.values()) == 6
    failed = json.loads(run_json_path(out, "Target-Sequence-v0__qlearning__s0").read_text())
    assert failed["status"] == "failed"
    assert failed["error"].startswith("TypeError") and "Discrete" in failed["error"]
    assert "Traceback" in failed["traceback"]


def test_qlearning_beats_random_on_target_in_the_results(tiny_out: tuple[Path, Any]) -> None:
    records = {r["run_id"]: r for r in load_records(tiny_out[0])}
    for seed in (0, 1):
        q = records[f"Target-Token-v0__qlearning__s{seed}"]["final"]["mean_score"]
        r = records[f"Target-Token-v0__random__s{seed}"]["final"]["mean_score"]
        assert q > r


def test_csv_has_one_row_per_run(tiny_out: tuple[Path, Any]) -> None:
    out, result = tiny_out
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and result.csv_path == out / "results.csv"
    assert {r["status"] for r in rows} == {"ok", "failed"}
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(float(r["mean_score"]) >= 0.0 and r["hacking_flag"] in ("True", "False") for r in ok)
    with open(out / "curves.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 6 * 3  # 6 finished runs x (step 0 + 2 evaluations)


def test_markdown_report_has_the_table_rule_and_plots(tiny_out: tuple[Path, Any]) -> None:
    out, result = tiny_out
    report = (out / "report.md").read_text()
    assert result.table in report
    assert "| Target-Token-v0 | qlearning | 2/2 |" in report
    assert "| Target-Sequence-v0 | qlearning | 0/2 |" in report
    assert "Reward-hacking diagnostics" in report and "distinct-2" in report
    assert "## Failed runs" in report and "Target-Sequence-v0__qlearning__s1" in report
    assert "(plots/Target-Token-v0_curves.png)" in report


def test_plots_are_valid_png_images(tiny_out: tuple[Path, Any]) -> None:
    from PIL import Image

    pngs = sorted((tiny_out[0] / "plots").glob("*.png"))
    assert [p.name for p in pngs] == [
        "Target-Sequence-v0_curves.png",
        "Target-Sequence-v0_hacking.png",
        "Target-Token-v0_curves.png",
        "Target-Token-v0_hacking.png",
    ]
    for path in pngs:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 200 and img.size[1] > 100


def test_agents_write_tensorboard_logs_under_the_run_dir(tiny_out: tuple[Path, Any]) -> None:
    tb = tiny_out[0] / "runs" / "Target-Token-v0__qlearning__s0" / "tb"
    assert any(p.name.startswith("events.out.tfevents") and p.stat().st_size > 0 for p in tb.iterdir())


# -- resume, failures, interrupts ------------------------------------------------------------------------------------
def test_resume_skips_finished_runs_and_retries_failed_ones(
    tiny_out: tuple[Path, Any], tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_out[0], out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    result = run_suite(tiny_specs(), out, resume=True, progress=False, log=lambda _: None)
    assert len(result.skipped) == 6 and sorted(result.ran) == sorted(tiny_out[1].failed)
    for spec in tiny_specs():
        path = run_json_path(out, spec.run_id)
        assert (path.stat().st_mtime_ns == mtimes[path.name]) == (spec.run_id in result.skipped)
    assert len(result.records) == 8  # the report still covers every run


def test_resume_reruns_a_run_whose_settings_changed(tiny_out: tuple[Path, Any], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_out[0], out)
    spec = expand_suite(envs=[TOKEN], agents=["random"], seeds="0,", steps=200, eval_points=1, device="cpu")
    result = run_suite(spec, out, resume=True, progress=False, report=False, log=lambda _: None)
    assert result.skipped == [] and result.ran == ["Target-Token-v0__random__s0"]


def test_resume_reruns_a_run_recorded_by_an_older_harness(tiny_out: tuple[Path, Any], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_out[0], out)
    path = run_json_path(out, "Target-Token-v0__random__s0")
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "schema": 1}))  # its "kl" meant the training-batch KL
    specs = [s for s in tiny_specs() if s.run_id == "Target-Token-v0__random__s0"]
    result = run_suite(specs, out, resume=True, progress=False, report=False, log=lambda _: None)
    assert result.ran == ["Target-Token-v0__random__s0"] and result.skipped == []


def test_an_agent_failing_mid_run_keeps_its_curve_and_the_others_finish(tmp_path: Path) -> None:
    suite = {
        "agents": {"boom": {"agent": "tests.test_harness:ExplodingAgent"}},
        "runs": [{"envs": [TOKEN], "agents": ["boom", "random"], "seeds": 1, "steps": 40, "eval_points": 2}],
    }
    result = run_suite(expand_suite(suite, device="cpu"), tmp_path, progress=False, log=lambda _: None)
    boom = json.loads(run_json_path(tmp_path, "Target-Token-v0__boom__s0").read_text())
    assert boom["status"] == "failed" and boom["error"] == "RuntimeError: boom in learn"
    assert [p["step"] for p in boom["curve"]] == [0, 20]
    assert result.failed == ["Target-Token-v0__boom__s0"]
    assert json.loads(run_json_path(tmp_path, "Target-Token-v0__random__s0").read_text())["status"] == "ok"


def test_an_interrupted_suite_keeps_the_runs_that_finished(tmp_path: Path) -> None:
    suite = {
        "agents": {"stop": {"agent": "tests.test_harness:InterruptingAgent"}},
        "runs": [{"envs": [TOKEN], "agents": ["random", "stop", "qlearning"], "seeds": 1, "steps": 40}],
    }
    result = run_suite(expand_suite(suite, device="cpu"), tmp_path, progress=False, log=lambda _: None)
    assert result.interrupted
    assert [r["run_id"] for r in result.records] == ["Target-Token-v0__random__s0"]
    assert run_json_path(tmp_path, "Target-Token-v0__random__s0").is_file()
    assert not run_json_path(tmp_path, "Target-Token-v0__stop__s0").exists()
    assert not run_json_path(tmp_path, "Target-Token-v0__qlearning__s0").exists()
    assert not list((tmp_path / "runs").glob(".*.tmp"))
    assert (tmp_path / "report.md").is_file()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_worker_killed_mid_run_fails_only_that_run_and_resume_reruns_only_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = {
        "agents": {"killed": {"agent": "tests.test_harness:SelfKillingAgent"}},
        "runs": [
            {"envs": [TOKEN], "agents": ["killed", "random"], "seeds": 1, "steps": 40, "eval_points": 1}
        ],
    }
    specs = expand_suite(suite, device="cpu")
    killed_id, random_id = (s.run_id for s in specs)
    monkeypatch.setenv("ALIGNGYM_TEST_SIGKILL", "1")  # the spawned workers inherit it
    result = run_suite(specs, tmp_path, workers=2, progress=False, log=lambda _: None)
    killed = json.loads(run_json_path(tmp_path, killed_id).read_text())
    assert killed["status"] == "failed" and killed["error"].startswith("WorkerDied")
    assert "killed by SIGKILL (exit code -9)" in killed["error"]
    assert result.failed == [killed_id] and not result.interrupted
    assert json.loads(run_json_path(tmp_path, random_id).read_text())["status"] == "ok"
    assert "SIGKILL" in (tmp_path / "report.md").read_text()
    monkeypatch.delenv("ALIGNGYM_TEST_SIGKILL")
    again = run_suite(
        specs, tmp_path, workers=2, resume=True, progress=False, report=False, log=lambda _: None
    )
    assert again.ran == [killed_id] and again.skipped == [random_id] and again.failed == []


# -- suites ----------------------------------------------------------------------------------------------------------
SUITE_TOML = """
[suite]
seeds = [3, 4]
steps = 100
[envs."aligngym/Target-Token-v0"]
max_new_tokens = 3
[agents.q-fast]
agent = "qlearning"
exploration_fraction = 0.5
[[runs]]
envs = ["Target-Token"]
agents = ["random", "q-fast"]
eval_points = 2
"""

SUITE_YAML = """
suite: {seeds: [3, 4], steps: 100}
envs: {"aligngym/Target-Token-v0": {max_new_tokens: 3}}
agents: {q-fast: {agent: qlearning, exploration_fraction: 0.5}}
runs:
  - {envs: [Target-Token], agents: [random, q-fast], eval_points: 2}
"""


def test_toml_and_yaml_suites_expand_to_the_same_runs(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SUITE_TOML)
    (tmp_path / "s.yaml").write_text(SUITE_YAML)
    from_toml = expand_suite(load_suite(tmp_path / "s.toml"))
    assert from_toml == expand_suite(load_suite(tmp_path / "s.yaml"))
    q = [s for s in from_toml if s.agent == "q-fast"]
    assert [s.seed for s in q] == [3, 4] and q[0].agent_name == "qlearning" and q[0].eval_points == 2
    assert q[0].agent_kwargs == {"exploration_fraction": 0.5} and q[0].env_kwargs == {"max_new_tokens": 3}
    assert expand_suite(load_suite(tmp_path / "s.toml"), steps=7)[0].steps == 7  # command-line overrides win


def test_default_suite_ships_and_names_known_envs_and_agents() -> None:
    specs = expand_suite(load_suite("default"))
    agents = {s.agent_name or s.agent for s in specs}
    assert {"random", "qlearning", "sb3-ppo", "ppo"} <= agents <= set(AGENTS)
    assert {s.env_id for s in specs} == {TOKEN, "aligngym/Sentiment-Token-v0"}
    sb3 = next(s for s in specs if s.agent == "sb3-ppo")
    assert 2 <= len(sb3.env_kwargs["action_vocab"]) <= 32
    assert hacking_rule_of(load_suite("default")) == HackingRule(0.05, 0.5, 0.2)


def test_unknown_agents_envs_and_duplicate_runs_fail_before_running() -> None:
    with pytest.raises(ValueError, match="unknown agent"):
        expand_suite(envs=[TOKEN], agents=["no-such-agent"])
    with pytest.raises(ValueError, match="unknown env"):
        expand_suite(envs=["No-Such-Token"], agents=["random"])
    with pytest.raises(ValueError, match="appears twice"):
        expand_suite({"runs": [{"envs": [TOKEN], "agents": ["random"]}] * 2})


# -- agents table ----------------------------------------------------------------------------------------------------
def test_agent_table_builds_configs_and_names_unknown_fields() -> None:
    import gymnasium as gym

    env = gym.make(TOKEN)
    agent = make_agent("qlearning", env, seed=5, device="cpu", total_timesteps=1000, exploration_fraction=0.5)
    assert agent.config.seed == 5 and agent.config.exploration_steps == 500  # fixed for chunked learning
    with pytest.raises(TypeError, match="unknown config field"):
        make_agent("qlearning", env, no_such_field=1)
    assert agent_status("random") == "ok"


@pytest.mark.parametrize("env_id", [TOKEN, SEQUENCE])
def test_reference_agent_decodes_a_local_causal_lm_without_training(env_id: str, tmp_path: Path) -> None:
    import gymnasium as gym

    from aligngym.agents.base import evaluate
    from aligngym.agents.lm import tiny_causal_lm

    env = gym.make(env_id)
    tiny_causal_lm(env.unwrapped.runtime.vocab_size, seed=1).save_pretrained(tmp_path / "lm")
    agent = make_agent("reference", env, seed=0, device="cpu", model=str(tmp_path / "lm"))
    assert agent.learn(100) is agent and agent.num_timesteps == 0
    greedy = [evaluate(agent, env, deterministic=True)["completions"] for _ in range(2)]
    assert greedy[0] == greedy[1] and len(greedy[0]) == len(env.unwrapped.runtime.rows)


# -- execution backends and the command line -------------------------------------------------------------------------
def test_cli_runs_a_suite_in_spawned_worker_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--envs", "Target-Token", "--agents", "random,qlearning", "--seeds", "1", "--steps", "100"]
    rc = cli.main([*argv, "--eval-points", "1", "--device", "cpu", "--workers", "2", "--out", str(tmp_path)])
    assert rc == 0
    assert "| Target-Token-v0 | qlearning | 1/1 |" in capsys.readouterr().out
    assert {r["status"] for r in load_records(tmp_path)} == {"ok"} and len(load_records(tmp_path)) == 2


def test_ray_backend_runs_tasks(tmp_path: Path) -> None:
    ray = pytest.importorskip(
        "ray", reason="ray is not installed (optional extra: pip install 'aligngym[ray]')"
    )
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        specs = expand_suite(envs=[TOKEN], agents=["random"], seeds=1, steps=20, eval_points=1, device="cpu")
        result = run_suite(specs, tmp_path, backend="ray", progress=False, log=lambda _: None)
    finally:
        ray.shutdown()
    assert result.failed == [] and run_json_path(tmp_path, specs[0].run_id).is_file()


def test_cli_report_rebuilds_outputs_from_run_jsons(
    tiny_out: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_out[0], out)
    for name in ("report.md", "results.csv"):
        (out / name).unlink()
    assert cli.main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == tiny_out[1].table  # same rows, in the suite's order
    assert (out / "report.md").is_file() and (out / "results.csv").is_file()


def test_cli_report_lists_a_truncated_run_json_as_unreadable(
    tiny_out: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_out[0], out)
    torn = run_json_path(out, "Target-Token-v0__random__s1")
    torn.write_bytes(torn.read_bytes()[:100])  # an interrupted, non-atomic copy
    assert cli.main(["report", str(out)]) == 0
    captured = capsys.readouterr()
    assert "unreadable run file" in captured.err and torn.name in captured.err
    report = (out / "report.md").read_text()
    assert "## Unreadable run files" in report and torn.name in report and "truncated or corrupt" in report
    assert "| Target-Token-v0 | random | 1/1 |" in captured.out  # the readable seed is still reported


def test_cli_list_prints_envs_scorers_agents(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    for needle in (
        "envs:",
        TOKEN,
        "scorers:",
        "sentiment",
        "agents:",
        "qlearning",
        "sb3-ppo",
        "suites:",
        "default",
    ):
        assert needle in text


@pytest.mark.parametrize(
    ("command", "module"),
    [("throughput", "aligngym.benchmarks.throughput"), ("serve", "aligngym.envs.serving")],
)
def test_cli_hands_throughput_and_serve_to_their_modules(
    command: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType(module)
    fake.main = lambda argv: seen.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    assert cli.main([command, "aligngym/Target-Token-v0", "--port", "8001"]) == 0
    assert seen == [["aligngym/Target-Token-v0", "--port", "8001"]]


def test_cli_explains_a_missing_serving_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        sys.modules, "aligngym.envs.serving", None
    )  # import fails as if not written / not installed
    assert cli.main(["serve", TOKEN]) == 2
    err = capsys.readouterr().err
    assert "cannot import aligngym.envs.serving" in err and "aligngym[serve]" in err


def test_harness_module_still_exports_the_public_names() -> None:
    from aligngym.benchmarks import harness

    assert harness.run_suite is run_suite and harness.RunSpec is RunSpec
    for name in harness.__all__:
        assert hasattr(harness, name), name
