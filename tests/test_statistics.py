"""Bootstrap intervals, the speed decision rule and adaptive rounds, on synthetic data with known truth.

No real timing: the adaptive loop gets a seeded fake sampler and a fake clock.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from pytest_ovquant.measure.statistics import (
    BASIS_INTERVAL,
    BASIS_MEDIAN,
    AdaptiveResult,
    Interval,
    decide_on_interval,
    measure_until_narrow,
    median_ratio_interval,
    paired_drop_interval,
)

TRUE_RATIO = 1.5


def lognormal_ratios(n: int, seed: int, *, median: float = TRUE_RATIO, sigma: float = 0.2) -> np.ndarray:
    """Ratios whose true median is exactly ``median`` (lognormal: median = exp(mu))."""
    return np.exp(np.random.default_rng(seed).normal(math.log(median), sigma, n))


def no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    assert [str(w.message) for w in caught] == []
    return result


# --- Interval -------------------------------------------------------------------------------------


def test_interval_properties():
    interval = Interval(estimate=2.0, low=1.9, high=2.3, confidence=0.95, n=40, method="x")
    assert interval.width == pytest.approx(0.4)
    assert interval.relative_width == pytest.approx(0.2)
    assert interval.contains(1.9) and interval.contains(2.3) and interval.contains(2.0)
    assert not interval.contains(1.89) and not interval.contains(2.31)
    assert interval.describe() == "95% interval [1.90, 2.30]"
    assert Interval(-2.0, -2.2, -1.8, 0.9, 5, "x").relative_width == pytest.approx(0.2)  # |estimate|
    assert Interval(0.0, -0.1, 0.1, 0.9, 5, "x").relative_width == math.inf
    assert Interval(0.0, 0.0, 0.0, 0.9, 5, "x").relative_width == 0.0
    with pytest.raises(AttributeError):
        interval.low = 0.0  # frozen


# --- median_ratio_interval ------------------------------------------------------------------------


def test_median_interval_contains_true_median():
    ratios = lognormal_ratios(200, seed=0)  # one draw; test_median_interval_coverage checks the rate
    interval = median_ratio_interval(ratios)
    assert interval.estimate == pytest.approx(np.median(ratios))
    assert interval.low < interval.estimate < interval.high
    assert interval.contains(TRUE_RATIO)
    assert interval.n == 200 and interval.confidence == 0.95
    assert "percentile" in interval.method
    assert interval.relative_width < 0.1  # sigma 0.2, n=200: a few percent, not a vacuous interval


@pytest.mark.parametrize("confidence, lo, hi", [(0.95, 0.88, 0.99), (0.5, 0.3, 0.7)])
def test_median_interval_coverage(confidence, lo, hi):
    """Over many seeded data sets the interval covers the true median about ``confidence`` of the time."""
    reps = 200
    covered = sum(
        median_ratio_interval(lognormal_ratios(50, seed=1000 + rep), confidence, resamples=500, seed=rep)
        .contains(TRUE_RATIO)
        for rep in range(reps)
    )
    assert lo <= covered / reps <= hi


def test_median_interval_width_shrinks_like_root_n():
    """16x the data should give ~1/4 the width (averaged over seeds: one n=25 width is itself noisy)."""
    seeds = range(20)
    small = [median_ratio_interval(lognormal_ratios(25, seed=s), resamples=1000, seed=s).width for s in seeds]
    large = [median_ratio_interval(lognormal_ratios(400, seed=100 + s), resamples=1000, seed=s).width for s in seeds]
    assert 0.15 < np.mean(large) / np.mean(small) < 0.4
    assert max(large) < min(small)


def test_median_interval_deterministic_for_seed():
    ratios = lognormal_ratios(60, seed=11)
    first = median_ratio_interval(ratios, seed=5)
    assert median_ratio_interval(ratios, seed=5) == first
    assert median_ratio_interval(list(ratios), seed=5) == first  # list or array alike
    others = {(i.low, i.high) for i in (median_ratio_interval(ratios, seed=s) for s in range(6, 12))}
    assert others != {(first.low, first.high)}  # the seed does drive the resampling


@pytest.mark.parametrize(
    "ratios, median, why",
    [([1.4], 1.4, "n=1"), ([1.2, 1.6], 1.4, "n=2"), ([1.3] * 25, 1.3, "all values equal")],
)
def test_median_interval_degenerate_inputs(ratios, median, why):
    interval = no_warnings(median_ratio_interval, ratios)
    assert (interval.estimate, interval.low, interval.high) == pytest.approx((median, median, median))
    assert interval.method.startswith("degenerate") and why in interval.method
    assert interval.degenerate and interval.n == len(ratios)


def test_median_interval_heavy_ties_stay_finite_and_silent():
    """Mostly tied ratios (coarse timer): BCa gives NaN plus warnings here, percentile does not."""
    ratios = [1.0, 1.0, 1.0, 1.0, 1.2]
    interval = no_warnings(median_ratio_interval, ratios)
    assert not interval.degenerate
    assert math.isfinite(interval.low) and math.isfinite(interval.high)
    assert 1.0 <= interval.low <= interval.estimate == 1.0 <= interval.high <= 1.2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratios": []}, "empty"),
        ({"ratios": [1.0, float("nan"), 1.2]}, "non-finite"),
        ({"ratios": [1.0, 1.1, 1.2], "confidence": 1.0}, "confidence"),
        ({"ratios": [1.0, 1.1, 1.2], "resamples": 0}, "resamples"),
    ],
)
def test_median_interval_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        median_ratio_interval(**kwargs)


# --- paired_drop_interval -------------------------------------------------------------------------


def test_paired_drop_identical_arrays_is_zero_point():
    values = np.random.default_rng(0).random(100)
    interval = no_warnings(paired_drop_interval, values, values.copy())
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert interval.degenerate


def test_paired_drop_constant_values_is_point():
    interval = no_warnings(paired_drop_interval, [0.9] * 30, [0.8] * 30)
    assert (interval.estimate, interval.low, interval.high) == pytest.approx((0.1, 0.1, 0.1))
    assert interval.degenerate


def test_paired_drop_known_shift():
    rng = np.random.default_rng(1)
    fp32 = rng.normal(0.7, 0.2, 300)
    int8 = fp32 - 0.1 + rng.normal(0.0, 0.01, 300)
    interval = paired_drop_interval(fp32, int8)
    assert interval.estimate == pytest.approx(np.mean(fp32) - np.mean(int8))
    assert interval.contains(0.1)
    assert interval.low > 0  # the drop is real
    assert "paired" in interval.method


def test_paired_drop_top1_flips():
    rng = np.random.default_rng(2)
    n, k = 200, 10
    fp32 = (rng.random(n) < 0.8).astype(float)
    int8 = fp32.copy()
    hits = np.flatnonzero(fp32 == 1)
    int8[hits[:k]] = 0.0  # INT8 gets k correct samples wrong
    interval = no_warnings(paired_drop_interval, fp32, int8)
    assert interval.estimate == pytest.approx(k / n)
    assert 0.0 <= interval.low <= interval.estimate <= interval.high <= 1.0
    assert interval.low > 0  # every flip goes one way: no resample can show an improvement
    assert interval.contains(k / n)


def test_paired_drop_top1_flips_both_ways_straddle_zero():
    fp32 = np.array([1.0] * 90 + [0.0] * 10)
    int8 = fp32.copy()
    int8[:3] = 0.0  # 3 samples lost ...
    int8[90:93] = 1.0  # ... and 3 gained: no net drop
    interval = paired_drop_interval(fp32, int8)
    assert interval.estimate == pytest.approx(0.0)
    assert interval.low < 0 < interval.high
    assert -1.0 <= interval.low and interval.high <= 1.0


def test_pairing_narrows_interval():
    """Per-sample difficulty dominates each side's variance but cancels in the paired difference."""
    rng = np.random.default_rng(3)
    difficulty = rng.normal(0.0, 1.0, 200)
    fp32 = difficulty + 0.5
    int8 = difficulty + 0.45 + rng.normal(0.0, 0.01, 200)
    paired = paired_drop_interval(fp32, int8, seed=1)
    unpaired = stats.bootstrap(
        (fp32, int8),
        lambda a, b, axis=-1: np.mean(a, axis=axis) - np.mean(b, axis=axis),
        paired=False,
        n_resamples=2000,
        method="percentile",
        rng=np.random.default_rng(1),
    ).confidence_interval
    unpaired_width = unpaired.high - unpaired.low
    assert paired.contains(0.05)
    assert paired.width < unpaired_width / 20
    assert unpaired.low < 0 < unpaired.high  # unpaired cannot even tell the drop from zero


