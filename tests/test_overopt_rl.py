"""Goodhart curves, RL half and parts: the report of RL checkpoints, merging a part into earlier results, the
best-of-n samples cache, the fitted peak, and a tiny PPO run that never builds a gold scorer in its training env."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aligngym.benchmarks import overopt
from aligngym.benchmarks.overopt import fit_form, form_value, merge_results, run_best_of_n
from aligngym.benchmarks.overopt_report import coefficient_rows, markdown, write_outputs
from aligngym.benchmarks.overopt_rl import peak_gold


def _rl_part(alpha: float = 0.6, beta: float = 0.4) -> dict[str, Any]:
    """A synthetic RL part: two runs of three checkpoints on the curve gold = d (alpha - beta log d)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, ds in (("kl_coef=0", [0.0, 1.0, 2.5, 4.0]), ("kl_coef=0.1", [0.0, 0.7, 1.2, 1.6])):
        d = np.array(ds)
        g = -0.2 + form_value(d, "rl", alpha, beta)
        runs[name] = [
            {
                "steps": 100 * i,
                "kl": float(x * x),
                "d": float(x),
                "proxy": 0.1 + 0.2 * float(x),
                "gold": float(y),
            }
            for i, (x, y) in enumerate(zip(d, g))
        ]
    pts = [r for rows in runs.values() for r in rows[1:]]
    fit_g = fit_form([r["d"] for r in pts], [r["gold"] + 0.2 for r in pts], "rl")
    fit_p = fit_form([r["d"] for r in pts], [r["proxy"] - 0.1 for r in pts], "rl")
    return {
        "method": "rl_ppo",
        "proxy": "vader",
        "steps": 300,
        "evals": 3,
        "n_eval": 2,
        "prompts": 4,
        "kl_coefs": [0.0, 0.1],
        "learning_rate": 1e-4,
        "runs": runs,
        "fit_gold": fit_g,
        "fit_proxy": fit_p,
        "fits": {"kl_coef=0": {"gold": fit_g, "proxy": fit_p}, "kl_coef=0.1": {"error": "too few"}},
        "command": "rl-cmd",
        "machine": "test box",
        "seconds": 12.0,
    }


def _bon_part() -> dict[str, Any]:
    d = np.array([0.0, 0.44, 0.8])
    points = [
        {"n": n, "kl": float(x * x), "d": float(x), "proxy": 0.1 + float(x), "gold": 0.1 + 0.5 * float(x)}
        for n, x in zip((1, 2, 4), d)
    ]
    fit = fit_form(d, [p["gold"] - 0.1 for p in points], "bon")
    return {
        "method": "best_of_n",
        "n_max": 4,
        "curves": {"vader": {"points": points, "fit_gold": fit, "fit_proxy": fit}},
        "command": "bon-cmd",
        "machine": "other box",
        "seconds": 5.0,
    }


def test_rl_report_has_pooled_and_per_run_fits_points_and_a_plot(tmp_path: Path) -> None:
    result = {"task": "Sentiment", "gold": "sentiment_gold", "best_of_n": _bon_part(), "rl": _rl_part()}
    rows = coefficient_rows(result)
    rl_runs = {(r["run"], r["curve"]) for r in rows if r["method"] == "rl_ppo"}
    assert rl_runs == {("all", "gold"), ("all", "proxy"), ("kl_coef=0", "gold"), ("kl_coef=0", "proxy")}
    pooled = next(r for r in rows if r["method"] == "rl_ppo" and r["run"] == "all" and r["curve"] == "gold")
    assert pooled["alpha"] == pytest.approx(0.6, abs=1e-6) and pooled["beta"] == pytest.approx(0.4, abs=1e-6)
    files = write_outputs(result, tmp_path)
    md = files["md"].read_text()
    assert "Best-of-n command: `bon-cmd`" in md and "RL command: `rl-cmd`" in md
    assert "| rl_ppo | vader | all | gold | d*(alpha - beta*log(d)) | 0.6000 | 0.4000 |" in md
    assert "peaks at d = " in md
    assert len(files["csv"].read_text().splitlines()) == 1 + 3 + 8
    assert files["png"].stat().st_size > 1000
    assert json.loads(files["json"].read_text())["rl"]["runs"]["kl_coef=0"][2]["d"] == 2.5


def test_an_rl_only_result_writes_its_outputs(tmp_path: Path) -> None:
    result = {"task": "Sentiment", "gold": "sentiment_gold", "rl": _rl_part()}
    files = write_outputs(result, tmp_path)
    assert "Best-of-n command" not in markdown(result)
    assert files["png"].stat().st_size > 1000


