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


@dataclass(frozen=True)
class SpeedupGate:
    min: float
    baseline: str = "eager"
    tolerance: float = DEFAULT_SPEEDUP_TOLERANCE
    rounds: int = 30
    warmup: int = 3


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


ACCURACY_KEYS = ("metric", "max_drop", "max_relative_drop", "min_value", "tolerance")
SPEEDUP_KEYS = ("min", "baseline", "tolerance", "rounds", "warmup")


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
    )
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
    rounds = kwargs.get("rounds", 30)
    warmup = kwargs.get("warmup", 3)
    for key, value, low in (("rounds", rounds, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{source}: {key}={value!r} must be an integer >= {low}")
    return SpeedupGate(
        min=_number(source, "min", kwargs["min"], minimum=0, strictly=True),
        baseline=baseline,
        tolerance=_number(source, "tolerance", kwargs.get("tolerance", DEFAULT_SPEEDUP_TOLERANCE), minimum=0),
        rounds=rounds,
        warmup=warmup,
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
    if not math.isfinite(result.int8):
        row.reasons.append(f"INT8 {metric.name} is {result.int8}: the INT8 module outputs NaN/Inf")
        row.status = FAIL
        row.allowed = "a finite value"
        return row
    if gate.max_drop is not None and drop is not None:
        allowed.append(f"drop <= {_fmt(gate.max_drop)}")
        if drop > gate.max_drop + _EPS:
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


def decide_speedup(
    gate: SpeedupGate, measurement: SpeedupMeasurement, reference: SpeedupValues | None, machine: str
) -> GateRow:
    value = measurement.speedup
    row = GateRow("speedup", f"speedup vs {gate.baseline}", value)
    row.allowed = f">= {gate.min:g}x; reference -{gate.tolerance:.0%}"
    if value < gate.min:
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
    relative = row.difference / reference.value
    if relative < -gate.tolerance:
        row.reasons.append(
            f"reference: speedup {value:.3g}x is {-relative:.1%} below the reference {reference.value:.3g}x "
            f"(tolerance {gate.tolerance:.0%})"
        )
    if row.reasons:
        row.status = FAIL
    elif relative > gate.tolerance:
        row.status = IMPROVED
        row.reasons.append(f"speedup {value:.3g}x is {relative:.1%} above the reference {reference.value:.3g}x")
    return row
