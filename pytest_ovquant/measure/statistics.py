"""Confidence intervals for the gates: the speedup median and the paired accuracy drop.

A single speedup median or accuracy drop says nothing about how much it would move on a rerun, so a
gate comparing it with a threshold flips on noise. A bootstrap interval says whether the data
actually settle the question; when they do not, measure more (latency) or report that it is close.

The resampling itself is ``scipy.stats.bootstrap``. The percentile method is used throughout: the
statistics here are medians of timing ratios and means/maxima of per-sample scores (often 0/1
outcomes), where BCa's jackknife acceleration is unreliable (median, ties) and it returns NaN with a
warning on degenerate resamples; the percentile interval stays inside the range of the data and
never fails on ties.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "AdaptiveResult",
    "Interval",
    "SpeedDecision",
    "decide_on_interval",
    "measure_until_narrow",
    "median_ratio_interval",
    "paired_drop_interval",
]

BOOTSTRAP_METHOD = "percentile"
MIN_BOOTSTRAP_N = 3  # below this the bootstrap distribution has a handful of values: no interval
_AGGREGATES = {"mean": np.mean, "max": np.max, "min": np.min}


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval and how it was obtained."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    method: str

    @property
    def width(self) -> float:
        return self.high - self.low

    @property
    def relative_width(self) -> float:
        """Width relative to the estimate, so one target fits speedups of any size."""
        if self.estimate == 0:
            return 0.0 if self.width == 0 else math.inf
        return self.width / abs(self.estimate)

    @property
    def degenerate(self) -> bool:
        return self.method.startswith("degenerate")

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def describe(self, digits: int = 2) -> str:
        """E.g. ``95% interval [1.42, 1.61]``, for failure messages and reports."""
        return f"{_percent(self.confidence)} interval [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _percent(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _check_options(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """Float64 1-D array; accepts lists, numpy arrays and CPU torch tensors (via ``np.asarray``)."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty: an interval needs at least one value")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf) of {array.size}")
    return array


def _degenerate(estimate: float, confidence: float, n: int, why: str) -> Interval:
    return Interval(float(estimate), float(estimate), float(estimate), confidence, n, f"degenerate ({why})")