def test_paired_drop_lower_is_better_sign():
    rng = np.random.default_rng(4)
    fp32_error = rng.random(100)
    int8_error = fp32_error + 0.2 + rng.normal(0.0, 0.01, 100)  # INT8 makes larger errors: worse
    worse = paired_drop_interval(fp32_error, int8_error, higher_is_better=False)
    assert worse.estimate == pytest.approx(0.2, abs=0.01)
    assert worse.low > 0
    flipped = paired_drop_interval(fp32_error, int8_error, higher_is_better=True)
    assert flipped.estimate == pytest.approx(-worse.estimate)
    assert flipped.high < 0


def test_paired_drop_max_aggregate():
    fp32_error = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    int8_error = np.array([0.1, 0.2, 0.5, 0.25, 0.15])
    interval = paired_drop_interval(fp32_error, int8_error, higher_is_better=False, aggregate="max")
    assert interval.estimate == pytest.approx(0.2)  # max(int8) - max(fp32)
    assert 0.0 <= interval.low <= interval.estimate <= interval.high <= 0.2 + 1e-12


def test_paired_drop_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    fp32 = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    int8 = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    interval = paired_drop_interval(fp32, int8)
    assert interval.estimate == pytest.approx(1 / 7)


def test_paired_drop_length_mismatch():
    with pytest.raises(ValueError, match=r"fp32 has 5 values, int8 has 4"):
        paired_drop_interval([1.0] * 5, [1.0] * 4)


