"""Gates: marker parsing, the pure accuracy/speedup decisions, and run_gates against a real reference store."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from pytest_ovquant.config import QuantizeConfig
from pytest_ovquant.errors import ConfigError
from pytest_ovquant.gate_runner import GatePlan, UpdateMode, run_gates
from pytest_ovquant.gates import (
    DEFAULT_ACCURACY_TOLERANCE,
    DEFAULT_SPEEDUP_TOLERANCE,
    FAIL,
    IMPROVED,
    NEW,
    NOT_COMPARED,
    PASS,
    AccuracyGate,
    GateRow,
    SpeedupGate,
    decide_accuracy,
    decide_speedup,
    parse_accuracy,
    parse_speedup,
)
from pytest_ovquant.measure import latency
from pytest_ovquant.measure.evaluation import MetricResult
from pytest_ovquant.measure.latency import SpeedupMeasurement
from pytest_ovquant.measure.metrics import resolve_metric
from pytest_ovquant.references import MetricValues, ReferenceStore, SpeedupValues, TestReference

SOURCE = "@pytest.mark.ovq_accuracy on tests/test_x.py::test_a"


def acc(*args, **kwargs) -> AccuracyGate:
    return parse_accuracy(pytest.mark.ovq_accuracy(*args, **kwargs).mark, SOURCE)


def speed(*args, **kwargs) -> SpeedupGate:
    return parse_speedup(pytest.mark.ovq_speedup(*args, **kwargs).mark, SOURCE)


# ---------------------------------------------------------------------------------------------
# parse_accuracy


def test_parse_accuracy_valid():
    gate = acc(metric="top1", max_drop=0.01, max_relative_drop=0.02, min_value=0.5, tolerance=0.002)
    assert gate.metric is resolve_metric("top1", SOURCE)
    assert (gate.max_drop, gate.max_relative_drop, gate.min_value, gate.tolerance) == (0.01, 0.02, 0.5, 0.002)


def test_parse_accuracy_defaults():
    gate = acc(metric="cosine")
    assert gate.metric.name == "cosine"
    assert (gate.max_drop, gate.max_relative_drop, gate.min_value) == (None, None, None)
    assert gate.tolerance == DEFAULT_ACCURACY_TOLERANCE == 0.001


def test_parse_accuracy_ints_become_floats_and_zero_is_allowed():
    gate = acc(metric="top1", max_drop=0, tolerance=0, min_value=1)
    assert (gate.max_drop, gate.tolerance, gate.min_value) == (0.0, 0.0, 1.0)
    assert isinstance(gate.max_drop, float) and isinstance(gate.min_value, float)


def test_parse_accuracy_none_values_mean_unset():
    gate = acc(metric="top1", max_drop=None, max_relative_drop=None, min_value=None)
    assert (gate.max_drop, gate.max_relative_drop, gate.min_value) == (None, None, None)


def test_parse_accuracy_negative_min_value_is_allowed():
    assert acc(metric="cosine", min_value=-0.5).min_value == -0.5


def test_parse_accuracy_callable_metric():
    def my_metric(outputs, targets):
        return 1.0

    assert acc(metric=my_metric, max_drop=0.1).metric.name == "my_metric"


def test_parse_accuracy_missing_metric():
    with pytest.raises(ConfigError, match="metric= is required") as info:
        acc(max_drop=0.01)
    assert str(info.value).startswith(SOURCE)


def test_parse_accuracy_unknown_kwarg_named_and_allowed_listed():
    with pytest.raises(ConfigError) as info:
        acc(metric="top1", max_dorp=0.01)
    message = str(info.value)
    assert message.startswith(SOURCE)
    assert "'max_dorp'" in message
    for key in ("metric", "max_drop", "max_relative_drop", "min_value", "tolerance"):
        assert key in message.split("allowed:")[1]


def test_parse_accuracy_several_unknown_kwargs_all_named():
    with pytest.raises(ConfigError, match=r"'atol', 'rtol'"):
        acc(metric="top1", rtol=0.1, atol=0.1)


def test_parse_accuracy_positional_args():
    with pytest.raises(ConfigError, match=r"keyword arguments only, got positional \('top1',\)"):
        acc("top1")


def test_parse_accuracy_unknown_metric_name():
    with pytest.raises(ConfigError, match=r"unknown metric 'top-1'"):
        acc(metric="top-1")


@pytest.mark.parametrize("key", ["max_drop", "max_relative_drop", "tolerance"])
def test_parse_accuracy_negative_bound_is_impossible(key):
    with pytest.raises(ConfigError, match=rf"{key}=-0.01 is impossible; it must be >= 0") as info:
        acc(metric="top1", **{key: -0.01})
    assert str(info.value).startswith(SOURCE)


@pytest.mark.parametrize("key", ["max_drop", "max_relative_drop", "min_value", "tolerance"])
@pytest.mark.parametrize(
    "value", ["0.01", True, False, float("nan"), [0.01]], ids=["str", "True", "False", "nan", "list"]
)
def test_parse_accuracy_non_number(key, value):
    with pytest.raises(ConfigError, match=rf"{key}=.* must be a number"):
        acc(metric="top1", **{key: value})


def test_parse_accuracy_tolerance_none_is_not_a_number():
    with pytest.raises(ConfigError, match="tolerance=None must be a number"):
        acc(metric="top1", tolerance=None)


@pytest.mark.parametrize("key", ["max_drop", "max_relative_drop"])
def test_parse_accuracy_drop_on_sqnr_has_no_fp32(key):
    with pytest.raises(ConfigError, match=r"metric 'sqnr' has no FP32 value to drop from; use min_value="):
        acc(metric="sqnr", **{key: 1.0})


def test_parse_accuracy_sqnr_with_min_value_is_fine():
    assert acc(metric="sqnr", min_value=30).min_value == 30.0


def test_parse_accuracy_drop_on_fidelity_with_ideal_is_fine():
    assert acc(metric="cosine", max_drop=0.01).max_drop == 0.01
    assert acc(metric="max_abs_error", max_drop=0.5).max_drop == 0.5


# ---------------------------------------------------------------------------------------------
# parse_speedup


def test_parse_speedup_valid():
    gate = speed(min=1.5, baseline="ov_fp32", tolerance=0.2, rounds=5, warmup=0)
    assert gate == SpeedupGate(min=1.5, baseline="ov_fp32", tolerance=0.2, rounds=5, warmup=0)


def test_parse_speedup_defaults():
    gate = speed(min=2)
    assert gate == SpeedupGate(min=2.0, baseline="eager", tolerance=DEFAULT_SPEEDUP_TOLERANCE, rounds=10, warmup=3)
    assert (gate.max_rounds, gate.budget, gate.target_width, gate.confidence) == (400, 30.0, 0.03, 0.95)
    assert isinstance(gate.min, float)


def test_parse_speedup_missing_min():
    with pytest.raises(ConfigError, match="min= is required"):
        speed(baseline="eager")


@pytest.mark.parametrize("value", [0, 0.0, -1.5])
def test_parse_speedup_min_not_positive_is_impossible(value):
    with pytest.raises(ConfigError, match=rf"min={value!r} is impossible; it must be > 0"):
        speed(min=value)


@pytest.mark.parametrize("value", ["2", True, float("nan"), None])
def test_parse_speedup_min_non_number(value):
    with pytest.raises(ConfigError, match="must be a number"):
        speed(min=value)


@pytest.mark.parametrize("baseline", ["ov-fp32", "Eager", "fp32", None])
def test_parse_speedup_bad_baseline(baseline):
    with pytest.raises(ConfigError, match=rf"baseline={baseline!r} is not valid; expected one of eager, ov_fp32"):
        speed(min=1.5, baseline=baseline)


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "30", None])
def test_parse_speedup_bad_rounds(value):
    with pytest.raises(ConfigError, match=rf"rounds={value!r} must be an integer >= 1"):
        speed(min=1.5, rounds=value)


@pytest.mark.parametrize("value", [-1, 0.5, False, "3"])
def test_parse_speedup_bad_warmup(value):
    with pytest.raises(ConfigError, match=rf"warmup={value!r} must be an integer >= 0"):
        speed(min=1.5, warmup=value)


def test_parse_speedup_negative_tolerance_is_impossible():
    with pytest.raises(ConfigError, match="tolerance=-0.1 is impossible"):
        speed(min=1.5, tolerance=-0.1)


def test_parse_speedup_unknown_kwarg_and_positional():
    allowed = "allowed: min, baseline, tolerance, rounds, warmup"
    with pytest.raises(ConfigError, match=rf"unknown argument\(s\) 'minimum'; {allowed}"):
        speed(minimum=1.5)
    with pytest.raises(ConfigError, match="keyword arguments only"):
        speed(1.5)


# ---------------------------------------------------------------------------------------------
# decide_accuracy (values chosen to be exact in binary floating point)


def result(metric: str, fp32: float | None, int8: float) -> MetricResult:
    return MetricResult(metric=resolve_metric(metric, SOURCE), fp32=fp32, int8=int8)


def test_accuracy_pass_within_thresholds_and_tolerance():
    row = decide_accuracy(
        acc(metric="top1", max_drop=0.25, tolerance=0.125), result("top1", 0.75, 0.625), MetricValues(0.75, 0.5, 0.25)
    )
    assert row.status == PASS
    assert row.reasons == []
    assert (row.gate, row.name, row.fp32, row.int8, row.drop) == ("accuracy", "top1", 0.75, 0.625, 0.125)
    assert row.reference == 0.5
    assert row.difference == 0.125  # obtained - reference
    assert not row.threshold_failed


def test_accuracy_fail_on_max_drop():
    row = decide_accuracy(acc(metric="top1", max_drop=0.125), result("top1", 0.75, 0.5), None)
    assert row.status == FAIL
    assert row.reasons == ["drop 0.25 > max_drop 0.125"]
    assert row.threshold_failed


def test_accuracy_max_drop_exactly_at_bound_passes():
    row = decide_accuracy(acc(metric="top1", max_drop=0.25), result("top1", 0.75, 0.5), MetricValues(int8=0.5))
    assert row.status == PASS


def test_accuracy_fail_on_max_relative_drop():
    # drop 0.25 of FP32 0.5 = 50% > 25%
    gate = acc(metric="top1", max_relative_drop=0.25)
    row = decide_accuracy(gate, result("top1", 0.5, 0.25), MetricValues(int8=0.25))
    assert row.status == FAIL
    assert row.reasons == ["relative drop 50.00% > max_relative_drop 25.00%"]
    assert row.threshold_failed
    assert "drop <= 25.00% of FP32" in row.allowed


def test_accuracy_max_relative_drop_within_bound():
    row = decide_accuracy(acc(metric="top1", max_relative_drop=0.5), result("top1", 0.5, 0.25), MetricValues(int8=0.25))
    assert row.status == PASS


def test_accuracy_fail_on_min_value_higher_is_better():
    row = decide_accuracy(acc(metric="top1", min_value=0.75), result("top1", 0.75, 0.5), MetricValues(int8=0.5))
    assert row.status == FAIL
    assert row.reasons == ["INT8 0.5 not >= 0.75"]
    assert "INT8 >= 0.75" in row.allowed
    assert row.threshold_failed


def test_accuracy_min_value_lower_is_better_is_an_upper_bound():
    gate = acc(metric="max_abs_error", min_value=0.25)
    too_high = decide_accuracy(gate, result("max_abs_error", 0.0, 0.5), MetricValues(int8=0.5))
    assert too_high.status == FAIL
    assert too_high.reasons == ["INT8 0.5 not <= 0.25"]
    assert "INT8 <= 0.25" in too_high.allowed
    low = decide_accuracy(gate, result("max_abs_error", 0.0, 0.125), MetricValues(int8=0.125))
    assert low.status == PASS


def test_accuracy_max_drop_lower_is_better():
    gate = acc(metric="max_abs_error", max_drop=0.25)
    row = decide_accuracy(gate, result("max_abs_error", 0.0, 0.5), None)
    assert row.drop == 0.5
    assert row.status == FAIL
    assert row.reasons == ["drop 0.5 > max_drop 0.25"]


def test_accuracy_no_reference_is_new():
    row = decide_accuracy(acc(metric="top1", max_drop=0.5), result("top1", 0.75, 0.5), None)
    assert row.status == NEW
    assert (row.reference, row.difference) == (None, None)
    assert row.reasons == []
    assert not row.threshold_failed


def test_accuracy_reference_without_int8_is_new():
    row = decide_accuracy(acc(metric="top1"), result("top1", 0.75, 0.5), MetricValues(fp32=0.75))
    assert row.status == NEW


def test_accuracy_no_reference_but_threshold_fails_is_fail():
    row = decide_accuracy(acc(metric="top1", min_value=0.75), result("top1", 0.75, 0.5), None)
    assert row.status == FAIL
    assert row.threshold_failed


def test_accuracy_regression_beyond_tolerance_fails_with_reference_reason():
    row = decide_accuracy(acc(metric="top1", tolerance=0.125), result("top1", 0.75, 0.5), MetricValues(int8=0.75))
    assert row.status == FAIL
    assert len(row.reasons) == 1
    assert row.reasons[0].startswith("reference:")
    assert "worse than the reference 0.75 by 0.25 > tolerance 0.125" in row.reasons[0]
    assert row.difference == -0.25
    assert not row.threshold_failed  # only the stored reference, not a bound in the code


def test_accuracy_regression_lower_is_better():
    row = decide_accuracy(
        acc(metric="max_abs_error", tolerance=0.125), result("max_abs_error", 0.0, 0.5), MetricValues(int8=0.25)
    )
    assert row.status == FAIL
    assert row.difference == 0.25
    assert row.reasons[0].startswith("reference:")


def test_accuracy_improvement_lower_is_better():
    row = decide_accuracy(
        acc(metric="max_abs_error", tolerance=0.125), result("max_abs_error", 0.0, 0.25), MetricValues(int8=0.5)
    )
    assert row.status == IMPROVED
    assert row.difference == -0.25


def test_accuracy_improvement_beyond_tolerance_is_improved():
    row = decide_accuracy(acc(metric="top1", tolerance=0.125), result("top1", 0.75, 0.75), MetricValues(int8=0.5))
    assert row.status == IMPROVED
    assert row.difference == 0.25
    assert len(row.reasons) == 1 and "better than the reference" in row.reasons[0]
    assert not row.threshold_failed


def test_accuracy_improvement_with_threshold_failure_is_fail():
    row = decide_accuracy(
        acc(metric="top1", min_value=0.875, tolerance=0.125), result("top1", 0.75, 0.75), MetricValues(int8=0.5)
    )
    assert row.status == FAIL
    assert row.threshold_failed


def test_accuracy_both_threshold_and_reference_fail():
    row = decide_accuracy(
        acc(metric="top1", max_drop=0.125, tolerance=0.125), result("top1", 0.75, 0.25), MetricValues(int8=0.75)
    )
    assert row.status == FAIL
    assert len(row.reasons) == 2
    assert row.threshold_failed


@pytest.mark.parametrize("int8", [0.25, 0.75], ids=["worse", "better"])
def test_accuracy_exactly_at_tolerance_boundary_passes(int8):
    row = decide_accuracy(acc(metric="top1", tolerance=0.25), result("top1", 0.75, int8), MetricValues(int8=0.5))
    assert row.status == PASS
    assert abs(row.difference) == 0.25


def test_accuracy_zero_tolerance_requires_exact_match():
    gate = acc(metric="top1", tolerance=0)
    assert decide_accuracy(gate, result("top1", 0.75, 0.5), MetricValues(int8=0.5)).status == PASS
    assert decide_accuracy(gate, result("top1", 0.75, 0.5), MetricValues(int8=0.5 + 2**-20)).status == FAIL


def test_accuracy_allowed_text_mentions_bounds():
    row = decide_accuracy(
        acc(metric="top1", max_drop=0.01, max_relative_drop=0.02, min_value=0.7, tolerance=0.005),
        result("top1", 0.75, 0.75),
        MetricValues(int8=0.75),
    )
    assert row.allowed == "drop <= 0.01; drop <= 2.00% of FP32; INT8 >= 0.7; reference ± 0.005"


def test_accuracy_allowed_text_without_bounds():
    row = decide_accuracy(acc(metric="top1"), result("top1", 0.75, 0.75), None)
    assert row.allowed == "reference ± 0.001"


def test_accuracy_sqnr_without_fp32():
    gate = acc(metric="sqnr", min_value=20, tolerance=1)
    row = decide_accuracy(gate, result("sqnr", None, 25.0), MetricValues(int8=24.5))
    assert row.status == PASS
    assert (row.fp32, row.drop) == (None, None)
    assert row.difference == 0.5


def test_accuracy_one_sample_in_1000_at_default_tolerance_passes():
    row = decide_accuracy(acc(metric="top1"), result("top1", 0.95, 899 / 1000), MetricValues(int8=900 / 1000))
    assert row.status == PASS, row.reasons


@pytest.mark.parametrize(
    "gate_kwargs, reference",
    [
        pytest.param({"min_value": 0.99}, None, id="min_value-no-reference"),
        pytest.param({"max_drop": 0.01}, MetricValues(int8=0.999), id="max_drop-with-reference"),
        pytest.param({}, MetricValues(int8=0.999), id="reference-only"),
    ],
)
def test_accuracy_nan_int8_value_fails(gate_kwargs, reference):
    row = decide_accuracy(acc(metric="cosine", **gate_kwargs), result("cosine", 1.0, math.nan), reference)
    assert row.status == FAIL


# ---------------------------------------------------------------------------------------------
# decide_speedup: ratios 2, 3, 4 -> median 3


def measurement(baseline: str = "eager") -> SpeedupMeasurement:
    return SpeedupMeasurement(baseline, [2.0, 3.0, 4.0], [1.0, 1.0, 1.0])


def test_speedup_no_reference_is_new():
    row = decide_speedup(speed(min=2), measurement(), None, "m1")
    assert row.status == NEW
    assert (row.gate, row.name, row.int8) == ("speedup", "speedup vs eager", 3.0)
    assert row.allowed == ">= 2x; reference -10%"


def test_speedup_below_min_fails():
    row = decide_speedup(speed(min=4), measurement(), None, "m1")
    assert row.status == FAIL
    assert row.reasons == ["speedup 3x < min 4x"]
    assert row.threshold_failed


def test_speedup_below_min_fails_with_matching_reference():
    row = decide_speedup(speed(min=4), measurement(), SpeedupValues(3.0, "eager", "m1"), "m1")
    assert row.status == FAIL
    assert row.threshold_failed


def test_speedup_exactly_at_min_is_not_a_failure():
    assert decide_speedup(speed(min=3), measurement(), None, "m1").status == NEW


def test_speedup_same_machine_within_tolerance_passes():
    row = decide_speedup(speed(min=2), measurement(), SpeedupValues(3.2, "eager", "m1"), "m1")
    assert row.status == PASS
    assert row.reasons == []
    assert row.reference == 3.2
    assert row.difference == pytest.approx(-0.2)


def test_speedup_same_machine_regression_fails():
    row = decide_speedup(speed(min=2), measurement(), SpeedupValues(4.0, "eager", "m1"), "m1")
    assert row.status == FAIL
    assert len(row.reasons) == 1
    assert row.reasons[0].startswith("reference:")
    assert "25.0% below the reference 4x" in row.reasons[0]
    assert not row.threshold_failed


def test_speedup_regression_with_wider_tolerance_passes():
    row = decide_speedup(speed(min=2, tolerance=0.3), measurement(), SpeedupValues(4.0, "eager", "m1"), "m1")
    assert row.status == PASS


def test_speedup_improvement_is_improved():
    row = decide_speedup(speed(min=2), measurement(), SpeedupValues(2.5, "eager", "m1"), "m1")
    assert row.status == IMPROVED
    assert "20.0% above the reference" in row.reasons[0]
    assert not row.threshold_failed


def test_speedup_other_machine_not_compared():
    row = decide_speedup(speed(min=2), measurement(), SpeedupValues(10.0, "eager", "m2"), "m1")
    assert row.status == NOT_COMPARED
    assert "another machine (m2): not compared" in row.allowed
    assert row.reasons == []
    assert row.reference == 10.0


def test_speedup_other_machine_still_applies_min():
    row = decide_speedup(speed(min=4), measurement(), SpeedupValues(3.0, "eager", "m2"), "m1")
    assert row.status == FAIL
    assert row.threshold_failed


def test_speedup_other_baseline_not_compared():
    row = decide_speedup(speed(min=2), measurement(), SpeedupValues(10.0, "ov_fp32", "m1"), "m1")
    assert row.status == NOT_COMPARED
    assert "another baseline" in row.allowed


def test_speedup_row_name_follows_gate_baseline():
    row = decide_speedup(speed(min=1, baseline="ov_fp32"), measurement("ov_fp32"), None, "m1")
    assert row.name == "speedup vs ov_fp32"


def test_gate_row_threshold_failed_needs_fail_status():
    row = GateRow("accuracy", "top1", 0.5, status=IMPROVED, reasons=["INT8 0.5 is better"])
    assert not row.threshold_failed
    row.status = FAIL
    assert row.threshold_failed
    row.reasons = ["reference: worse"]
    assert not row.threshold_failed


# ---------------------------------------------------------------------------------------------
# run_gates with a real ReferenceStore

NODE = "tests/test_x.py::test_a"
X = torch.tensor([[1.0, 0.8, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.9, 1.0, 0.0]])
Y = torch.tensor([0, 1, 2, 0])
FP32_TOP1, INT8_TOP1 = 0.75, 0.5  # INT8 halves class 0's logit


def fp32_linear() -> torch.nn.Module:
    model = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    return model.eval()


INT8_WEIGHT = torch.diag(torch.tensor([0.5, 1.0, 1.0]))


def int8_callable(x: torch.Tensor) -> torch.Tensor:
    return x @ INT8_WEIGHT.T


@pytest.fixture
def store(tmp_path):
    return ReferenceStore(tmp_path, {"torch": "2.14.1"})


def gates(plan: GatePlan, store: ReferenceStore, mode: UpdateMode = UpdateMode(), **overrides):
    kwargs = dict(
        node_id=NODE,
        model_name="linear",
        config=QuantizeConfig(),
        fp32_model=fp32_linear(),
        int8_model=int8_callable,
        eval_dataset=[(X[:2], Y[:2]), (X[2:], Y[2:])],
        example_inputs=(X[:1],),
        baseline_model=fp32_linear(),
        store=store,
        machine="m1",
        machine_details={},
        mode=mode,
    )
    kwargs.update(overrides)
    return run_gates(plan, **kwargs)


TOP1 = GatePlan(accuracy=(acc(metric="top1", max_drop=0.5, tolerance=0.125),))


def write_reference(tmp_path, int8: float, xfail_reason: str | None = None) -> None:
    entry = {"metrics": {"top1": {"fp32": FP32_TOP1, "int8": int8, "drop": FP32_TOP1 - int8}}}
    if xfail_reason is not None:
        entry["xfail_reason"] = xfail_reason
    path = tmp_path / "tests" / "test_x.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"schema_version": 1, "tests": {"test_a": entry}}))


def test_run_gates_missing_reference_fails_and_writes_nothing(store, tmp_path):
    outcome = gates(TOP1, store)
    assert outcome.verdict == "failed"
    assert [r.status for r in outcome.rows] == [NEW]
    assert (outcome.rows[0].fp32, outcome.rows[0].int8) == (FP32_TOP1, INT8_TOP1)
    assert not outcome.updated
    assert store.pending == {}
    assert not (tmp_path / "tests" / "test_x.yaml").exists()
    assert outcome.reference_file == str(tmp_path / "tests" / "test_x.yaml")


def test_run_gates_update_refs_stages_and_still_fails_then_passes(store, tmp_path):
    outcome = gates(TOP1, store, UpdateMode(update_refs=True))
    assert outcome.verdict == "failed"
    assert outcome.updated
    assert store.pending == {tmp_path / "tests" / "test_x.yaml": ["test_a"]}
    assert store.write_pending() == [tmp_path / "tests" / "test_x.yaml"]

    written = yaml.safe_load((tmp_path / "tests" / "test_x.yaml").read_text())
    assert written["schema_version"] == 1
    assert written["tests"]["test_a"]["metrics"]["top1"] == {"fp32": 0.75, "int8": 0.5, "drop": 0.25}
    assert written["tests"]["test_a"]["environment"]["machine"] == {"id": "m1"}

    again = gates(TOP1, store)
    assert again.verdict == "passed"
    assert [r.status for r in again.rows] == [PASS]
    assert again.rows[0].reference == INT8_TOP1
    assert not again.updated
    # and a fresh store reads the same
    fresh = gates(TOP1, ReferenceStore(tmp_path, {"torch": "2.14.1"}))
    assert fresh.verdict == "passed"


def test_run_gates_regen_all_passes_and_stages(store, tmp_path):
    outcome = gates(TOP1, store, UpdateMode(regen_all=True))
    assert outcome.verdict == "passed"
    assert outcome.updated
    assert [r.status for r in outcome.rows] == ["regenerated"]
    assert store.pending == {tmp_path / "tests" / "test_x.yaml": ["test_a"]}


def test_run_gates_regen_all_still_fails_a_code_threshold(store):
    plan = GatePlan(accuracy=(acc(metric="top1", max_drop=0.125),))
    outcome = gates(plan, store, UpdateMode(regen_all=True))
    assert outcome.verdict == "failed"
    assert [r.status for r in outcome.rows] == [FAIL]
    assert outcome.updated


def test_run_gates_regen_all_rewrites_a_passing_reference(store, tmp_path):
    write_reference(tmp_path, INT8_TOP1)
    outcome = gates(TOP1, store, UpdateMode(regen_all=True))
    assert outcome.verdict == "passed"
    assert outcome.updated
    assert store.pending == {tmp_path / "tests" / "test_x.yaml": ["test_a"]}


def test_run_gates_passing_reference_is_not_rewritten_by_update_refs(store, tmp_path):
    write_reference(tmp_path, INT8_TOP1)
    outcome = gates(TOP1, store, UpdateMode(update_refs=True))
    assert outcome.verdict == "passed"
    assert not outcome.updated
    assert store.pending == {}


def test_run_gates_reference_better_than_obtained_fails(store, tmp_path):
    write_reference(tmp_path, 0.75)  # obtained 0.5: worse by 0.25 > tolerance 0.125
    outcome = gates(TOP1, store)
    assert outcome.verdict == "failed"
    row = outcome.rows[0]
    assert row.status == FAIL
    assert row.reasons[0].startswith("reference:")
    assert row.difference == -0.25
    assert store.pending == {}


def test_run_gates_reference_with_xfail_reason_xfails(store, tmp_path):
    write_reference(tmp_path, 0.75, xfail_reason="known regression in openvino 2026.4")
    outcome = gates(TOP1, store)
    assert outcome.verdict == "xfailed"
    assert outcome.xfail_reason == "known regression in openvino 2026.4"


def test_run_gates_xfail_reason_but_passing_is_passed(store, tmp_path):
    write_reference(tmp_path, INT8_TOP1, xfail_reason="known regression")
    outcome = gates(TOP1, store)
    assert outcome.verdict == "passed"


def test_run_gates_xfail_reason_with_update_refs_fails_and_keeps_reason(store, tmp_path):
    write_reference(tmp_path, 0.75, xfail_reason="known regression")
    outcome = gates(TOP1, store, UpdateMode(update_refs=True))
    assert outcome.verdict == "failed"  # an update was staged: it is not a known regression any more
    assert outcome.updated
    store.write_pending()
    written = yaml.safe_load((tmp_path / "tests" / "test_x.yaml").read_text())
    assert written["tests"]["test_a"]["xfail_reason"] == "known regression"
    assert written["tests"]["test_a"]["metrics"]["top1"]["int8"] == 0.5


def test_run_gates_staged_reference_by_hand(store):
    store.stage(NODE, TestReference(key="test_a", metrics={"top1": MetricValues(0.75, 0.75, 0.0)}, xfail_reason="x"))
    store.write_pending()
    assert gates(TOP1, store).verdict == "xfailed"


def test_run_gates_improvement_passes_with_a_note(store, tmp_path):
    write_reference(tmp_path, 0.25)  # obtained 0.5: better by 0.25 > tolerance 0.125
    outcome = gates(TOP1, store)
    assert outcome.verdict == "passed"
    assert [r.status for r in outcome.rows] == [IMPROVED]
    assert len(outcome.notes) == 1 and "improved beyond tolerance" in outcome.notes[0]
    assert store.pending == {}


def test_run_gates_improvement_fails_when_strict(store, tmp_path):
    write_reference(tmp_path, 0.25)
    outcome = gates(TOP1, store, UpdateMode(strict=True))
    assert outcome.verdict == "failed"
    assert outcome.notes == []
    assert not outcome.updated


def test_run_gates_improvement_strict_with_update_refs_stages(store, tmp_path):
    write_reference(tmp_path, 0.25)
    outcome = gates(TOP1, store, UpdateMode(update_refs=True, strict=True))
    assert outcome.verdict == "failed"
    assert outcome.updated
    assert store.pending == {tmp_path / "tests" / "test_x.yaml": ["test_a"]}


def test_run_gates_other_test_key_in_file_is_no_reference(store, tmp_path):
    write_reference(tmp_path, INT8_TOP1)
    outcome = gates(TOP1, store, node_id="tests/test_x.py::test_b")
    assert outcome.verdict == "failed"
    assert [r.status for r in outcome.rows] == [NEW]


def test_run_gates_evaluates_in_example_input_batches(store):
    batches: list[int] = []

    def int8(x):
        batches.append(x.shape[0])
        return int8_callable(x)

    gates(TOP1, store, int8_model=int8, example_inputs=(X[:2],))
    assert batches == [2, 2]
    batches.clear()
    gates(TOP1, store, int8_model=int8, example_inputs=(X[:1],))
    assert batches == [1, 1, 1, 1]


def test_run_gates_several_metrics(store, tmp_path):
    plan = GatePlan(accuracy=(acc(metric="top1", max_drop=0.5), acc(metric="max_abs_error", max_drop=1.0)))
    outcome = gates(plan, store, UpdateMode(update_refs=True))
    assert [r.name for r in outcome.rows] == ["top1", "max_abs_error"]
    store.write_pending()
    written = yaml.safe_load((tmp_path / "tests" / "test_x.yaml").read_text())
    assert set(written["tests"]["test_a"]["metrics"]) == {"top1", "max_abs_error"}
    assert written["tests"]["test_a"]["metrics"]["max_abs_error"] == {"fp32": 0.0, "int8": 0.5, "drop": 0.5}
    assert gates(plan, store).verdict == "passed"


def test_run_gates_speedup_row_is_recorded_with_machine(store, tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "SETTLE_SECONDS", 0.0)  # one untimed call per switch: exact counts
    calls = {"baseline": 0, "int8": 0}

    def baseline(x):
        calls["baseline"] += 1
        return x

    def int8(x):
        calls["int8"] += 1
        return int8_callable(x)

    # recording a reference measures until narrow or max_rounds: capped at 3 pairs here
    plan = GatePlan(speedup=speed(min=1e-9, rounds=3, warmup=1, max_rounds=3))
    outcome = gates(plan, store, UpdateMode(regen_all=True), baseline_model=baseline, int8_model=int8)
    # warm-up, one settling baseline call, 3 blocks of A (B) B B (A) A; no evaluation calls
    assert calls == {"baseline": 11, "int8": 10}
    assert [r.gate for r in outcome.rows] == ["speedup"]
    assert outcome.verdict == "passed"
    store.write_pending()
    written = yaml.safe_load((tmp_path / "tests" / "test_x.yaml").read_text())
    speedup = written["tests"]["test_a"]["speedup"]
    assert (speedup["baseline"], speedup["machine"]) == ("eager", "m1")
    assert speedup["value"] > 0
    # another machine: the stored speedup is not compared
    other = gates(plan, store, machine="m2", baseline_model=baseline, int8_model=int8)
    assert [r.status for r in other.rows] == [NOT_COMPARED]
    assert other.verdict == "passed"


def test_run_gates_outcome_to_dict(store):
    outcome = gates(TOP1, store)
    data = outcome.to_dict()
    assert data["node_id"] == NODE
    assert data["verdict"] == "failed"
    assert data["machine"] == "m1"
    assert data["rows"][0]["status"] == NEW
    assert data["rows"][0]["int8"] == 0.5


# ---------------------------------------------------------------------------------------------
# decisions on intervals (synthetic timings)


def _measurement_with_interval(median: float, low: float, high: float) -> SpeedupMeasurement:
    from pytest_ovquant.measure.statistics import Interval

    return SpeedupMeasurement(
        "eager",
        [median] * 20,
        [1.0] * 20,
        interval=Interval(estimate=median, low=low, high=high, confidence=0.95, n=20, method="percentile"),
        stopped_because="budget",
        budget_exhausted=True,
    )


@pytest.mark.parametrize(
    ("median", "low", "high", "status", "basis"),
    [
        (2.0, 1.9, 2.1, PASS, None),  # interval clears min=1.5
        (1.2, 1.1, 1.3, FAIL, None),  # interval below min
        (1.55, 1.4, 1.7, PASS, "decided on the median"),  # straddles: median above
        (1.45, 1.3, 1.6, FAIL, "decided on the median"),  # straddles: median below
    ],
)
def test_speed_gate_decides_on_the_interval_and_says_when_it_used_the_median(median, low, high, status, basis):
    row = decide_speedup(speed(min=1.5), _measurement_with_interval(median, low, high), None, "m1")
    assert row.status == (NEW if status == PASS else FAIL)
    assert row.interval == [low, high]
    notes = " ".join(row.notes)
    if basis:
        assert basis in notes and "straddles 1.50" in notes
    else:
        assert "median" not in notes.split("stopped")[0]


def test_speed_reference_comparison_uses_the_interval():
    reference = SpeedupValues(value=2.0, baseline="eager", machine="m1")
    # floor = 1.8 with tolerance 10%: [1.7, 1.95] straddles, median 1.85 >= floor -> passes with a note
    row = decide_speedup(speed(min=1.0), _measurement_with_interval(1.85, 1.7, 1.95), reference, "m1")
    assert row.status == PASS and any("straddles 1.80" in n for n in row.notes)
    # clearly below the floor
    row = decide_speedup(speed(min=1.0), _measurement_with_interval(1.5, 1.4, 1.6), reference, "m1")
    assert row.status == FAIL and row.reasons[0].startswith("reference:")
    # improved only when the whole interval is above the ceiling (2.2)
    assert decide_speedup(speed(min=1.0), _measurement_with_interval(2.5, 2.3, 2.7), reference, "m1").status == IMPROVED
    assert decide_speedup(speed(min=1.0), _measurement_with_interval(2.3, 2.1, 2.5), reference, "m1").status == PASS


def test_accuracy_interval_decision_on_max_drop():
    metric = resolve_metric("top1", "test")
    n = 400
    fp32 = torch.ones(n, dtype=torch.float64)
    int8 = fp32.clone()
    int8[:8] = 0  # drop 0.02 with a paired interval of about [0.008, 0.035]
    result = MetricResult(metric, fp32=1.0, int8=float(int8.mean()), fp32_samples=fp32, int8_samples=int8)
    straddling = acc(metric="top1", max_drop=0.025, decide_on="interval")
    row = decide_accuracy(straddling, result, None)
    assert row.interval is not None and row.interval[0] < 0.02 < row.interval[1]
    assert row.status == NEW and any("straddles max_drop" in n for n in row.notes)
    above = acc(metric="top1", max_drop=0.005, decide_on="interval")
    assert decide_accuracy(above, result, None).status == FAIL
    assert "lies above max_drop" in decide_accuracy(above, result, None).reasons[0]
