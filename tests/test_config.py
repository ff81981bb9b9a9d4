"""Unit tests of config parsing (``pytest_ovquant.config``) and ``build_quantizer``."""

from __future__ import annotations

import dataclasses
import json

import nncf
import pytest

from pytest_ovquant import compat
from pytest_ovquant.config import (
    CONFIG_KEYS,
    COMPILE_BACKENDS,
    DEFAULT_COMPILE_OPTIONS,
    IGNORED_SCOPE_KEYS,
    LOWERINGS,
    METHODS,
    PRESETS,
    TARGET_DEVICES,
    IgnoredScopeSpec,
    QuantizeConfig,
    make_config,
    parse_ignored_scope,
)
from pytest_ovquant.errors import ConfigError, QuantizeError
from pytest_ovquant.flow.quantize import build_quantizer

SRC = "@pytest.mark.ovq_quantize(test_src)"


def cfg(**values) -> QuantizeConfig:
    return make_config((SRC, values))


def config_error(*layers) -> str:
    with pytest.raises(ConfigError) as info:
        make_config(*layers)
    return str(info.value)


# -- plain strings are accepted and normalised ---------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("preset", "mixed", "mixed"),
        ("preset", "MIXED", "mixed"),
        ("preset", "Performance", "performance"),
        ("preset", " performance ", "performance"),
        ("preset", None, None),
        ("model_type", "transformer", "transformer"),
        ("model_type", "Transformer", "transformer"),
        ("target_device", "cpu_spr", "CPU_SPR"),
        ("target_device", "CPU", "CPU"),
        ("target_device", "npu", "NPU"),
        ("target_device", "Any", "ANY"),
        ("lowering", "torch.compile", "torch.compile"),
        ("lowering", "export", "export"),
        ("lowering", "EXPORT", "export"),
        ("compile_backend", "auto", "auto"),
        ("compile_backend", "openvino", "openvino"),
        ("compile_backend", "OpenVINO", "openvino"),
        ("compile_backend", "ovquant_openvino", "ovquant_openvino"),
        ("method", "prepare_convert", "prepare_convert"),
        ("method", "quantize_pt2e", "quantize_pt2e"),
        ("method", "Quantize_PT2E", "quantize_pt2e"),
        ("fp32_inference_precision", "BF16", "bf16"),
        ("fp32_inference_precision", "f32", "f32"),
    ],
)
def test_string_values_are_normalised(key, value, expected):
    assert getattr(cfg(**{key: value}), key) == expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("smooth_quant", "yes", True),
        ("smooth_quant", "off", False),
        ("verify", "false", False),
        ("verify", True, True),
        ("dynamic_batch", "1", True),
        ("strict_export", False, False),
        ("fast_bias_correction", None, None),
        ("fast_bias_correction", "none", None),
        ("fast_bias_correction", "false", False),
        ("subset_size", 10, 10),
        ("subset_size", "25", 25),
        ("subset_size", 8.0, 8),
        ("min_int8_fraction", 0, 0.0),
        ("min_int8_fraction", "0.5", 0.5),
        ("min_int8_fraction", 1, 1.0),
    ],
)
def test_bool_and_number_values(key, value, expected):
    parsed = getattr(cfg(**{key: value}), key)
    assert parsed == expected
    assert type(parsed) is type(expected)


def test_all_declared_choices_are_accepted():
    for preset in PRESETS:
        assert cfg(preset=preset).preset == preset
    for device in TARGET_DEVICES:
        assert cfg(target_device=device.lower()).target_device == device
    for lowering in LOWERINGS:
        assert cfg(lowering=lowering).lowering == lowering
    for backend in COMPILE_BACKENDS:
        assert cfg(compile_backend=backend).compile_backend == backend
    for method in METHODS:
        assert cfg(method=method).method == method


def test_defaults():
    config = make_config()
    assert config == QuantizeConfig()
    assert config.preset is None
    assert config.model_type is None
    assert config.target_device == "ANY"
    assert config.method == "prepare_convert"
    assert config.lowering == "torch.compile"
    assert config.ignored_scope.is_empty()
    assert config.quantizer_kwargs() == {"target_device": nncf.TargetDevice.ANY}


