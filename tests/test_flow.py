"""Unit tests of each flow step (export, quantize, lower) on small real models."""

from __future__ import annotations

import nncf
import pytest
import torch
from small_models import DataDependentBranch, SmallMLP, seeded

from pytest_ovquant.config import make_config
from pytest_ovquant.errors import ExportError, QuantizeError
from pytest_ovquant.flow import export_model, lower, quantize
from pytest_ovquant.flow.lower import LoweredModel

QUANTIZE_OPS = ("quantize_per_tensor", "quantize_per_channel")


def _quantize_nodes(graph_module: torch.fx.GraphModule) -> int:
    return sum(
        1 for n in graph_module.graph.nodes if n.op == "call_function" and any(q in str(n.target) for q in QUANTIZE_OPS)
    )


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


@pytest.fixture(scope="module")
def exported_cnn(small_cnn, cnn_inputs):
    return export_model(small_cnn, cnn_inputs, name="small_cnn")


@pytest.fixture(scope="module")
def quantized_cnn(exported_cnn, cnn_calibration):
    return quantize(exported_cnn, make_config(), cnn_calibration, name="small_cnn")


# -- export ------------------------------------------------------------------------------------
def test_export_returns_graph_module_equal_to_eager(small_cnn, cnn_inputs, exported_cnn):
    assert isinstance(exported_cnn, torch.fx.GraphModule)
    with torch.no_grad():
        torch.testing.assert_close(exported_cnn(*cnn_inputs), small_cnn(*cnn_inputs))


def test_export_dynamic_batch_accepts_other_batch_sizes(small_cnn):
    example = (torch.randn(2, 3, 32, 32),)
    static = export_model(small_cnn, example)
    dynamic = export_model(small_cnn, example, dynamic_batch=True)
    batch5 = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert dynamic(batch5).shape == (5, 10)
        with pytest.raises(Exception):
            static(batch5)


def test_export_failure_names_the_model_and_torchs_reason():
    with pytest.raises(ExportError) as info:
        export_model(DataDependentBranch(), (torch.randn(2, 3),), name="branchy")
    message = str(info.value)
    assert "branchy" in message
    assert "data-dependent" in message  # torch's own reason is kept
    assert "torch.cond" in message  # and the way out


def test_export_rejects_non_tuple_inputs(small_cnn):
    with pytest.raises(ExportError, match="tuple"):
        export_model(small_cnn, torch.randn(1, 3, 32, 32), name="small_cnn")


# -- quantize ----------------------------------------------------------------------------------
def test_prepare_convert_inserts_quantizers_and_keeps_outputs_close(small_cnn, cnn_inputs, quantized_cnn):
    assert _quantize_nodes(quantized_cnn) >= 4  # 3 weights + activations
    with torch.no_grad():
        assert _cosine(quantized_cnn(*cnn_inputs), small_cnn(*cnn_inputs)) > 0.98


def test_quantize_leaves_the_exported_model_untouched(exported_cnn, quantized_cnn, cnn_calibration):
    assert _quantize_nodes(exported_cnn) == 0
    # the shared exported model can be quantized again with another config
    again = quantize(exported_cnn, make_config(("test", {"preset": "mixed"})), cnn_calibration)
    assert _quantize_nodes(again) > 0


def test_quantize_pt2e_with_smooth_quant_on_a_transformer_block():
    model = seeded(SmallMLP())
    example = (torch.randn(4, 32),)
    exported = export_model(model, example)
    generator = torch.Generator().manual_seed(3)
    calibration = [(torch.randn(4, 32, generator=generator),) for _ in range(8)]
    config = make_config(("test", {"model_type": "transformer", "smooth_quant": True, "subset_size": 8}))
    assert config.method == "quantize_pt2e"
    quantized = quantize(exported, config, calibration)
    assert _quantize_nodes(quantized) > 0
    with torch.no_grad():
        assert _cosine(quantized(*example), model(*example)) > 0.98


def test_quantize_accepts_an_nncf_dataset(exported_cnn, cnn_calibration):
    dataset = nncf.Dataset([(x, 0) for (x,) in cnn_calibration], lambda item: item[0])
    quantized = quantize(exported_cnn, make_config(), dataset)
    assert _quantize_nodes(quantized) > 0


def test_ignored_scope_keeps_the_named_layer_in_float(exported_cnn, cnn_calibration):
    full = quantize(exported_cnn, make_config(), cnn_calibration)
    linear_nodes = [n.name for n in exported_cnn.graph.nodes if "linear" in str(n.target)]
    assert linear_nodes
    partial = quantize(
        exported_cnn, make_config(("test", {"ignored_scope": {"names": linear_nodes}})), cnn_calibration
    )
    assert _quantize_nodes(partial) < _quantize_nodes(full)