def test_peak_of_the_rl_form() -> None:
    peak = peak_gold({"fit_gold": {"alpha": 0.6, "beta": 0.4}})
    assert peak is not None
    d = np.linspace(0.01, 20, 200_001)
    y = form_value(d, "rl", 0.6, 0.4)
    assert peak["d"] == pytest.approx(d[np.argmax(y)], rel=1e-3)
    assert peak["gain"] == pytest.approx(y.max(), rel=1e-6)
    assert peak["kl"] == pytest.approx(peak["d"] ** 2)
    assert peak_gold({"fit_gold": {"alpha": 0.6, "beta": -0.1}}) is None
    assert peak_gold({}) is None


def test_merge_keeps_the_part_not_rerun_with_its_own_command() -> None:
    old = {
        "task": "Sentiment",
        "gold": "g",
        "best_of_n": {"curves": {}},  # written before parts carried their command
        "command": "old bon",
        "machine": "m0",
        "seconds": 9.0,
    }
    new = {"task": "Sentiment", "gold": "g", "rl": {"runs": {}}, "command": "new rl", "machine": "m1"}
    merged = merge_results(old, new)
    assert merged["rl"] == {"runs": {}}
    assert merged["best_of_n"]["command"] == "old bon" and merged["best_of_n"]["seconds"] == 9.0
    again = merge_results(merged, {"task": "Sentiment", "gold": "g", "best_of_n": {"curves": {"x": 1}}})
    assert again["best_of_n"] == {"curves": {"x": 1}}
    assert again["rl"]["runs"] == {} and again["rl"]["command"] == "new rl"
    with pytest.raises(ValueError, match="cannot merge"):
        merge_results(old, {"task": "Preference", "gold": "g"})


def test_best_of_n_cache_is_reused_only_when_its_key_matches(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache.json"
    args: dict[str, Any] = dict(n_max=4, n_prompts=2, max_new_tokens=4, cache=cache)
    first = run_best_of_n("Sentiment", {"vader": "sentiment"}, "length", **args)
    assert not first["cached_samples"] and cache.exists()

    def no_sampling(*a: Any, **k: Any) -> Any:
        raise AssertionError("sampled although the cache matches")

    monkeypatch.setattr(overopt, "sample_completions", no_sampling)
    second = run_best_of_n("Sentiment", {"vader": "sentiment", "len": "length"}, "length", **args)
    assert second["cached_samples"]
    assert second["curves"]["vader"]["points"] == first["curves"]["vader"]["points"]
    with pytest.raises(AssertionError, match="sampled although"):  # another seed: a different key
        run_best_of_n("Sentiment", {"vader": "sentiment"}, "length", seed=1, **args)


def test_cli_rl_part_needs_steps() -> None:
    with pytest.raises(SystemExit):
        overopt.main(["--env", "Sentiment", "--part", "rl"])


@pytest.mark.slow
def test_tiny_rl_part_merges_into_best_of_n_results(tmp_path: Path, monkeypatch) -> None:
    import gymnasium as gym

    made: list[dict[str, Any]] = []
    real_make = gym.make

    def spy(env_id: str, **kwargs: Any) -> Any:
        made.append({"id": env_id, **kwargs})
        return real_make(env_id, **kwargs)

    monkeypatch.setattr(gym, "make", spy)
    out = tmp_path / "res"
    (out / "Sentiment").mkdir(parents=True)
    old = {"task": "Sentiment", "gold": "length", "best_of_n": _bon_part()}
    (out / "Sentiment" / "overopt.json").write_text(json.dumps(old))
    argv = ["--env", "Sentiment", "--gold", "length", "--part", "rl", "--rl-steps", "32", "--rl-evals", "2"]
    argv += ["--rl-samples", "2", "--n-prompts", "2", "--kl-coefs", "0", "0.5", "--out", str(out)]
    assert overopt.main(argv) == 0
    assert [m["id"] for m in made] == ["aligngym/Sentiment-Token-v0"] * 2
    assert all(m["gold"] is False for m in made)  # the training envs never build the gold judge
    data = json.loads((out / "Sentiment" / "overopt.json").read_text())
    assert data["best_of_n"]["command"] == "bon-cmd"
    rl = data["rl"]
    assert rl["proxy"] == "vader" and "--part rl" in rl["command"]
    for rows in rl["runs"].values():
        assert [r["steps"] > 0 for r in rows] == [False, True, True]
        assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-4)
        assert all(math.isfinite(r["gold"]) and r["kl"] >= 0 for r in rows)
