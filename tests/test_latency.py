"""measure_speedup call order and SpeedupMeasurement math, on a fake clock (no real timing)."""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import pytest

from pytest_ovquant.measure import latency
from pytest_ovquant.measure.latency import SpeedupMeasurement, measure_speedup


class FakeClock:
    """Replaces ``time`` in the latency module: time only moves when a fake model runs."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def fake_model(name: str, log: list[str], clock: FakeClock, cost: float, first_cost: float | None = None):
    """Records its calls in ``log``; advances the clock by ``cost`` (``first_cost`` on the first call)."""
    state = {"calls": 0}

    def run():
        state["calls"] += 1
        log.append(name)
        clock.now += first_cost if first_cost is not None and state["calls"] == 1 else cost
        return name

    return run


def test_warmup_first_then_alternating_pairs(clock):
    log: list[str] = []
    measure_speedup(
        fake_model("A", log, clock, 2.0), fake_model("B", log, clock, 1.0), baseline_name="eager", rounds=4, warmup=2
    )
    assert log[:4] == ["A", "B", "A", "B"]  # warm-up
    assert log[4:] == ["A", "B", "B", "A", "A", "B", "B", "A"]


def test_rounds_entries_equal_rounds_and_warmup_is_not_timed(clock):
    log: list[str] = []
    # the first call of each side "compiles" for 100 s: it must not show up in the timings
    result = measure_speedup(
        fake_model("A", log, clock, 2.0, first_cost=100.0),
        fake_model("B", log, clock, 0.5, first_cost=100.0),
        baseline_name="eager",
        rounds=5,
        warmup=3,
    )
    assert len(log) == 2 * (3 + 5)
    assert result.rounds == 5
    assert result.baseline_seconds == [2.0] * 5
    assert result.candidate_seconds == [0.5] * 5
    assert result.speedup == 4.0
    assert result.baseline == "eager"


def test_without_warmup_first_calls_are_timed(clock):
    log: list[str] = []
    result = measure_speedup(
        fake_model("A", log, clock, 2.0, first_cost=10.0),
        fake_model("B", log, clock, 1.0, first_cost=10.0),
        baseline_name="ov_fp32",
        rounds=3,
        warmup=0,
    )
    assert log == ["A", "B", "B", "A", "A", "B"]
    assert result.baseline_seconds == [10.0, 2.0, 2.0]
    assert result.candidate_seconds == [10.0, 1.0, 1.0]
    assert result.ratios == [1.0, 2.0, 2.0]
    assert result.speedup == 2.0
    assert result.baseline == "ov_fp32"


def test_each_timing_belongs_to_its_own_side_when_order_alternates(clock):
    log: list[str] = []
    # costs that change per call: baseline 1, 2, 3, ...; candidate 10, 20, 30, ...
    counters = {"A": 0, "B": 0}

    def side(name: str, unit: float):
        def run():
            counters[name] += 1
            log.append(name)
            clock.now += unit * counters[name]

        return run

    result = measure_speedup(side("A", 1.0), side("B", 10.0), baseline_name="eager", rounds=4, warmup=1)
    assert result.baseline_seconds == [2.0, 3.0, 4.0, 5.0]
    assert result.candidate_seconds == [20.0, 30.0, 40.0, 50.0]


def test_single_round(clock):
    log: list[str] = []
    result = measure_speedup(
        fake_model("A", log, clock, 3.0), fake_model("B", log, clock, 1.5), baseline_name="eager", rounds=1, warmup=0
    )
    assert log == ["A", "B"]
    assert result.rounds == 1
    assert result.speedup == 2.0


@pytest.mark.parametrize("rounds", [0, -1])
def test_rounds_below_one_raises_before_any_call(rounds):
    calls: list[str] = []
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        measure_speedup(lambda: calls.append("A"), lambda: calls.append("B"), baseline_name="eager", rounds=rounds)
    assert calls == []


def test_default_rounds_and_warmup(clock):
    log: list[str] = []
    result = measure_speedup(fake_model("A", log, clock, 1.0), fake_model("B", log, clock, 1.0), baseline_name="eager")
    assert result.rounds == 30
    assert len(log) == 2 * (30 + 3)


# ---------------------------------------------------------------------------------------------
# SpeedupMeasurement math


def test_ratios_are_per_pair():
    m = SpeedupMeasurement("eager", [2.0, 9.0, 4.0], [1.0, 3.0, 0.5])
    assert m.ratios == [2.0, 3.0, 8.0]
    assert m.speedup == 3.0


def test_speedup_is_median_of_ratios_not_ratio_of_medians():
    m = SpeedupMeasurement("eager", [1.0, 10.0, 10.0, 1.0], [1.0, 1.0, 5.0, 0.25])
    assert m.ratios == [1.0, 10.0, 2.0, 4.0]
    assert m.speedup == 3.0  # median of (1, 2, 4, 10)
    ratio_of_medians = statistics.median(m.baseline_seconds) / statistics.median(m.candidate_seconds)
    assert ratio_of_medians != m.speedup


def test_speedup_below_one_when_candidate_is_slower():
    m = SpeedupMeasurement("eager", [1.0, 1.0, 1.0], [2.0, 4.0, 2.0])
    assert m.speedup == 0.5


def test_zero_candidate_times_are_left_out_of_ratios():
    m = SpeedupMeasurement("eager", [2.0, 3.0, 4.0], [1.0, 0.0, 2.0])
    assert m.ratios == [2.0, 2.0]
    assert m.speedup == 2.0


def test_medians_in_milliseconds_and_rounds():
    m = SpeedupMeasurement("ov_fp32", [0.003, 0.001, 0.002], [0.0005, 0.0015, 0.001])
    assert m.baseline_median_ms == pytest.approx(2.0)
    assert m.candidate_median_ms == pytest.approx(1.0)
    assert m.rounds == 3
    assert m.baseline == "ov_fp32"


def test_even_number_of_rounds_median_is_the_mean_of_the_middle_two():
    m = SpeedupMeasurement("eager", [0.004, 0.001], [0.001, 0.001])
    assert m.baseline_median_ms == pytest.approx(2.5)
    assert m.ratios == [4.0, 1.0]
    assert m.speedup == 2.5


def switch_penalty_model(name: str, log: list[str], clock: FakeClock, cost: float, penalty: float):
    """Costs ``cost``, plus ``penalty`` when the previous call in ``log`` was another model's."""

    def run():
        after_other = bool(log) and log[-1] != name
        log.append(name)
        clock.now += cost + (penalty if after_other else 0.0)
        return name

    return run


