"""Lowering verification: it reports what OpenVINO runs, and flags the known ways it goes wrong.

The breakages of STACK.md are provoked on purpose on the installed stack:
- torch >= 2.13: OpenVINO's own backend with aot_autograd leaves weights as runtime inputs (bf16);
  without options it crashes in dynamo guard building.
- torch <= 2.12: OpenVINO's own backend without options silently falls back to inductor.
"""

from __future__ import annotations

import sys

import pytest
import torch
from small_models import SmallCNN, seeded

from pytest_ovquant import compat
from pytest_ovquant.config import make_config
from pytest_ovquant.errors import LoweringError
from pytest_ovquant.flow import export_model, lower, quantize
from pytest_ovquant.verify import IRSummary, LoweringCheckFailed, LoweringReport, RuntimeLayer, check

NEW_TORCH = compat.needs_own_compile_backend()


@pytest.fixture(scope="module")
def quantized_cnn(small_cnn, cnn_inputs, cnn_calibration):
    return quantize(export_model(small_cnn, cnn_inputs), make_config(), cnn_calibration)


def test_default_lowering_runs_int8_with_the_backend_the_stack_needs(quantized_cnn, cnn_inputs):
    report = lower(quantized_cnn, cnn_inputs, make_config(), quantized=True).report
    assert report.backend == ("ovquant_openvino" if NEW_TORCH else "openvino")
    assert report.ok, report.describe()
    assert report.runtime_inputs == report.model_inputs == 1
    assert report.fake_quantize > 0
    assert {layer.precision for layer in report.runtime_layers} <= {"u8", "i8"}


def test_openvino_backend_with_aot_autograd_is_flagged_where_weights_become_inputs(quantized_cnn, cnn_inputs):
    config = make_config(("test", {"compile_backend": "openvino"}))
    report = lower(quantized_cnn, cnn_inputs, config, quantized=True).report
    assert report.backend == "openvino"
    if NEW_TORCH:  # the silent break of torch >= 2.13
        assert not report.ok
        assert report.weight_inputs == 3
        assert report.int8_layers == 0
        assert report.runtime_inputs > report.model_inputs
        (problem,) = report.problems()
        assert problem.startswith("0 of 3 quantized layers run in int8")
        assert "weights are runtime inputs" in problem
        assert "lowering='export'" in problem and "compile_backend='auto'" in problem
        with pytest.raises(LoweringCheckFailed, match="weights are runtime inputs"):
            check(report)
    else:  # on the legacy stack OpenVINO's backend freezes the weights itself
        assert report.ok, report.describe()
        assert report.int8_layers == 3


def test_openvino_backend_without_options_is_caught(quantized_cnn, cnn_inputs):
    """Without aot_autograd OpenVINO's backend never yields an INT8 IR; either way we must say so.

    torch >= 2.13 crashes in dynamo guard building (a loud LoweringError) - unless an earlier
    aot_autograd compile in the process left options in OpenVINO's module-global
    ``openvino_options``, in which case it falls back to inductor silently. torch <= 2.12 falls
    back to inductor silently.
    """
    config = make_config(("test", {"compile_backend": "openvino", "compile_options": {}}))
    try:
        report = lower(quantized_cnn, cnn_inputs, config, quantized=True).report
    except LoweringError as error:
        assert NEW_TORCH, "only torch >= 2.13 crashes here"
        assert "aot_autograd" in str(error) and "lowering='export'" in str(error)
        return
    assert report.n_irs == 0
    assert not report.ok
    assert "no OpenVINO IR was built" in report.problems()[0]


def test_a_lowering_that_ends_in_inductor_is_flagged(monkeypatch, cnn_inputs):
    """What OpenVINO's backend does when it swallows an error: the graph runs in inductor instead.

    The torch.compile lowering is pointed at inductor itself, so the outcome is exactly that of a
    silent fallback: a module that runs, and no OpenVINO IR.
    """
    # (``pytest_ovquant.flow.lower`` the attribute is the function; the module is in sys.modules)
    lower_module = sys.modules["pytest_ovquant.flow.lower"]
    monkeypatch.setattr(lower_module, "resolve_backend", lambda config: "inductor")
    model = export_model(seeded(SmallCNN(), seed=5), cnn_inputs)
    lowered = lower(model, cnn_inputs, make_config(("test", {"compile_options": {}})), quantized=False)
    report = lowered.report
    assert report.backend == "inductor"
    assert report.n_irs == 0
    assert not report.ok
    assert "fell back" in report.problems()[0]
    with torch.no_grad():  # it still runs, which is exactly why it must be flagged
        torch.testing.assert_close(lowered(*cnn_inputs), model(*cnn_inputs), atol=1e-4, rtol=1e-4)


# -- verdict logic on synthetic reports ----------------------------------------------------------
def _ir(precisions: list[str], *, fake_quantize: int = 10, weight_inputs: int = 0, n_inputs: int = 1) -> IRSummary:
    layers = [RuntimeLayer(f"conv{i}", "Convolution", p) for i, p in enumerate(precisions)]
    return IRSummary(
        n_inputs=n_inputs,
        fake_quantize=fake_quantize,
        compute_ops=len(precisions),
        quantized_compute_ops=len(precisions),
        weight_inputs=weight_inputs,
        runtime_layers=layers,
        inference_precision="bf16",
    )


def test_partial_int8_fails_by_default_and_passes_with_a_lower_fraction():
    irs = [_ir(["u8", "u8", "bf16", "bf16"])]
    strict = LoweringReport("export", None, quantized=True, model_inputs=1, irs=irs)
    assert not strict.ok
    assert strict.problems()[0].startswith("2 of 4 quantized layers run in int8 (2 Convolution bf16, 2 Convolution u8)")
    assert "OpenVINO chose another precision" in strict.problems()[0]
    relaxed = LoweringReport("export", None, quantized=True, model_inputs=1, irs=irs, min_int8_fraction=0.5)
    assert relaxed.ok


def test_an_ir_without_fakequantize_is_not_a_quantized_model():
    report = LoweringReport("export", None, quantized=True, model_inputs=1, irs=[_ir(["bf16"], fake_quantize=0)])
    assert "no FakeQuantize" in report.problems()[0]


def test_fp32_reports_only_need_an_ir():
    fp32 = LoweringReport("torch.compile", "ovquant_openvino", quantized=False, model_inputs=1, irs=[_ir(["bf16"])])
    assert fp32.ok
    assert not LoweringReport("torch.compile", "openvino", quantized=False, model_inputs=1).ok


def test_graph_breaks_are_reported_but_not_a_failure():
    report = LoweringReport("torch.compile", "openvino", quantized=True, model_inputs=1, irs=[_ir(["u8"]), _ir(["i8"])])
    assert report.ok
    assert "2 IRs means graph breaks" in report.describe()


def test_report_serialises_to_plain_data():
    report = LoweringReport("export", None, quantized=True, model_inputs=1, irs=[_ir(["u8", "bf16"])])
    data = report.to_dict()
    assert data["int8_layers"] == 1 and data["quantized_layers"] == 2
    assert data["precisions"] == {"Convolution": {"bf16": 1, "u8": 1}}
    assert data["problems"] == report.problems()
