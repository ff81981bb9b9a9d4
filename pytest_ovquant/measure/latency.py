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


# Untimed calls of a model after a switch, until this much time has passed (at least one call, at
# most MAX_SETTLE_CALLS): the other runtime's threads stop spinning within about 10 ms here.
SETTLE_SECONDS = 0.02
MAX_SETTLE_CALLS = 20


def _settle(fn: Callable[[], Any]) -> None:
    """Call ``fn`` untimed until SETTLE_SECONDS have passed (read at call time: tests set it)."""
    start = time.perf_counter()
    for _ in range(MAX_SETTLE_CALLS):
        fn()
        if time.perf_counter() - start >= SETTLE_SECONDS:
            return


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
    """Warm up, then add blocks (A B B A, each model's timed calls after it has settled) until the
    speedup's interval is narrow, decides the threshold, or the time budget runs out
    (``statistics.measure_until_narrow``). Each block is one ratio (and one mean call time per
    side); ``rounds`` counts blocks."""
    for _ in range(warmup):
        baseline()
        candidate()
    _settle(baseline)  # the first block's first timed call follows baseline calls, as all timed calls do

    def sample_pair() -> tuple[float, float]:
        # One block: A, (B...), B, B, (A...), A; the calls in parentheses are not timed. The first
        # calls after the other model's are slower: the other runtime's threads still spin on the
        # cores (on this 2-core machine an INT8 resnet18 call took 4.2, 2.8, 2.3, then 2.2 ms after
        # an eager call). So each model runs untimed for SETTLE_SECONDS before its timed calls: the
        # ratio is the one of each model run on its own, as a benchmark loop measures it. Timed
        # calls sit symmetrically (A . B B . A), so drift within a block hits both sides alike.
        base = _time_call(baseline)
        _settle(candidate)
        cand = _time_call(candidate)
        cand += _time_call(candidate)
        _settle(baseline)
        base += _time_call(baseline)
        return base / 2, cand / 2  # per call, so that the reported milliseconds are a call's

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
