"""The per-phase timing of agent updates: exclusive nested phases, wrapped methods restored, and a tiny run of our
GRPO and PPO updates whose phases add up to at most the total."""

from __future__ import annotations

import time
from typing import Any

import torch

from aligngym.benchmarks.throughput_phases import PHASES, PhaseClock, bench_phases, format_phases


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_nested_phases_count_their_time_once_and_wrappers_are_undone() -> None:
    class Box:
        def outer(self) -> None:
            _spin(0.02)
            self.inner()

        def inner(self) -> None:
            _spin(0.03)

    box = Box()
    clock = PhaseClock()
    clock.who = "me"
    clock.wrap(box, "outer", "outer")
    clock.wrap(box, "inner", lambda *a: "inner")
    box.outer()
    got: dict[str, Any] = clock.seconds["me"]
    assert 0.015 < got["outer"] < 0.028 and 0.025 < got["inner"] < 0.04
    clock.restore()
    assert "outer" not in vars(box) and "inner" not in vars(box)


def test_bench_phases_times_our_updates_and_restores_torch() -> None:
    backward = torch.Tensor.backward
    r = bench_phases(prompts=2, generations=2, max_new_tokens=2, reps=1, with_trl=False)
    assert torch.Tensor.backward is backward
    assert set(r["ms"]) == {"grpo", "ppo"} and r["ratios"] == {}
    for name in ("grpo", "ppo"):
        ms = r["ms"][name]
        assert ms["generate (collect less the env)"] > 0 and ms["backward"] > 0
        assert sum(ms.get(k, 0.0) for k in PHASES) <= ms["total"] * 1.001
    assert "| backward |" in format_phases(r)
    assert r["bare_model_passes_ms"] > 0 and "bare model passes" in format_phases(r)
