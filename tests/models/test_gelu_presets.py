"""What ``preset="mixed"`` and ``ignored_scope`` change, on a trained GELU MLP (tests/models/digits_gelu.py).

Three quantizations of the same model, one test each, each gated on held-out top-1 and on SQNR to
FP32 against its reference:

- the default preset (``None``: OpenVINOQuantizer's ``performance``): weights and activations
  quantized *symmetrically*: an activation's range is [-m, m] whatever its real minimum;
- ``preset="mixed"``: activations quantized *asymmetrically*: the range fits the data, so the input
  pixels ([0, 1]) get [0, 1] and GELU's outputs (>= -0.17) get about [-0.17, max]: half the
  quantization step of the symmetric range, the same int8 kernels. It changes the quantization
  parameters, not which layers run int8 nor their runtime precision (the lowering reports are equal);
- ``preset="mixed"`` with ``ignored_scope={"names": ["linear_2"]}``: the classifier head stays in
  floating point: one fewer quantized layer, one fewer int8 layer in the lowering report.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pytest_ovquant.config import IgnoredScopeSpec

pytestmark = pytest.mark.parametrize("zoo_name", ["digits_gelu_mlp"], indirect=True)

# FX node names in the exported graph (print ovq_exported_model.graph to find them); the same on
# torch 2.9 and 2.14. linear_2 is the head (test_head_node_name checks it).
HEAD = "linear_2"
# The activations OpenVINOQuantizer quantizes: the model input and the two GELU outputs.
ACTIVATIONS = ("x", "gelu", "gelu_1")
GELU_MIN = -0.17  # min over x of x * Phi(x) is -0.1700 (at x = -0.75)

# tolerance 0.005: one held-out sample is 0.0022 of top-1; allow two to flip between CPU kernels
top1 = pytest.mark.ovq_accuracy(metric="top1", max_drop=0.01, tolerance=0.005)
# SQNR in dB; steady to ~0.01 dB between runs, and a preset change moves it by several dB
sqnr = pytest.mark.ovq_accuracy(metric="sqnr", min_value=25.0, tolerance=0.5)


def activation_ranges(graph: torch.fx.GraphModule) -> dict[str, tuple[float, float, float]]:
    """{quantized node: (lowest, highest representable value, step)} of each per-tensor quantizer."""
    ranges = {}
    for node in graph.graph.nodes:
        target = str(node.target)
        if node.op != "call_function" or "quantize_per_tensor" not in target or "dequantize" in target:
            continue
        source, scale, zero_point, qmin, qmax = node.args[:5]
        ranges[source.name] = (scale * (qmin - zero_point), scale * (qmax - zero_point), scale)
    return ranges


def quantized_inputs(graph: torch.fx.GraphModule, name: str) -> bool:
    """Whether the input of node ``name`` comes through a dequantize (i.e. is quantized)."""
    node = next(n for n in graph.graph.nodes if n.name == name)
    return "dequantize" in str(node.args[0].target)


def test_head_node_name(zoo_name, ovq_exported_model):
    """The ignored_scope below names the head by its FX node name: make sure it is the head."""
    node = next(n for n in ovq_exported_model.graph.nodes if n.name == HEAD)
    assert node.args[1].target == "head.weight"


@top1
@sqnr
def test_default_preset(zoo_name, ovq_quantized_model, ovq_lowering_report):
    ranges = activation_ranges(ovq_quantized_model)
    assert sorted(ranges) == sorted(ACTIVATIONS)
    for name, (low, high, step) in ranges.items():
        # symmetric: [-m, m] to within one step, even for the input pixels that are never negative
        assert abs(low + high) <= step * 1.01, (name, low, high)
    report = ovq_lowering_report
    assert report.quantized_layers == report.int8_layers == 3, report.describe()


@pytest.mark.ovq_quantize(preset="mixed")
@top1
@sqnr
def test_mixed_preset(zoo_name, ovq_config, ovq_artifacts, ovq_quantized_model, ovq_lowering_report):
    ranges = activation_ranges(ovq_quantized_model)
    default_config = dataclasses.replace(ovq_config, preset=None)
    default_ranges = activation_ranges(ovq_artifacts.quantized(default_config))
    assert sorted(ranges) == sorted(ACTIVATIONS)
    # asymmetric ranges fit the data: the pixels get [0, 1], each GELU output about [-0.17, max]
    assert ranges["x"][0] == pytest.approx(0.0, abs=1e-6)
    for name in ("gelu", "gelu_1"):
        low, high, _ = ranges[name]
        assert GELU_MIN - 0.01 <= low <= GELU_MIN / 2, (name, low)
        assert high > 4 * -low  # far from symmetric
    # ... hence a finer step than the symmetric range of the same activation (about half)
    for name in ACTIVATIONS:
        assert ranges[name][2] < 0.6 * default_ranges[name][2], (name, ranges[name], default_ranges[name])
    # the same layers run int8, with the same runtime precisions: only the ranges differ
    default_report = ovq_artifacts.lowered(default_config, quantized=True).report
    report = ovq_lowering_report
    assert report.quantized_layers == report.int8_layers == default_report.int8_layers == 3, report.describe()
    assert report.precision_counts() == default_report.precision_counts()


@pytest.mark.ovq_quantize(preset="mixed", ignored_scope={"names": [HEAD]})
@top1
@sqnr
def test_mixed_preset_head_in_float(zoo_name, ovq_config, ovq_artifacts, ovq_quantized_model, ovq_lowering_report):
    # nothing quantizes the head's input any more (its weight stays float too)
    assert not quantized_inputs(ovq_quantized_model, HEAD)
    assert sorted(activation_ranges(ovq_quantized_model)) == ["gelu", "x"]
    without_ignored = dataclasses.replace(ovq_config, ignored_scope=IgnoredScopeSpec())
    full = ovq_artifacts.lowered(without_ignored, quantized=True).report
    report = ovq_lowering_report
    # one fewer quantized layer, one fewer int8 layer; the head still runs, in floating point
    assert report.quantized_layers == full.quantized_layers - 1 == 2, report.describe()
    assert report.int8_layers == full.int8_layers - 1 == 2, report.describe()
    layers = report.precision_counts()["FullyConnected"]
    assert sum(layers.values()) == 3
    float_layers = {precision: n for precision, n in layers.items() if precision not in ("u8", "i8")}
    # bf16 on CPUs with AVX512-BF16/AMX (OpenVINO's default hint there), f32 elsewhere
    assert sum(float_layers.values()) == 1 and set(float_layers) <= {"bf16", "f32"}, layers