def test_adaptive_blocks_time_each_model_after_it_settled_and_report_per_call_times(clock):
    """Blocks A (B...) B B (A...) A: after a switch each model runs untimed for SETTLE_SECONDS, so
    the slowdown of the first calls after a switch is not measured; the times kept are per call."""
    log: list[str] = []
    # the first call after a switch costs 5 ms more (as caches and threads move between models)
    baseline = switch_penalty_model("eager", log, clock, cost=0.030, penalty=0.005)
    candidate = switch_penalty_model("int8", log, clock, cost=0.010, penalty=0.005)
    assert latency.SETTLE_SECONDS == 0.02
    result = latency.measure_speedup_adaptive(
        baseline, candidate, baseline_name="eager", warmup=1, min_rounds=3, max_rounds=3
    )
    # warm-up, then the baseline settles (one 35 ms call) before the first block
    assert log[:3] == ["eager", "int8", "eager"]
    # int8 settles with two calls (15 + 10 ms >= 20 ms), eager with one (35 ms)
    assert log[3:] == ["eager", "int8", "int8", "int8", "int8", "eager", "eager"] * 3
    assert result.rounds == 3
    assert result.baseline_median_ms == pytest.approx(30.0)  # one call's time, not a block's two
    assert result.candidate_median_ms == pytest.approx(10.0)
    assert result.speedup == pytest.approx(3.0)


def test_settling_stops_at_the_call_cap_for_models_that_take_no_time(clock):
    log: list[str] = []
    instant = fake_model("B", log, clock, cost=0.0)
    latency._settle(instant)
    assert log == ["B"] * latency.MAX_SETTLE_CALLS
