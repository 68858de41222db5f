"""Timing for the micro-benchmarks: samples on the wall and process-CPU clocks, alternating repetitions, medians.

Shared by :mod:`aligngym.benchmarks.throughput` (env steps/s) and :mod:`aligngym.benchmarks.throughput_lm`
(rollout tokens/s); run-to-run noise on a shared machine is about ±10 %, so contenders alternate and medians count.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

CLOCKS = ("wall", "cpu")


class Sample(NamedTuple):
    """One repetition of one contender: work done (env steps or tokens) and the time it took on both clocks.

    ``cpu`` is this process's CPU time (all its threads): unlike wall time it barely moves when other processes
    load a shared machine. It is ``None`` where the work runs elsewhere (AsyncVectorEnv workers, a GPU).
    """

    work: float
    wall: float
    cpu: float | None


class Stopwatch:
    """Wall and process-CPU seconds since construction."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return time.process_time() - self.cpu0


def alternate(contenders: dict[str, Callable[[int], Sample]], reps: int) -> dict[str, list[Sample]]:
    """Run every contender once per repetition, in turn (a, b, c, a, b, c, ...); returns each one's samples.

    Alternating spreads slow phases of a shared machine over all contenders; report the median of each.
    """
    samples: dict[str, list[Sample]] = {name: [] for name in contenders}
    for rep in range(reps):
        for name, fn in contenders.items():
            samples[name].append(fn(rep))
    return samples


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else float(a / b)


def _rate(samples: Sequence[Sample], clock: str) -> float | None:
    """Median work per second on ``clock`` ("wall" or "cpu"; ``None`` when a sample has no CPU time)."""
    times = [s.wall if clock == "wall" else s.cpu for s in samples]
    if any(t is None for t in times):
        return None
    return _median([s.work / t for s, t in zip(samples, times)])  # type: ignore[operator]


def _summary(samples: dict[str, list[Sample]]) -> dict[str, Any]:
    """Median rates per clock, and the raw samples (work, wall s, cpu s) for the JSON."""
    return {
        "rates": {clock: {k: _rate(v, clock) for k, v in samples.items()} for clock in CLOCKS},
        "samples": {k: [list(s) for s in v] for k, v in samples.items()},
    }