def test_paired_drop_unknown_aggregate():
    with pytest.raises(ValueError, match="aggregate"):
        paired_drop_interval([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], aggregate="median")


# --- decide_on_interval ---------------------------------------------------------------------------


def interval(estimate: float, low: float, high: float) -> Interval:
    return Interval(estimate, low, high, 0.95, 100, "test")


def test_decision_pass_when_interval_clears_threshold():
    decision = decide_on_interval(interval(1.7, 1.6, 1.8), 1.5, budget_exhausted=False)
    assert decision is not None and decision.verdict == "pass" and decision.basis == BASIS_INTERVAL
    assert "[1.60, 1.80]" in decision.reason and "1.50" in decision.reason
    on_edge = decide_on_interval(interval(1.6, 1.5, 1.7), 1.5, budget_exhausted=False)
    assert on_edge is not None and on_edge.verdict == "pass"  # low >= threshold


def test_decision_fail_when_interval_below_threshold():
    decision = decide_on_interval(interval(1.3, 1.2, 1.4), 1.5, budget_exhausted=False)
    assert decision is not None and decision.verdict == "fail" and decision.basis == BASIS_INTERVAL
    assert "[1.20, 1.40]" in decision.reason and "1.50" in decision.reason
    # high == threshold straddles: not a fail on the interval
    assert decide_on_interval(interval(1.4, 1.3, 1.5), 1.5, budget_exhausted=False) is None