def test_config_is_frozen():
    config = cfg(preset="mixed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.preset = "performance"  # type: ignore[misc]


# -- nncf enums ------------------------------------------------------------------------------


def test_nncf_enums_are_accepted():
    config = cfg(
        preset=nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER,
        target_device=nncf.TargetDevice.CPU_SPR,
    )
    assert config.preset == "mixed"
    assert config.model_type == "transformer"
    assert config.target_device == "CPU_SPR"
    # same config as the one written with strings
    assert config == cfg(preset="mixed", model_type="transformer", target_device="cpu_spr")


def test_quantizer_kwargs_map_back_to_the_nncf_enums():
    kwargs = cfg(
        preset=nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER,
        target_device=nncf.TargetDevice.CPU_SPR,
    ).quantizer_kwargs()
    assert set(kwargs) == {"preset", "model_type", "target_device"}
    assert kwargs["preset"] is nncf.QuantizationPreset.MIXED
    assert kwargs["model_type"] is nncf.ModelType.TRANSFORMER
    assert kwargs["target_device"] is nncf.TargetDevice.CPU_SPR


def test_quantizer_kwargs_from_strings():
    kwargs = cfg(preset="Performance", target_device="cpu").quantizer_kwargs()
    assert kwargs == {
        "preset": nncf.QuantizationPreset.PERFORMANCE,
        "target_device": nncf.TargetDevice.CPU,
    }
    assert kwargs["preset"] is nncf.QuantizationPreset.PERFORMANCE
    assert kwargs["target_device"] is nncf.TargetDevice.CPU


@pytest.mark.parametrize("device", TARGET_DEVICES)
def test_every_target_device_is_an_nncf_target_device(device):
    assert cfg(target_device=device).quantizer_kwargs()["target_device"] is nncf.TargetDevice[device]


def test_enum_of_the_wrong_kind_is_rejected():
    message = config_error((SRC, {"preset": nncf.ModelType.TRANSFORMER}))
    assert SRC in message and "preset" in message
    for preset in PRESETS:
        assert preset in message


# -- ignored_scope ---------------------------------------------------------------------------


def test_ignored_scope_from_dict():
    config = cfg(
        ignored_scope={
            "names": ["conv1", "fc"],
            "types": ["linear"],
            "patterns": [".*attn.*"],
            "subgraphs": [{"inputs": ["a", "b"], "outputs": ["c"]}],
        }
    )
    assert config.ignored_scope == IgnoredScopeSpec(
        names=("conv1", "fc"),
        types=("linear",),
        patterns=(".*attn.*",),
        subgraphs=((("a", "b"), ("c",)),),
        validate=True,
    )


def test_ignored_scope_subgraph_as_nncf_subgraph():
    spec = cfg(ignored_scope={"subgraphs": [nncf.Subgraph(inputs=["x"], outputs=["y", "z"])]}).ignored_scope
    assert spec.subgraphs == ((("x",), ("y", "z")),)
    assert spec.names == () and spec.types == () and spec.patterns == ()


def test_ignored_scope_single_string_for_names():
    spec = cfg(ignored_scope={"names": "conv1", "types": "linear"}).ignored_scope
    assert spec.names == ("conv1",)
    assert spec.types == ("linear",)


def test_ignored_scope_from_nncf_object_round_trips():
    original = nncf.IgnoredScope(
        names=["conv1"],
        types=["linear"],
        patterns=["head.*"],
        subgraphs=[nncf.Subgraph(inputs=["a"], outputs=["b"])],
        validate=False,
    )
    spec = cfg(ignored_scope=original).ignored_scope
    assert spec == IgnoredScopeSpec(
        names=("conv1",),
        types=("linear",),
        patterns=("head.*",),
        subgraphs=((("a",), ("b",)),),
        validate=False,
    )
    back = spec.to_nncf()
    assert isinstance(back, nncf.IgnoredScope)
    assert back == original
    assert list(back.names) == ["conv1"]
    assert list(back.types) == ["linear"]
    assert list(back.patterns) == ["head.*"]
    assert [(list(s.inputs), list(s.outputs)) for s in back.subgraphs] == [(["a"], ["b"])]
    assert back.validate is False


def test_ignored_scope_dict_and_nncf_object_give_the_same_config():
    as_dict = cfg(ignored_scope={"names": ["n"], "subgraphs": [{"inputs": ["i"], "outputs": ["o"]}]})
    as_nncf = cfg(ignored_scope=nncf.IgnoredScope(names=["n"], subgraphs=[nncf.Subgraph(inputs=["i"], outputs=["o"])]))
    assert as_dict == as_nncf
    assert as_dict.quantizer_key() == as_nncf.quantizer_key()


def test_ignored_scope_to_nncf_from_dict():
    spec = cfg(
        ignored_scope={"names": ["a"], "patterns": ["p.*"], "subgraphs": [{"inputs": ["i"], "outputs": ["o"]}]}
    ).ignored_scope
    expected = nncf.IgnoredScope(
        names=["a"], patterns=["p.*"], subgraphs=[nncf.Subgraph(inputs=["i"], outputs=["o"])], validate=True
    )
    assert spec.to_nncf() == expected


def test_ignored_scope_to_dict_round_trip():
    spec = cfg(
        ignored_scope={"names": ["a"], "subgraphs": [{"inputs": ["i"], "outputs": ["o"]}], "validate": False}
    ).ignored_scope
    assert spec.to_dict() == {"names": ["a"], "subgraphs": [{"inputs": ["i"], "outputs": ["o"]}], "validate": False}
    assert parse_ignored_scope("again", spec.to_dict()) == spec


def test_ignored_scope_in_quantizer_kwargs():
    kwargs = cfg(ignored_scope={"types": ["linear"]}).quantizer_kwargs()
    assert kwargs["ignored_scope"] == nncf.IgnoredScope(types=["linear"])
    # an empty scope is not passed at all
    assert "ignored_scope" not in cfg(ignored_scope={}).quantizer_kwargs()
    assert "ignored_scope" not in cfg(ignored_scope=None).quantizer_kwargs()


def test_ignored_scope_unknown_key_rejected():
    message = config_error((SRC, {"ignored_scope": {"name": ["conv1"]}}))
    assert SRC in message
    assert "name" in message
    for key in IGNORED_SCOPE_KEYS:
        assert key in message


@pytest.mark.parametrize(
    "bad",
    [
        {"subgraphs": [{"inputs": ["a"], "outputs": ["b"], "extra": 1}]},
        {"subgraphs": ["just-a-string"]},
        {"names": [1, 2]},
        {"validate": "maybe"},
        42,
    ],
)
def test_ignored_scope_malformed_rejected(bad):
    message = config_error((SRC, {"ignored_scope": bad}))
    assert SRC in message
    assert "ignored_scope" in message or "subgraph" in message


def test_ignored_scope_subgraph_single_string_not_split_into_characters():
    spec = cfg(ignored_scope={"subgraphs": [{"inputs": "conv1", "outputs": "relu"}]}).ignored_scope
    assert spec.subgraphs == ((("conv1",), ("relu",)),)


def test_ignored_scope_subgraph_none_inputs_is_config_error():
    message = config_error((SRC, {"ignored_scope": {"subgraphs": [{"inputs": None, "outputs": ["o"]}]}}))
    assert SRC in message


# -- bad values: ConfigError naming source, key and allowed values ------------------------


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("preset", "fast", PRESETS),
        ("preset", 3, PRESETS),
        ("model_type", "cnn", ("transformer",)),
        ("target_device", "TPU", TARGET_DEVICES),
        ("target_device", None, TARGET_DEVICES),
        ("lowering", "inductor", LOWERINGS),
        ("compile_backend", "inductor", COMPILE_BACKENDS),
        ("method", "ptq", METHODS),
        ("fp32_inference_precision", "int8", ("f32", "bf16", "f16")),
        ("subset_size", 0, ("positive integer",)),
        ("subset_size", -3, ("positive integer",)),
        ("subset_size", "abc", ("positive integer",)),
        ("subset_size", True, ("positive integer",)),
        ("subset_size", 2.5, ("positive integer",)),
        ("subset_size", None, ("positive integer",)),
        ("min_int8_fraction", 1.5, ("[0, 1]",)),
        ("min_int8_fraction", -0.1, ("[0, 1]",)),
        ("min_int8_fraction", "x", ("[0, 1]",)),
        ("min_int8_fraction", True, ("[0, 1]",)),
        ("min_int8_fraction", float("nan"), ("[0, 1]",)),
        ("smooth_quant", "maybe", ("true", "false")),
        ("verify", 1, ("true", "false")),
        ("compile_options", "aot", ("dict",)),
    ],
)
def test_bad_value_is_config_error_naming_source_key_and_allowed(key, value, allowed):
    source = "--ovq-bad-option"
    message = config_error((source, {key: value}))
    assert source in message
    assert f"{key}=" in message
    for choice in allowed:
        assert choice in message, (choice, message)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        cfg(preset="fast")


