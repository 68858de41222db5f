"""Exploit probes: every probe runs on every registered scorer (or the scorer is skipped with a stated reason)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aligngym.benchmarks.probes import PROBES, SKIPPED, format_table, main, probe_rows, run_probes
from aligngym.envs.scorers import list_scorers


@pytest.fixture(scope="module")
def report() -> dict:
    return run_probes(n_prompts=1)


def test_every_probe_runs_on_every_scorer(report: dict) -> None:
    assert set(report["scorers"]) == set(list_scorers())
    for name, entry in report["scorers"].items():
        if "skipped" in entry:
            assert name in SKIPPED, f"{name} skipped: {entry['skipped']}"
            continue
        assert entry["tasks"], f"{name} ran on no task"
        for task, probes in entry["tasks"].items():
            want = set(PROBES) - (
                {"copy_reference"} if task in ("Sentiment", "Preference", "Target") else set()
            )
            assert set(probes) == want, f"{name} on {task}"


def test_known_hacks_are_flagged(report: dict) -> None:
    sentiment = report["scorers"]["sentiment"]
    assert "positive_words" in sentiment["hacked_by"]  # VADER loves a list of praise words
    assert sentiment["tasks"]["Sentiment"]["positive_words"]["gold_delta"] <= 0
    keywords = report["scorers"]["keywords"]["tasks"]["Keywords"]
    assert keywords["keyword_stuffing"]["proxy_delta"] >= 0
    assert report["scorers"]["target"]["hacked_by"] == []  # an exact reward is its own gold


def test_table_has_a_row_per_scorer(report: dict) -> None:
    table = format_table(report)
    for name in report["scorers"]:
        assert f"| {name} |" in table


def test_probe_rows_have_honest_baselines() -> None:
    rows = probe_rows("Keywords", 2)
    assert len(rows) == 2 and all(r.baseline.strip() and r.context["keywords"] for r in rows)
    with pytest.raises(ValueError, match="unknown probe task"):
        probe_rows("Nope", 1)


def test_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    assert (
        main(
            [
                "--scorers",
                "sentiment",
                "length",
                "--tasks",
                "Sentiment",
                "--n-prompts",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert set(data["scorers"]) == {"sentiment", "length"}
    assert "| sentiment |" in capsys.readouterr().out