def test_decision_straddle_with_budget_left_asks_for_more():
    assert decide_on_interval(interval(1.55, 1.42, 1.61), 1.5, budget_exhausted=False) is None


@pytest.mark.parametrize("estimate, verdict", [(1.55, "pass"), (1.5, "pass"), (1.45, "fail")])
def test_decision_straddle_after_budget_decides_on_median(estimate, verdict):
    decision = decide_on_interval(interval(estimate, 1.42, 1.61), 1.5, budget_exhausted=True)
    assert decision is not None
    assert decision.verdict == verdict
    assert decision.basis == BASIS_MEDIAN == "median (interval straddles after the budget)"
    assert "95% interval [1.42, 1.61] straddles 1.50 after the time budget" in decision.reason
    assert f"decided on the median {estimate:.2f}" in decision.reason


def test_decision_budget_flag_irrelevant_when_interval_decides():
    for exhausted in (False, True):
        decision = decide_on_interval(interval(1.3, 1.2, 1.4), 1.5, budget_exhausted=exhausted)
        assert decision is not None and decision.basis == BASIS_INTERVAL


# --- measure_until_narrow -------------------------------------------------------------------------


@dataclass
class FakeSampler:
    """One interleaved pair: baseline 10 ms, candidate 10 ms / ratio, each with lognormal noise."""

    ratio: float
    sigma: float
    seed: int = 0
    calls: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __call__(self) -> tuple[float, float]:
        self.calls += 1
        baseline = 0.010 * math.exp(self.rng.normal(0.0, self.sigma))
        candidate = 0.010 / self.ratio * math.exp(self.rng.normal(0.0, self.sigma))
        return baseline, candidate


@dataclass
class FakeClock:
    """Advances ``step`` seconds per reading, whatever the real time."""

    step: float = 0.1
    now: float = 0.0

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


def check_consistent(result: AdaptiveResult, sampler: FakeSampler) -> None:
    assert result.rounds == len(result.baseline_seconds) == len(result.candidate_seconds) == len(result.ratios)
    assert result.rounds == sampler.calls == result.interval.n
    assert result.ratios == pytest.approx([b / c for b, c in zip(result.baseline_seconds, result.candidate_seconds)])
    assert result.interval.estimate == pytest.approx(np.median(result.ratios))


def test_adaptive_stops_narrow_on_quiet_machine():
    sampler = FakeSampler(ratio=TRUE_RATIO, sigma=0.02)
    result = measure_until_narrow(sampler, clock=FakeClock(), resamples=500)
    check_consistent(result, sampler)
    assert result.stopped_because == "narrow"
    assert not result.budget_exhausted
    assert result.interval.relative_width <= 0.03
    assert result.rounds < 400
    assert result.interval.contains(TRUE_RATIO)


def test_adaptive_needs_more_rounds_when_noisier():
    quiet = measure_until_narrow(FakeSampler(TRUE_RATIO, 0.02), clock=FakeClock(), resamples=500)
    noisy_sampler = FakeSampler(TRUE_RATIO, 0.05)
    noisy = measure_until_narrow(noisy_sampler, clock=FakeClock(step=0.01), resamples=500)
    check_consistent(noisy, noisy_sampler)
    assert noisy.stopped_because == "narrow"
    assert noisy.rounds > quiet.rounds
    assert (noisy.rounds - 10) % 10 == 0  # min_rounds, then whole batches


@pytest.mark.parametrize("ratio, verdict", [(3.0, "pass"), (0.8, "fail")])
def test_adaptive_stops_decided_far_from_threshold(ratio, verdict):
    sampler = FakeSampler(ratio=ratio, sigma=0.3)
    result = measure_until_narrow(
        sampler, threshold=1.5, target_relative_width=0.001, clock=FakeClock(), resamples=500
    )
    check_consistent(result, sampler)
    assert result.stopped_because == "decided"
    assert not result.budget_exhausted
    assert result.rounds <= 20  # settled at once, far from max_rounds
    decision = decide_on_interval(result.interval, 1.5, budget_exhausted=result.budget_exhausted)
    assert decision is not None and decision.verdict == verdict and decision.basis == BASIS_INTERVAL