def test_unknown_key_lists_allowed_keys():
    message = config_error((SRC, {"presets": "mixed"}))
    assert SRC in message
    assert "'presets'" in message
    for key in CONFIG_KEYS:
        assert key in message


# -- precedence ------------------------------------------------------------------------------


def test_later_layer_wins():
    config = make_config(
        ("ovq_ini", {"preset": "performance", "lowering": "export", "subset_size": 10}),
        ("--ovq-preset", {"preset": "mixed"}),
        (SRC, {"lowering": "torch.compile"}),
    )
    assert config.preset == "mixed"
    assert config.lowering == "torch.compile"
    assert config.subset_size == 10  # from the only layer that set it


def test_later_layer_can_reset_to_none():
    config = make_config(("ovq_ini", {"preset": "mixed"}), (SRC, {"preset": None}))
    assert config.preset is None


def test_error_names_the_layer_that_supplied_the_bad_value():
    message = config_error(("ovq_ini", {"preset": "mixed"}), ("--ovq-target-device", {"target_device": "TPU"}))
    assert "--ovq-target-device" in message
    assert "ovq_ini" not in message
    message = config_error(("ovq_ini", {"preset": "fast"}), (SRC, {"target_device": "CPU"}))
    assert "ovq_ini" in message
    assert SRC not in message


