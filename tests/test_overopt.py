"""Goodhart-curve protocol: KL of best-of-n, the unbiased best-of-n estimator, the Gao et al. fits, and the outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aligngym.benchmarks.overopt import (
    best_of_n,
    bon_kl,
    fit_form,
    form_value,
    run_overopt,
    write_outputs,
)


def test_bon_kl_is_analytic() -> None:
    assert bon_kl(1) == pytest.approx(0.0)
    assert bon_kl(4) == pytest.approx(math.log(4) - 3 / 4)
    with pytest.raises(ValueError, match="n must be >= 1"):
        bon_kl(0)


@pytest.mark.parametrize(("form", "alpha", "beta"), [("bon", 0.8, 0.15), ("rl", 0.5, 0.3)])
def test_fit_recovers_known_coefficients(form: str, alpha: float, beta: float) -> None:
    rng = np.random.default_rng(0)
    d = np.linspace(0.05, 3.0, 40)
    y = form_value(d, form, alpha, beta) + rng.normal(0, 1e-3, d.shape)
    fit = fit_form(d, y, form)
    assert fit["alpha"] == pytest.approx(alpha, abs=5e-3)
    assert fit["beta"] == pytest.approx(beta, abs=5e-3)
    assert fit["r2"] > 0.999
    assert fit["points"] == 40


def test_fit_needs_two_points_and_a_known_form() -> None:
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_form([0.0, 1.0], [0.0, 1.0], "bon")
    with pytest.raises(ValueError, match="form must be one of"):
        fit_form([1.0, 2.0], [0.0, 1.0], "linear")


def test_best_of_n_estimator_matches_enumeration() -> None:
    rng = np.random.default_rng(1)
    proxy, gold = rng.normal(size=7), rng.normal(size=7)
    assert best_of_n(proxy, gold, 1) == pytest.approx((proxy.mean(), gold.mean()))
    assert best_of_n(proxy, gold, 7) == pytest.approx((proxy.max(), gold[proxy.argmax()]))
    from itertools import combinations

    subsets = list(combinations(range(7), 3))
    want_g = np.mean([gold[max(s, key=lambda i: proxy[i])] for s in subsets])
    assert best_of_n(proxy, gold, 3)[1] == pytest.approx(want_g)


def test_tiny_end_to_end_run_writes_json_csv_markdown_and_png(tmp_path: Path) -> None:
    result = run_overopt(
        "Sentiment",
        proxies={"vader": "sentiment", "length": "length"},
        gold="sentiment",
        n_max=4,
        n_prompts=2,
        max_new_tokens=6,
        command="test",
        log=lambda _: None,
    )
    files = write_outputs(result, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "overopt.csv",
        "overopt.json",
        "overopt.md",
        "overopt.png",
    ]
    data = json.loads(files["json"].read_text())
    points = data["best_of_n"]["curves"]["vader"]["points"]
    assert [p["n"] for p in points] == [1, 2, 4]
    # gold == proxy here, so best-of-n can only raise it
    assert points[-1]["gold"] >= points[0]["gold"] - 1e-6
    assert "alpha" in data["best_of_n"]["curves"]["vader"]["fit_gold"]
    assert files["png"].stat().st_size > 1000
    assert "| best_of_n | vader | all | gold |" in files["md"].read_text()
    assert len(files["csv"].read_text().splitlines()) == 1 + 2 * 3


@pytest.mark.slow
def test_rl_runs_measure_kl_on_their_completions() -> None:
    from aligngym.benchmarks.overopt import run_rl

    out = run_rl(
        "Sentiment", "sentiment", "sentiment", kl_coefs=(0.05, 0.5), steps=32, evals=1, n_eval=2, n_prompts=2
    )
    assert set(out["runs"]) == {"kl_coef=0.05", "kl_coef=0.5"}
    for rows in out["runs"].values():
        assert rows[0]["steps"] == 0 and rows[1]["steps"] >= 32  # the tokens learned from (a whole batch)
        assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the untrained policy is the reference
        assert rows[1]["kl"] >= 0.0
    assert "fit_gold" in out or "fit_error" in out