def _bootstrap_interval(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    estimate: float,
    *,
    paired: bool,
    confidence: float,
    resamples: int,
    seed: int,
) -> Interval:
    from scipy import stats  # here, not at import: scipy.stats takes ~1 s to import, and only speed gates need it

    result = stats.bootstrap(
        data,
        statistic,
        n_resamples=resamples,
        paired=paired,
        vectorized=True,
        confidence_level=confidence,
        method=BOOTSTRAP_METHOD,
        rng=np.random.default_rng(seed),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    n = int(data[0].size)
    if not (math.isfinite(low) and math.isfinite(high)):  # not expected with percentile; never gate on NaN
        return _degenerate(estimate, confidence, n, "bootstrap gave no finite interval")
    # The percentile interval need not contain the sample estimate (skewed bootstrap distribution);
    # widen to include it so the estimate and the interval never contradict each other in a decision.
    return Interval(float(estimate), min(low, estimate), max(high, estimate), confidence, n,
                    f"bootstrap {BOOTSTRAP_METHOD}, {resamples} resamples{', paired' if paired else ''}")


def median_ratio_interval(
    ratios: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of the median per-pair speedup ratio (deterministic for a seed).

    Fewer than 3 ratios, or all equal, give the degenerate interval [median, median] (``method``
    starts with "degenerate"): the bootstrap has nothing to resample there.
    """
    _check_options(confidence, resamples)
    data = _as_1d(ratios, "ratios")
    median = float(np.median(data))
    if data.size < MIN_BOOTSTRAP_N:
        return _degenerate(median, confidence, data.size, f"n={data.size} < {MIN_BOOTSTRAP_N}")
    if np.ptp(data) == 0:
        return _degenerate(median, confidence, data.size, "all values equal")
    return _bootstrap_interval((data,), np.median, median, paired=False,
                               confidence=confidence, resamples=resamples, seed=seed)


def paired_drop_interval(
    fp32: Sequence[float] | np.ndarray,
    int8: Sequence[float] | np.ndarray,
    *,
    higher_is_better: bool = True,
    aggregate: str = "mean",
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of the accuracy drop, resampling samples jointly for FP32 and INT8.

    drop = agg(fp32) - agg(int8) when higher is better, agg(int8) - agg(fp32) otherwise (positive:
    INT8 is worse). Pairing cancels the per-sample difficulty both models share, which dominates the
    variance of either side alone. Identical arrays, constant data or fewer than 3 samples give the
    degenerate interval [drop, drop].
    """
    _check_options(confidence, resamples)
    if aggregate not in _AGGREGATES:
        raise ValueError(f"aggregate must be one of {sorted(_AGGREGATES)}, got {aggregate!r}")
    a = _as_1d(fp32, "fp32")
    b = _as_1d(int8, "int8")
    if a.size != b.size:
        raise ValueError(
            f"paired samples must have equal lengths: fp32 has {a.size} values, int8 has {b.size}"
        )
    agg = _AGGREGATES[aggregate]
    sign = 1.0 if higher_is_better else -1.0

    def drop(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return sign * (agg(x, axis=axis) - agg(y, axis=axis))

    estimate = float(drop(a, b))
    if a.size < MIN_BOOTSTRAP_N:
        return _degenerate(estimate, confidence, a.size, f"n={a.size} < {MIN_BOOTSTRAP_N}")
    if np.array_equal(a, b):
        return _degenerate(estimate, confidence, a.size, "fp32 and int8 identical")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return _degenerate(estimate, confidence, a.size, "all values equal")
    if aggregate == "mean" and np.ptp(a - b) == 0:
        return _degenerate(estimate, confidence, a.size, "constant per-sample difference")
    return _bootstrap_interval((a, b), drop, estimate, paired=True,
                               confidence=confidence, resamples=resamples, seed=seed)


@dataclass(frozen=True)
class SpeedDecision:
    """Outcome of comparing a speedup interval with the required threshold, and on what basis."""

    verdict: str  # "pass" | "fail"
    basis: str  # "interval" | "median (interval straddles after the budget)"
    reason: str


BASIS_INTERVAL = "interval"
BASIS_MEDIAN = "median (interval straddles after the budget)"


def decide_on_interval(interval: Interval, threshold: float, *, budget_exhausted: bool) -> SpeedDecision | None:
    """Pass if the whole interval clears the threshold, fail if it lies wholly below.

    An interval straddling the threshold means the data do not settle it: return None (measure
    more) while budget is left, and only once it is spent fall back on the median, saying so.
    """
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    shown = interval.describe()
    if interval.low >= threshold:
        return SpeedDecision("pass", BASIS_INTERVAL, f"{shown} lies at or above the threshold {threshold:.2f}")
    if interval.high < threshold:
        return SpeedDecision("fail", BASIS_INTERVAL, f"{shown} lies below the threshold {threshold:.2f}")
    if not budget_exhausted:
        return None
    verdict = "pass" if interval.estimate >= threshold else "fail"
    relation = "at or above" if verdict == "pass" else "below"
    return SpeedDecision(
        verdict,
        BASIS_MEDIAN,
        f"{shown} straddles {threshold:.2f} after the time budget; "
        f"decided on the median {interval.estimate:.2f} ({relation} the threshold)",
    )


@dataclass(frozen=True)
class AdaptiveResult:
    """The interleaved timings collected by ``measure_until_narrow`` and why it stopped."""

    baseline_seconds: list[float]
    candidate_seconds: list[float]
    ratios: list[float]
    interval: Interval
    rounds: int
    stopped_because: str  # "narrow" | "decided" | "max_rounds" | "budget"
    budget_exhausted: bool  # stopped by max_rounds or the time budget while still too wide/straddling
    elapsed_seconds: float = 0.0


def measure_until_narrow(
    sample_pair: Callable[[], tuple[float, float]],
    *,
    min_rounds: int = 10,
    max_rounds: int = 400,
    batch: int = 10,
    target_relative_width: float = 0.03,
    budget_seconds: float = 30.0,
    clock: Callable[[], float] = time.perf_counter,
    threshold: float | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> AdaptiveResult:
    """Add interleaved timing pairs until the speedup interval is narrow or settles the threshold.

    A fixed round count is too few on a noisy machine and wasteful on a quiet one. ``sample_pair``
    times one (baseline, candidate) pair; ``clock`` measures the budget (inject a fake in tests).
    ``min_rounds`` pairs are always collected; after that the clock is checked before every pair,
    and the interval after every ``batch``. Narrow/decided win over max_rounds/budget when both hold.
    """
    if min_rounds < 1:
        raise ValueError(f"min_rounds must be >= 1, got {min_rounds}")
    if max_rounds < min_rounds:
        raise ValueError(f"max_rounds ({max_rounds}) must be >= min_rounds ({min_rounds})")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if not target_relative_width > 0:
        raise ValueError(f"target_relative_width must be > 0, got {target_relative_width}")
    if not budget_seconds > 0:
        raise ValueError(f"budget_seconds must be > 0, got {budget_seconds}")
    _check_options(confidence, resamples)

    base: list[float] = []
    cand: list[float] = []
    ratios: list[float] = []

    def take() -> None:
        b, c = (float(v) for v in sample_pair())
        if not (math.isfinite(b) and math.isfinite(c) and b > 0 and c > 0):
            raise ValueError(f"sample_pair returned non-positive or non-finite seconds: ({b}, {c})")
        base.append(b)
        cand.append(c)
        ratios.append(b / c)

    start = clock()
    elapsed = 0.0
    out_of_time = False
    for _ in range(min_rounds):
        take()
    while True:
        elapsed = clock() - start
        interval = median_ratio_interval(ratios, confidence=confidence, resamples=resamples, seed=seed)
        # with fewer than 3 pairs the interval is a point: it can neither be narrow nor decide
        informative = len(ratios) >= MIN_BOOTSTRAP_N
        stopped: str | None = None
        if informative and interval.relative_width <= target_relative_width:
            stopped = "narrow"
        elif (informative and threshold is not None
              and decide_on_interval(interval, threshold, budget_exhausted=False) is not None):
            stopped = "decided"
        elif len(ratios) >= max_rounds:
            stopped = "max_rounds"
        elif out_of_time or elapsed >= budget_seconds:
            stopped = "budget"
        if stopped is not None:
            return AdaptiveResult(base, cand, ratios, interval, len(ratios), stopped,
                                  stopped in ("max_rounds", "budget"), elapsed)
        for _ in range(min(batch, max_rounds - len(ratios))):
            if clock() - start >= budget_seconds:
                out_of_time = True  # stop even if a later reading were lower (no endless loop)
                break
            take()