# -- method selection ------------------------------------------------------------------------


def test_smooth_quant_selects_quantize_pt2e():
    config = cfg(smooth_quant=True)
    assert config.method == "quantize_pt2e"
    assert config.smooth_quant is True


def test_smooth_quant_false_keeps_prepare_convert():
    assert cfg(smooth_quant=False).method == "prepare_convert"


def test_subset_size_alone_selects_quantize_pt2e():
    config = cfg(subset_size=64)
    assert config.method == "quantize_pt2e"
    assert config.subset_size == 64
    assert config.smooth_quant is False


def test_fast_bias_correction_alone_selects_quantize_pt2e():
    assert cfg(fast_bias_correction=False).method == "quantize_pt2e"


def test_explicit_method_is_kept_with_subset_size():
    assert cfg(method="prepare_convert", subset_size=16).method == "prepare_convert"


def test_smooth_quant_with_quantize_pt2e_is_fine():
    config = cfg(method="quantize_pt2e", smooth_quant=True)
    assert config.method == "quantize_pt2e"
    assert config.smooth_quant is True


def test_smooth_quant_with_prepare_convert_names_both_sources():
    message = config_error(("ovq_ini", {"method": "prepare_convert"}), (SRC, {"smooth_quant": True}))
    assert "ovq_ini" in message
    assert SRC in message
    assert "smooth_quant" in message
    assert "quantize_pt2e" in message


