"""Gates: the ``ovq_accuracy`` / ``ovq_speedup`` markers and the pass/fail decision per metric.

Decisions are pure functions of (gate, measurement, stored reference) so they can be tested on
synthetic numbers; running the models and storing references happen elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .measure.evaluation import MetricResult
from .measure.latency import SpeedupMeasurement
from .measure.metrics import Metric, resolve_metric
from .measure.statistics import Interval, decide_on_interval, paired_drop_interval
from .references import MetricValues, SpeedupValues

ACCURACY_MARKER = "ovq_accuracy"
SPEEDUP_MARKER = "ovq_speedup"
BASELINES = ("eager", "ov_fp32")
DEFAULT_ACCURACY_TOLERANCE = 0.001  # NNCF's conformance suite default atol
DEFAULT_SPEEDUP_TOLERANCE = 0.10  # relative

# Float noise allowed on a bound: 0.899 - 0.9 is 0.0010000000000000009, not 0.001.
_EPS = 1e-9

# Row statuses
PASS, FAIL, IMPROVED, NEW, NOT_COMPARED = "pass", "FAIL", "improved", "no reference", "not compared"


@dataclass(frozen=True)
class AccuracyGate:
    metric: Metric
    max_drop: float | None = None
    max_relative_drop: float | None = None
    min_value: float | None = None
    tolerance: float = DEFAULT_ACCURACY_TOLERANCE
    decide_on: str = "point"  # "point" | "interval": max_drop judged on the paired bootstrap interval


@dataclass(frozen=True)
class SpeedupGate:
    min: float
    baseline: str = "eager"
    tolerance: float = DEFAULT_SPEEDUP_TOLERANCE
    rounds: int = 10  # minimum interleaved pairs; more are added until the interval settles
    warmup: int = 3
    max_rounds: int = 400
    budget: float = 30.0  # seconds of timing per test at most
    target_width: float = 0.03  # stop when the interval is this narrow relative to the median
    confidence: float = 0.95


def _number(source: str, key: str, value: Any, *, minimum: float | None = None, strictly: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{source}: {key}={value!r} must be a number")
    if minimum is not None and (value <= minimum if strictly else value < minimum):
        bound = f"> {minimum}" if strictly else f">= {minimum}"
        raise ConfigError(f"{source}: {key}={value!r} is impossible; it must be {bound}")
    return float(value)


def _check_kwargs(source: str, mark: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if mark.args:
        raise ConfigError(f"{source}: takes keyword arguments only, got positional {mark.args!r}")
    unknown = sorted(set(mark.kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"{source}: unknown argument(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    return dict(mark.kwargs)


ACCURACY_KEYS = ("metric", "max_drop", "max_relative_drop", "min_value", "tolerance", "decide_on")
SPEEDUP_KEYS = ("min", "baseline", "tolerance", "rounds", "warmup", "max_rounds", "budget", "target_width", "confidence")
DECIDE_ON = ("point", "interval")


def parse_accuracy(mark: Any, source: str) -> AccuracyGate:
    kwargs = _check_kwargs(source, mark, ACCURACY_KEYS)
    if "metric" not in kwargs:
        raise ConfigError(f"{source}: metric= is required (e.g. metric='top1')")
    metric = resolve_metric(kwargs["metric"], source)
    gate = AccuracyGate(
        metric=metric,
        max_drop=_number(source, "max_drop", kwargs["max_drop"], minimum=0) if kwargs.get("max_drop") is not None else None,
        max_relative_drop=(
            _number(source, "max_relative_drop", kwargs["max_relative_drop"], minimum=0)
            if kwargs.get("max_relative_drop") is not None
            else None
        ),
        min_value=_number(source, "min_value", kwargs["min_value"]) if kwargs.get("min_value") is not None else None,
        tolerance=_number(source, "tolerance", kwargs.get("tolerance", DEFAULT_ACCURACY_TOLERANCE), minimum=0),
        decide_on=kwargs.get("decide_on", "point"),
    )
    if gate.decide_on not in DECIDE_ON:
        raise ConfigError(f"{source}: decide_on={gate.decide_on!r} is not valid; expected one of {', '.join(DECIDE_ON)}")
    if (gate.max_drop is not None or gate.max_relative_drop is not None) and metric.kind == "fidelity" and metric.ideal is None:
        raise ConfigError(f"{source}: metric {metric.name!r} has no FP32 value to drop from; use min_value=")
    return gate


def parse_speedup(mark: Any, source: str) -> SpeedupGate:
    kwargs = _check_kwargs(source, mark, SPEEDUP_KEYS)
    if "min" not in kwargs:
        raise ConfigError(f"{source}: min= is required (e.g. min=1.5: INT8 at least 1.5x faster than the baseline)")
    baseline = kwargs.get("baseline", "eager")
    if baseline not in BASELINES:
        raise ConfigError(f"{source}: baseline={baseline!r} is not valid; expected one of {', '.join(BASELINES)}")
    rounds = kwargs.get("rounds", SpeedupGate.rounds)
    warmup = kwargs.get("warmup", SpeedupGate.warmup)
    max_rounds = kwargs.get("max_rounds", max(SpeedupGate.max_rounds, rounds if isinstance(rounds, int) else 0))
    for key, value, low in (("rounds", rounds, 1), ("warmup", warmup, 0), ("max_rounds", max_rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{source}: {key}={value!r} must be an integer >= {low}")
    if max_rounds < rounds:
        raise ConfigError(f"{source}: max_rounds={max_rounds} is below rounds={rounds}")
    confidence = _number(source, "confidence", kwargs.get("confidence", SpeedupGate.confidence), minimum=0, strictly=True)
    if confidence >= 1:
        raise ConfigError(f"{source}: confidence={confidence!r} must be between 0 and 1")
    return SpeedupGate(
        min=_number(source, "min", kwargs["min"], minimum=0, strictly=True),
        baseline=baseline,
        tolerance=_number(source, "tolerance", kwargs.get("tolerance", DEFAULT_SPEEDUP_TOLERANCE), minimum=0),
        rounds=rounds,
        warmup=warmup,
        max_rounds=max_rounds,
        budget=_number(source, "budget", kwargs.get("budget", SpeedupGate.budget), minimum=0, strictly=True),
        target_width=_number(source, "target_width", kwargs.get("target_width", SpeedupGate.target_width), minimum=0, strictly=True),
        confidence=confidence,
    )


@dataclass
class GateRow:
    """One line of the failure table / summary: what was obtained, what was expected, the verdict."""

    gate: str  # "accuracy" | "speedup"
    name: str  # metric name, or "speedup vs eager"
    int8: float | None
    fp32: float | None = None
    drop: float | None = None
    reference: float | None = None
    difference: float | None = None  # obtained - reference
    allowed: str = ""
    status: str = PASS
    reasons: list[str] = field(default_factory=list)
    interval: list[float] | None = None  # [low, high] of the INT8 speedup, or of the accuracy drop
    notes: list[str] = field(default_factory=list)  # how a close call was decided
    nonfinite: bool = False  # NaN/Inf outputs: the row's values are never recorded as a reference

    @property
    def threshold_failed(self) -> bool:
        """Failed a bound written in the code (not a comparison with the stored reference)."""
        return any(not r.startswith("reference:") for r in self.reasons) and self.status == FAIL


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def decide_accuracy(gate: AccuracyGate, result: MetricResult, reference: MetricValues | None) -> GateRow:
    metric = gate.metric
    row = GateRow("accuracy", metric.name, result.int8, fp32=result.fp32, drop=result.drop)
    allowed: list[str] = []
    drop = result.drop
    int8_bad = result.int8_nonfinite
    fp32_bad = result.fp32_nonfinite
    if not math.isfinite(result.int8) or int8_bad or fp32_bad or (result.fp32 is not None and math.isnan(result.fp32)):
        # NaN/Inf outputs make any value meaningless (top-1 of NaN logits is a number): fail, never record
        of = f" for {max(int8_bad, fp32_bad)} of {result.samples} samples" if (int8_bad or fp32_bad) else ""
        if fp32_bad or (result.fp32 is not None and math.isnan(result.fp32)):
            row.reasons.append(
                f"FP32 {metric.name}: the FP32 model's outputs are not finite (NaN/Inf){of}; there is nothing to "
                "compare INT8 with: fix the model or the ovq_eval_dataset inputs"
            )
        if int8_bad or not math.isfinite(result.int8):
            row.reasons.append(
                f"INT8 {metric.name} is {result.int8:.4g}: the INT8 module's outputs are not finite (NaN/Inf)"
                f"{of if int8_bad else ''}; look for the layer that overflows (compare ovq_quantized_model with "
                "the FP32 model), check the calibration data's ranges, or keep that layer in float with ignored_scope"
            )
        row.status = FAIL
        row.nonfinite = True
        row.allowed = "finite outputs"
        return row
    interval = drop_interval(result)
    if interval is not None:
        row.interval = [interval.low, interval.high]
    if gate.max_drop is not None and drop is not None:
        allowed.append(f"drop <= {_fmt(gate.max_drop)}")
        if gate.decide_on == "interval" and interval is not None:
            if interval.low > gate.max_drop + _EPS:
                row.reasons.append(f"drop {interval.describe()} lies above max_drop {_fmt(gate.max_drop)}")
            elif interval.high > gate.max_drop + _EPS:
                row.notes.append(f"drop {interval.describe()} straddles max_drop {_fmt(gate.max_drop)}: decided on the point drop {_fmt(drop)}")
                if drop > gate.max_drop + _EPS:
                    row.reasons.append(f"drop {_fmt(drop)} > max_drop {_fmt(gate.max_drop)} (interval straddles)")
        elif drop > gate.max_drop + _EPS:
            row.reasons.append(f"drop {_fmt(drop)} > max_drop {_fmt(gate.max_drop)}")
    if gate.max_relative_drop is not None and drop is not None and result.fp32:
        relative = drop / abs(result.fp32)
        allowed.append(f"drop <= {gate.max_relative_drop:.2%} of FP32")
        if relative > gate.max_relative_drop + _EPS:
            row.reasons.append(f"relative drop {relative:.2%} > max_relative_drop {gate.max_relative_drop:.2%}")
    if gate.min_value is not None:
        better = ">=" if metric.higher_is_better else "<="
        allowed.append(f"INT8 {better} {_fmt(gate.min_value)}")
        if (result.int8 < gate.min_value) if metric.higher_is_better else (result.int8 > gate.min_value):
            row.reasons.append(f"INT8 {_fmt(result.int8)} not {better} {_fmt(gate.min_value)}")
    allowed.append(f"reference ± {_fmt(gate.tolerance)}")
    row.allowed = "; ".join(allowed)
    if reference is None or reference.int8 is None:
        row.status = FAIL if row.reasons else NEW
        return row
    row.reference = reference.int8
    row.difference = result.int8 - reference.int8
    worse_by = -row.difference if metric.higher_is_better else row.difference
    if worse_by > gate.tolerance + _EPS:
        row.reasons.append(f"reference: INT8 {_fmt(result.int8)} is worse than the reference {_fmt(reference.int8)} by {_fmt(worse_by)} > tolerance {_fmt(gate.tolerance)}")
    if row.reasons:
        row.status = FAIL
    elif worse_by < -gate.tolerance - _EPS:
        row.status = IMPROVED
        row.reasons.append(f"INT8 {_fmt(result.int8)} is better than the reference {_fmt(reference.int8)} by more than the tolerance")
    return row


def _interval_verdict(measurement: SpeedupMeasurement, threshold: float) -> tuple[bool, str | None]:
    """(meets threshold?, note) deciding on the interval, or on the median when it straddles."""
    interval = measurement.interval
    if interval is None:
        return measurement.speedup >= threshold, None
    decision = decide_on_interval(interval, threshold, budget_exhausted=True)
    assert decision is not None  # budget_exhausted=True always decides
    note = decision.reason if decision.basis != "interval" else None
    return decision.verdict == "pass", note


def decide_speedup(
    gate: SpeedupGate, measurement: SpeedupMeasurement, reference: SpeedupValues | None, machine: str
) -> GateRow:
    value = measurement.speedup
    row = GateRow("speedup", f"speedup vs {gate.baseline}", value)
    if measurement.interval is not None:
        row.interval = [measurement.interval.low, measurement.interval.high]
        row.notes.append(
            f"{measurement.rounds} interleaved pairs, stopped: {measurement.stopped_because}; "
            f"{measurement.interval.describe()}"
        )
    row.allowed = f">= {gate.min:g}x; reference -{gate.tolerance:.0%}"
    meets_min, note = _interval_verdict(measurement, gate.min)
    if note:
        row.notes.append(note)
    if not meets_min:
        row.reasons.append(f"speedup {value:.3g}x < min {gate.min:g}x")
    if reference is None:
        row.status = FAIL if row.reasons else NEW
        return row
    row.reference = reference.value
    row.difference = value - reference.value
    if reference.baseline != gate.baseline or reference.machine != machine:
        why = "another baseline" if reference.baseline != gate.baseline else f"another machine ({reference.machine})"
        row.status = FAIL if row.reasons else NOT_COMPARED
        row.allowed += f"; reference from {why}: not compared"
        return row
    floor = reference.value * (1 - gate.tolerance)
    meets_floor, note = _interval_verdict(measurement, floor)
    if note:
        row.notes.append(note)
    if not meets_floor:
        relative = row.difference / reference.value
        row.reasons.append(
            f"reference: speedup {value:.3g}x is {-relative:.1%} below the reference {reference.value:.3g}x "
            f"(tolerance {gate.tolerance:.0%})"
        )
    if row.reasons:
        row.status = FAIL
        return row
    ceiling = reference.value * (1 + gate.tolerance)
    clearly_above = measurement.interval.low > ceiling if measurement.interval is not None else value > ceiling
    if clearly_above:
        row.status = IMPROVED
        row.reasons.append(
            f"speedup {value:.3g}x is {row.difference / reference.value:.1%} above the reference {reference.value:.3g}x"
        )
    return row


def drop_interval(result: MetricResult) -> Interval | None:
    """Paired bootstrap interval of the drop (FP32 vs INT8 on the same samples), when it has one."""
    metric = result.metric
    if result.samples < 3 or result.drop is None:
        return None
    int8 = result.int8_samples.double().numpy()
    if result.fp32_samples is not None:
        fp32 = result.fp32_samples.double().numpy()
    elif metric.ideal is not None:
        fp32 = [metric.ideal] * len(int8)
    else:
        return None
    return paired_drop_interval(fp32, int8, higher_is_better=metric.higher_is_better, aggregate=metric.aggregate)