def test_adaptive_hits_budget_with_huge_noise():
    sampler = FakeSampler(ratio=TRUE_RATIO, sigma=1.5)
    clock = FakeClock(step=1.0)
    result = measure_until_narrow(
        sampler, threshold=1.5, budget_seconds=30.0, clock=clock, resamples=500
    )
    check_consistent(result, sampler)
    assert result.stopped_because == "budget"
    assert result.budget_exhausted
    assert result.elapsed_seconds >= 30.0
    assert 10 <= result.rounds <= 10 + 30  # min_rounds, plus at most one pair per clock step of budget
    assert result.rounds < 400
    decision = decide_on_interval(result.interval, 1.5, budget_exhausted=result.budget_exhausted)
    assert decision is not None and decision.basis == BASIS_MEDIAN


def test_adaptive_caps_at_max_rounds_mid_batch():
    sampler = FakeSampler(ratio=TRUE_RATIO, sigma=1.0)
    result = measure_until_narrow(
        sampler, min_rounds=10, max_rounds=47, batch=15, target_relative_width=0.001,
        budget_seconds=1e9, clock=FakeClock(), resamples=300,
    )
    check_consistent(result, sampler)
    assert result.stopped_because == "max_rounds"
    assert result.budget_exhausted
    assert result.rounds == 47  # the last batch is cut short, never overshoots


def test_adaptive_always_collects_min_rounds_even_past_budget():
    sampler = FakeSampler(ratio=TRUE_RATIO, sigma=1.0)
    result = measure_until_narrow(
        sampler, min_rounds=12, budget_seconds=0.5, target_relative_width=0.001,
        clock=FakeClock(step=1.0), resamples=300,
    )
    assert result.stopped_because == "budget" and result.rounds == 12


def test_adaptive_constant_timings_are_narrow_at_once():
    sampler_calls = []

    def constant() -> tuple[float, float]:
        sampler_calls.append(1)
        return 0.02, 0.01

    result = no_warnings(measure_until_narrow, constant, clock=FakeClock())
    assert result.stopped_because == "narrow" and result.rounds == 10 == len(sampler_calls)
    assert (result.interval.low, result.interval.high) == (2.0, 2.0)


def test_adaptive_does_not_decide_on_fewer_than_three_pairs():
    sampler = FakeSampler(ratio=3.0, sigma=0.1)
    result = measure_until_narrow(
        sampler, min_rounds=1, batch=1, threshold=1.5, clock=FakeClock(), resamples=300
    )
    assert result.stopped_because in ("decided", "narrow")
    assert result.rounds >= 3
    assert not result.interval.degenerate


def test_adaptive_deterministic():
    first = measure_until_narrow(FakeSampler(TRUE_RATIO, 0.1, seed=9), clock=FakeClock(), resamples=300)
    second = measure_until_narrow(FakeSampler(TRUE_RATIO, 0.1, seed=9), clock=FakeClock(), resamples=300)
    assert first == second


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_rounds": 0}, "min_rounds"),
        ({"min_rounds": 20, "max_rounds": 10}, "max_rounds"),
        ({"batch": 0}, "batch"),
        ({"target_relative_width": 0.0}, "target_relative_width"),
        ({"budget_seconds": 0.0}, "budget_seconds"),
    ],
)
def test_adaptive_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_until_narrow(FakeSampler(TRUE_RATIO, 0.1), clock=FakeClock(), **kwargs)


def test_adaptive_rejects_non_positive_seconds():
    with pytest.raises(ValueError, match="non-positive"):
        measure_until_narrow(lambda: (0.01, 0.0), clock=FakeClock())