def test_smooth_quant_with_prepare_convert_in_one_layer():
    message = config_error((SRC, {"method": "prepare_convert", "smooth_quant": True}))
    assert SRC in message and "smooth_quant" in message


# -- cache keys ------------------------------------------------------------------------------

BASE = {"preset": "mixed", "model_type": "transformer", "target_device": "CPU"}


@pytest.mark.parametrize(
    "lowering_only",
    [
        {"lowering": "export"},
        {"compile_backend": "ovquant_openvino"},
        {"compile_options": {"aot_autograd": False}},
        {"fp32_inference_precision": "f32"},
        {"verify": False},
        {"min_int8_fraction": 0.5},
        {"lowering": "export", "verify": False, "min_int8_fraction": 0.0, "compile_backend": "openvino"},
    ],
)
def test_quantizer_key_ignores_lowering_fields(lowering_only):
    base = cfg(**BASE)
    other = cfg(**BASE, **lowering_only)
    assert base != other
    assert base.quantizer_key() == other.quantizer_key()
    quantizer_fields = base.quantizer_fields()
    for key in lowering_only:
        assert key not in quantizer_fields


@pytest.mark.parametrize(
    "change",
    [
        {"preset": "performance"},
        {"preset": None},
        {"model_type": None},
        {"target_device": "CPU_SPR"},
        {"ignored_scope": {"names": ["fc"]}},
        {"method": "quantize_pt2e"},
        {"dynamic_batch": True},
        {"strict_export": True},
    ],
)
def test_quantizer_key_changes_with_quantizer_fields(change):
    assert cfg(**BASE).quantizer_key() != cfg(**{**BASE, **change}).quantizer_key()


def test_quantizer_key_covers_nncf_options_under_quantize_pt2e():
    base = cfg(**BASE, method="quantize_pt2e")
    assert base.quantizer_key() != cfg(**BASE, method="quantize_pt2e", smooth_quant=True).quantizer_key()
    assert base.quantizer_key() != cfg(**BASE, method="quantize_pt2e", subset_size=7).quantizer_key()
    assert base.quantizer_key() != cfg(**BASE, method="quantize_pt2e", fast_bias_correction=False).quantizer_key()


@pytest.mark.parametrize(
    "change",
    [
        {"lowering": "export"},
        {"compile_backend": "openvino"},
        {"compile_options": {}},
        {"fp32_inference_precision": "bf16"},
    ],
)
def test_lowering_key_changes_with_lowering_fields(change):
    base = cfg(**BASE)
    other = cfg(**BASE, **change)
    assert base.quantizer_key() == other.quantizer_key()
    assert base.lowering_key() != other.lowering_key()


def test_lowering_key_changes_with_quantizer_fields():
    assert cfg(**BASE).lowering_key() != cfg(**{**BASE, "preset": "performance"}).lowering_key()


def test_lowering_key_ignores_compile_settings_for_export():
    a = cfg(lowering="export", compile_backend="openvino")
    b = cfg(lowering="export", compile_backend="ovquant_openvino", compile_options={"x": 1})
    assert a.lowering_key() == b.lowering_key()


def test_keys_are_deterministic_json():
    values = {
        **BASE,
        "ignored_scope": {"names": ["a"], "subgraphs": [{"inputs": ["i"], "outputs": ["o"]}]},
        "compile_options": {"b": 2, "a": 1},
        "method": "quantize_pt2e",
    }
    one, two = cfg(**values), make_config(("other source", dict(reversed(list(values.items())))))
    assert one.quantizer_key() == two.quantizer_key()
    assert one.lowering_key() == two.lowering_key()
    assert isinstance(one.quantizer_key(), str)
    decoded = json.loads(one.quantizer_key())
    assert decoded["preset"] == "mixed"
    assert decoded["target_device"] == "CPU"
    assert decoded["ignored_scope"] == {"names": ["a"], "subgraphs": [{"inputs": ["i"], "outputs": ["o"]}]}
    lowering = json.loads(one.lowering_key())
    assert lowering["lowering"] == "torch.compile"
    assert lowering["compile_options"] == {"a": 1, "b": 2}
    assert {k: lowering[k] for k in decoded} == decoded


