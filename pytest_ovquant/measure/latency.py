"""Latency: baseline and candidate timed alternately in one process, compared per pair.

Drift on a shared machine (another job, frequency changes) hits both sides of a pair alike, so the
per-pair ratio is steadier than a ratio of two separately measured medians.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .statistics import Interval, measure_until_narrow


@dataclass
class SpeedupMeasurement:
    baseline: str
    baseline_seconds: list[float] = field(repr=False)
    candidate_seconds: list[float] = field(repr=False)
    interval: Interval | None = None  # bootstrap CI of the median per-pair ratio
    stopped_because: str = "rounds"  # rounds | narrow | decided | max_rounds | budget
    budget_exhausted: bool = False

    @property
    def ratios(self) -> list[float]:
        return [b / c for b, c in zip(self.baseline_seconds, self.candidate_seconds) if c > 0]

    @property
    def speedup(self) -> float:
        """Median of per-pair ratios baseline / candidate (> 1: the candidate is faster)."""
        return statistics.median(self.ratios)

    @property
    def baseline_median_ms(self) -> float:
        return statistics.median(self.baseline_seconds) * 1000

    @property
    def candidate_median_ms(self) -> float:
        return statistics.median(self.candidate_seconds) * 1000

    @property
    def rounds(self) -> int:
        return len(self.candidate_seconds)


def _time_call(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_speedup(
    baseline: Callable[[], Any],
    candidate: Callable[[], Any],
    *,
    baseline_name: str,
    rounds: int = 30,
    warmup: int = 3,
) -> SpeedupMeasurement:
    """Warm both up (the first calls compile), then time A B, B A, A B ... alternately."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    for _ in range(warmup):
        baseline()
        candidate()
    base: list[float] = []
    cand: list[float] = []
    for index in range(rounds):
        # alternate which side goes first so that neither always runs on a warmer cache
        if index % 2 == 0:
            base.append(_time_call(baseline))
            cand.append(_time_call(candidate))
        else:
            cand.append(_time_call(candidate))
            base.append(_time_call(baseline))
    return SpeedupMeasurement(baseline_name, base, cand)


def measure_speedup_adaptive(
    baseline: Callable[[], Any],
    candidate: Callable[[], Any],
    *,
    baseline_name: str,
    warmup: int = 3,
    min_rounds: int = 10,
    max_rounds: int = 400,
    target_relative_width: float = 0.03,
    budget_seconds: float = 30.0,
    threshold: float | None = None,
    confidence: float = 0.95,
) -> SpeedupMeasurement:
    """Warm up, then add A-B-B-A blocks until the speedup's interval is narrow, decides the
    threshold, or the time budget runs out (``statistics.measure_until_narrow``). Each block is one
    ratio; ``rounds`` counts blocks."""
    for _ in range(warmup):
        baseline()
        candidate()
    def sample_pair() -> tuple[float, float]:
        # One A-B-B-A block: whatever the first call of a pair does to the second (threads still
        # spinning, caches) hits both sides equally, so order effects cancel within the block
        # instead of splitting the per-pair ratios into two modes.
        base = _time_call(baseline)
        cand = _time_call(candidate)
        cand += _time_call(candidate)
        base += _time_call(baseline)
        return base, cand

    result = measure_until_narrow(
        sample_pair,
        min_rounds=min_rounds,
        max_rounds=max_rounds,
        target_relative_width=target_relative_width,
        budget_seconds=budget_seconds,
        threshold=threshold,
        confidence=confidence,
    )
    return SpeedupMeasurement(
        baseline_name,
        list(result.baseline_seconds),
        list(result.candidate_seconds),
        interval=result.interval,
        stopped_because=result.stopped_because,
        budget_exhausted=result.budget_exhausted,
    )