def test_empty_calibration_dataset_is_a_clear_error(exported_cnn):
    with pytest.raises(QuantizeError, match="calibration dataset is empty"):
        quantize(exported_cnn, make_config(), [])


def test_calibration_items_of_the_wrong_type_are_a_clear_error(exported_cnn):
    with pytest.raises(QuantizeError, match="calibration item of type str"):
        quantize(exported_cnn, make_config(), ["not a tensor"])


# -- lower -------------------------------------------------------------------------------------
@pytest.mark.parametrize("lowering", ["torch.compile", "export"])
def test_lowered_int8_runs_int8_and_matches_the_quantized_torch_model(quantized_cnn, cnn_inputs, lowering):
    lowered = lower(quantized_cnn, cnn_inputs, make_config(("test", {"lowering": lowering})), quantized=True)
    assert isinstance(lowered, LoweredModel)
    report = lowered.report
    assert report.ok, report.describe()
    assert report.n_irs == 1
    assert report.quantized_layers == 3  # conv1, conv2, fc
    assert report.int8_layers == 3
    assert report.weight_inputs == 0
    with torch.no_grad():
        expected = quantized_cnn(*cnn_inputs)
    got = lowered(*cnn_inputs)
    assert got.shape == expected.shape
    assert _cosine(got, expected) > 0.99


@pytest.mark.parametrize("lowering", ["torch.compile", "export"])
def test_lowered_fp32_runs_floating_point(exported_cnn, cnn_inputs, lowering):
    config = make_config(("test", {"lowering": lowering, "fp32_inference_precision": "f32"}))
    lowered = lower(exported_cnn, cnn_inputs, config, quantized=False)
    report = lowered.report
    assert report.ok
    assert report.fake_quantize == 0
    assert report.int8_layers == 0
    assert report.inference_precision == "f32"
    with torch.no_grad():
        torch.testing.assert_close(lowered(*cnn_inputs), exported_cnn(*cnn_inputs), atol=1e-4, rtol=1e-4)


def test_export_lowering_keeps_the_output_structure(cnn_inputs):
    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(8, 4)
            self.b = torch.nn.Linear(8, 2)

        def forward(self, x):
            return {"a": self.a(x), "b": self.b(x)}

    model = seeded(TwoHeads())
    example = (torch.randn(3, 8),)
    lowered = lower(export_model(model, example), example, make_config(("t", {"lowering": "export"})), quantized=False)
    out = lowered(*example)
    assert set(out) == {"a", "b"}
    assert out["a"].shape == (3, 4) and out["b"].shape == (3, 2)


def test_outputs_of_earlier_calls_are_not_overwritten(quantized_cnn, cnn_inputs):
    """OpenVINO's torchdynamo executor reuses its output buffer; LoweredModel hands out copies."""
    lowered = lower(quantized_cnn, cnn_inputs, make_config(), quantized=True)
    first = lowered(*cnn_inputs)
    kept = first.clone()
    lowered(torch.randn_like(cnn_inputs[0]) * 5)
    torch.testing.assert_close(first, kept)


class CastsItsMask(torch.nn.Module):
    """``mask.to(float)``: torch.export leaves an ``aten._assert_tensor_metadata`` dtype check."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * mask.to(torch.float32)


def test_own_backend_drops_the_exported_dtype_checks_openvino_cannot_convert(monkeypatch):
    from pytest_ovquant.flow import ov_backend

    inputs = (torch.randn(2, 4), torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]]))
    exported = export_model(CastsItsMask().eval(), inputs)
    assert any(n.target == torch.ops.aten._assert_tensor_metadata.default for n in exported.graph.nodes)
    config = make_config(("test", {"compile_backend": "ovquant_openvino"}))
    lowered = lower(exported, inputs, config, quantized=False)
    assert lowered.report.pytorch_ops == [] and lowered.report.n_irs == 1, lowered.report.describe()
    torch.testing.assert_close(lowered(*inputs), exported(*inputs), rtol=0.02, atol=0.02)  # bf16 on AMX CPUs
    # kept, the checks run in PyTorch between OpenVINO calls (what the removal avoids)
    monkeypatch.setattr(ov_backend, "_remove_assert_ops", lambda gm: None)
    kept = lower(exported, inputs, config, quantized=False)
    assert kept.report.pytorch_ops == ["aten._assert_tensor_metadata.default"], kept.report.describe()