def test_same_config_from_strings_and_enums_has_same_keys():
    a = cfg(preset="MIXED", target_device="cpu_spr")
    b = cfg(preset=nncf.QuantizationPreset.MIXED, target_device=nncf.TargetDevice.CPU_SPR)
    assert a.quantizer_key() == b.quantizer_key()
    assert a.lowering_key() == b.lowering_key()


# -- compile options -------------------------------------------------------------------------


def test_effective_compile_options_default():
    config = make_config()
    assert config.effective_compile_options() == {"aot_autograd": True}
    assert cfg(compile_options=None).effective_compile_options() == {"aot_autograd": True}


def test_effective_compile_options_is_a_copy():
    options = make_config().effective_compile_options()
    options["aot_autograd"] = False
    assert DEFAULT_COMPILE_OPTIONS == {"aot_autograd": True}
    assert make_config().effective_compile_options() == {"aot_autograd": True}


def test_effective_compile_options_empty_dict_means_none():
    assert cfg(compile_options={}).effective_compile_options() == {}


def test_effective_compile_options_user_dict():
    options = {"aot_autograd": True, "device": "CPU", "config": {"PERFORMANCE_HINT": "LATENCY"}}
    assert cfg(compile_options=options).effective_compile_options() == options


# -- build_quantizer -------------------------------------------------------------------------

QUANTIZER_VALUES = {
    "preset": "mixed",
    "model_type": "transformer",
    "target_device": "CPU",
    "ignored_scope": {"names": ["fc1"], "types": ["linear"]},
}


def test_build_quantizer_returns_real_openvino_quantizer():
    quantizer = build_quantizer(cfg(**QUANTIZER_VALUES))
    real_cls = compat.find_openvino_quantizer().cls
    assert type(quantizer) is real_cls
    assert type(quantizer).__name__ == "OpenVINOQuantizer"
    # the public quantizer API (a torch Quantizer)
    assert callable(quantizer.annotate)
    assert callable(quantizer.validate)
    assert callable(quantizer.transform_for_annotation)


def test_build_quantizer_passes_the_settings(monkeypatch):
    real = compat.find_openvino_quantizer()
    received: list[dict] = []

    class RecordingQuantizer(real.cls):
        def __init__(self, **kwargs):
            received.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(compat, "find_openvino_quantizer", lambda: compat.QuantizerLocation(RecordingQuantizer, real.module))
    quantizer = build_quantizer(cfg(**QUANTIZER_VALUES))
    assert isinstance(quantizer, real.cls)
    assert len(received) == 1
    kwargs = received[0]
    assert set(kwargs) == {"preset", "model_type", "target_device", "ignored_scope"}
    assert kwargs["preset"] is nncf.QuantizationPreset.MIXED
    assert kwargs["model_type"] is nncf.ModelType.TRANSFORMER
    assert kwargs["target_device"] is nncf.TargetDevice.CPU
    assert kwargs["ignored_scope"] == nncf.IgnoredScope(names=["fc1"], types=["linear"])


def test_build_quantizer_default_config():
    quantizer = build_quantizer(make_config())
    assert isinstance(quantizer, compat.find_openvino_quantizer().cls)


def test_build_quantizer_wraps_constructor_mismatch(monkeypatch):
    class ModeOnlyQuantizer:  # an executorch-style constructor
        def __init__(self, *, mode=None):
            self.mode = mode

    monkeypatch.setattr(
        compat,
        "find_openvino_quantizer",
        lambda: compat.QuantizerLocation(ModeOnlyQuantizer, "executorch.backends.openvino.quantizer"),
    )
    with pytest.raises(QuantizeError) as info:
        build_quantizer(cfg(preset="mixed"))
    message = str(info.value)
    assert "executorch.backends.openvino.quantizer" in message
    assert "preset" in message
    assert "target_device" in message
    assert isinstance(info.value.__cause__, TypeError)
