"""Quantization/lowering configuration: one frozen dataclass, built from marker kwargs, options and ini.

Values accept what a user writes in a marker (``preset="mixed"``, ``target_device="cpu_spr"``,
``ignored_scope={"types": ["linear"]}``) as well as the nncf objects themselves.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError

PRESETS = ("performance", "mixed")
MODEL_TYPES = ("transformer",)
TARGET_DEVICES = ("ANY", "CPU", "CPU_SPR", "GPU", "NPU")
METHODS = ("prepare_convert", "quantize_pt2e")
LOWERINGS = ("torch.compile", "export")
# "auto": the project's own backend where OpenVINO's would leave weights as runtime inputs
# (torch >= 2.13), otherwise OpenVINO's. The others force one backend (e.g. to reproduce a break).
COMPILE_BACKENDS = ("auto", "openvino", "ovquant_openvino")
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")
IGNORED_SCOPE_KEYS = ("names", "types", "patterns", "subgraphs", "validate")

# The options that make OpenVINO's torch.compile backend produce a real INT8 IR (STACK.md):
# without aot_autograd it crashes or silently falls back to inductor.
DEFAULT_COMPILE_OPTIONS: Mapping[str, Any] = {"aot_autograd": True}


@dataclass(frozen=True)
class IgnoredScopeSpec:
    """Plain-data mirror of ``nncf.IgnoredScope`` (hashable, printable, JSON-able)."""

    names: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    subgraphs: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
    validate: bool = True

    def is_empty(self) -> bool:
        return not (self.names or self.types or self.patterns or self.subgraphs)

    def to_nncf(self) -> Any:
        import nncf

        return nncf.IgnoredScope(
            names=list(self.names),
            types=list(self.types),
            patterns=list(self.patterns),
            subgraphs=[nncf.Subgraph(inputs=list(i), outputs=list(o)) for i, o in self.subgraphs],
            validate=self.validate,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("names", "types", "patterns"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        if self.subgraphs:
            out["subgraphs"] = [{"inputs": list(i), "outputs": list(o)} for i, o in self.subgraphs]
        if not self.validate:
            out["validate"] = False
        return out


@dataclass(frozen=True)
class QuantizeConfig:
    """Everything that decides how a model is quantized and lowered.

    ``quantizer_key()`` covers the fields that change the quantized model; ``lowering_key()``
    adds those that only change the lowering, so one quantized model serves several lowerings.
    """

    # OpenVINOQuantizer parameters (the ones the tutorial documents)
    preset: str | None = None
    model_type: str | None = None
    ignored_scope: IgnoredScopeSpec = field(default_factory=IgnoredScopeSpec)
    target_device: str = "ANY"
    # quantization method
    method: str = "prepare_convert"
    smooth_quant: bool = False
    fast_bias_correction: bool | None = True
    subset_size: int = 300
    # export
    dynamic_batch: bool = False
    strict_export: bool = False
    # lowering
    lowering: str = "torch.compile"
    compile_backend: str = "auto"
    compile_options: tuple[tuple[str, Any], ...] | None = None  # None: DEFAULT_COMPILE_OPTIONS
    fp32_inference_precision: str | None = None  # None: OpenVINO's default (bf16 on AMX/AVX512-BF16 CPUs)
    # verification
    verify: bool = True
    min_int8_fraction: float = 1.0

    # -- derived views -------------------------------------------------------------------
    def effective_compile_options(self) -> dict[str, Any]:
        if self.compile_options is None:
            return dict(DEFAULT_COMPILE_OPTIONS)
        return dict(self.compile_options)

    def quantizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``OpenVINOQuantizer`` as nncf objects."""
        import nncf

        kwargs: dict[str, Any] = {"target_device": nncf.TargetDevice[self.target_device]}
        if self.preset is not None:
            kwargs["preset"] = nncf.QuantizationPreset[self.preset.upper()]
        if self.model_type is not None:
            kwargs["model_type"] = nncf.ModelType[self.model_type.upper()]
        if not self.ignored_scope.is_empty():
            kwargs["ignored_scope"] = self.ignored_scope.to_nncf()
        return kwargs

    def quantizer_fields(self) -> dict[str, Any]:
        fields = {
            "preset": self.preset,
            "model_type": self.model_type,
            "ignored_scope": self.ignored_scope.to_dict(),
            "target_device": self.target_device,
            "method": self.method,
        }
        if self.method == "quantize_pt2e":
            fields.update(
                smooth_quant=self.smooth_quant,
                fast_bias_correction=self.fast_bias_correction,
                subset_size=self.subset_size,
            )
        fields.update(dynamic_batch=self.dynamic_batch, strict_export=self.strict_export)
        return fields

    def lowering_fields(self) -> dict[str, Any]:
        return {
            "lowering": self.lowering,
            "compile_backend": self.compile_backend if self.lowering == "torch.compile" else None,
            "compile_options": self.effective_compile_options() if self.lowering == "torch.compile" else None,
            "fp32_inference_precision": self.fp32_inference_precision,
        }

    def quantizer_key(self) -> str:
        return json.dumps(self.quantizer_fields(), sort_keys=True, default=repr)

    def lowering_key(self) -> str:
        return json.dumps({**self.quantizer_fields(), **self.lowering_fields()}, sort_keys=True, default=repr)

    def to_dict(self) -> dict[str, Any]:
        """Human-readable summary (for reports and reference files)."""
        return {**self.quantizer_fields(), **self.lowering_fields()}


# ---------------------------------------------------------------------------------------------
# Parsing: every public entry point funnels into ``make_config``.


def _enum_name(value: Any) -> str | None:
    """nncf enums (and any Enum) -> member name; strings pass through."""
    if value is None:
        return None
    name = getattr(value, "name", None)
    if name is not None and not isinstance(value, str):
        return str(name)
    if isinstance(value, str):
        return value
    return None


def _choice(source: str, key: str, value: Any, choices: tuple[str, ...], *, upper: bool = False) -> str:
    name = _enum_name(value)
    if name is None:
        raise ConfigError(f"{source}: {key}={value!r} has the wrong type; expected one of {', '.join(choices)}")
    normalised = name.strip().upper() if upper else name.strip().lower()
    for choice in choices:
        if (choice.upper() if upper else choice.lower()) == normalised:
            return choice
    raise ConfigError(f"{source}: {key}={value!r} is not valid; expected one of {', '.join(choices)}")


def _bool(source: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{source}: {key}={value!r} must be true or false")


def _str_tuple(source: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{source}: {key}={value!r} must be a string or a list of strings")


def _as_list(value: Any) -> Any:
    """A single name stays one name; other iterables become lists; anything else is left to fail."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


def parse_ignored_scope(source: str, value: Any) -> IgnoredScopeSpec:
    """Accept ``nncf.IgnoredScope``, a dict with names/types/patterns/subgraphs, or None."""
    if value is None:
        return IgnoredScopeSpec()
    if isinstance(value, IgnoredScopeSpec):
        return value
    if not isinstance(value, Mapping):
        if all(hasattr(value, key) for key in ("names", "types", "patterns", "subgraphs")):
            value = {
                "names": list(value.names),
                "types": list(value.types),
                "patterns": list(value.patterns),
                "subgraphs": [{"inputs": list(s.inputs), "outputs": list(s.outputs)} for s in value.subgraphs],
                "validate": bool(getattr(value, "validate", True)),
            }
        else:
            raise ConfigError(
                f"{source}: ignored_scope={value!r} must be nncf.IgnoredScope or a dict with keys "
                f"{', '.join(IGNORED_SCOPE_KEYS)}"
            )
    unknown = sorted(set(value) - set(IGNORED_SCOPE_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: ignored_scope has unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(IGNORED_SCOPE_KEYS)}"
        )
    subgraphs = []
    for item in value.get("subgraphs", ()) or ():
        if isinstance(item, Mapping) and set(item) <= {"inputs", "outputs"}:
            inputs, outputs = item.get("inputs", ()), item.get("outputs", ())
        elif hasattr(item, "inputs") and hasattr(item, "outputs"):
            inputs, outputs = item.inputs, item.outputs
        else:
            raise ConfigError(
                f"{source}: ignored_scope subgraph {item!r} must be nncf.Subgraph or "
                "{'inputs': [...], 'outputs': [...]}"
            )
        subgraphs.append(
            (
                _str_tuple(source, "ignored_scope subgraph inputs", _as_list(inputs)),
                _str_tuple(source, "ignored_scope subgraph outputs", _as_list(outputs)),
            )
        )
    return IgnoredScopeSpec(
        names=_str_tuple(source, "ignored_scope.names", value.get("names", ()) or ()),
        types=_str_tuple(source, "ignored_scope.types", value.get("types", ()) or ()),
        patterns=_str_tuple(source, "ignored_scope.patterns", value.get("patterns", ()) or ()),
        subgraphs=tuple(subgraphs),
        validate=_bool(source, "ignored_scope.validate", value.get("validate", True)),
    )


def _parse_one(source: str, key: str, value: Any) -> Any:
    if key == "preset":
        return None if value is None else _choice(source, key, value, PRESETS)
    if key == "model_type":
        return None if value is None else _choice(source, key, value, MODEL_TYPES)
    if key == "target_device":
        return _choice(source, key, value, TARGET_DEVICES, upper=True)
    if key == "ignored_scope":
        return parse_ignored_scope(source, value)
    if key == "method":
        return _choice(source, key, value, METHODS)
    if key in ("smooth_quant", "dynamic_batch", "strict_export", "verify"):
        return _bool(source, key, value)
    if key == "fast_bias_correction":
        return None if value is None or (isinstance(value, str) and value.lower() == "none") else _bool(source, key, value)
    if key == "subset_size":
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: subset_size={value!r} must be a positive integer") from None
        if isinstance(value, bool) or number < 1 or (isinstance(value, float) and number != value):
            raise ConfigError(f"{source}: subset_size={value!r} must be a positive integer")
        return number
    if key == "lowering":
        return _choice(source, key, value, LOWERINGS)
    if key == "compile_backend":
        return _choice(source, key, value, COMPILE_BACKENDS)
    if key == "compile_options":
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: compile_options={value!r} must be a dict (or None for the defaults)")
        return tuple(sorted((str(k), v) for k, v in value.items()))
    if key == "fp32_inference_precision":
        return None if value is None else _choice(source, key, value, INFERENCE_PRECISIONS)
    if key == "min_int8_fraction":
        if isinstance(value, bool):
            raise ConfigError(f"{source}: min_int8_fraction={value!r} must be a number in [0, 1]")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: min_int8_fraction={value!r} must be a number in [0, 1]") from None
        if not 0.0 <= number <= 1.0:
            raise ConfigError(f"{source}: min_int8_fraction={value!r} must be a number in [0, 1]")
        return number
    raise AssertionError(key)  # pragma: no cover - guarded by CONFIG_KEYS


CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(QuantizeConfig))
NNCF_ONLY_KEYS = ("smooth_quant", "fast_bias_correction", "subset_size")


def make_config(*layers: tuple[str, Mapping[str, Any]]) -> QuantizeConfig:
    """Merge ``(source, values)`` layers, later layers winning, into a validated config.

    ``source`` names where values came from ("@pytest.mark.ovq_quantize", "--ovq-preset", ...)
    so that an error says which one to fix.
    """
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in layers:
        for key, value in values.items():
            if key not in CONFIG_KEYS:
                raise ConfigError(
                    f"{source}: unknown argument {key!r}; allowed: {', '.join(CONFIG_KEYS)}"
                )
            merged[key] = _parse_one(source, key, value)
            sources[key] = source
    # NNCF's quantize_pt2e is the only way to get SmoothQuant / bias correction / subset_size.
    nncf_keys = [k for k in NNCF_ONLY_KEYS if k in merged]
    if "method" not in merged and (merged.get("smooth_quant") or any(k != "smooth_quant" for k in nncf_keys)):
        merged["method"] = "quantize_pt2e"
    if merged.get("method") == "prepare_convert" and merged.get("smooth_quant"):
        raise ConfigError(
            f"{sources['smooth_quant']}: smooth_quant=True needs method='quantize_pt2e' "
            f"(set by {sources['method']}); drop one of them"
        )
    if merged.get("method") == "prepare_convert" and merged.get("fast_bias_correction") is not None:
        # prepare_pt2e/convert_pt2e do no bias correction: the setting would be silently ignored
        raise ConfigError(
            f"{sources['fast_bias_correction']}: fast_bias_correction={merged['fast_bias_correction']!r} needs "
            f"method='quantize_pt2e' (method='prepare_convert' set by {sources['method']} does no bias "
            "correction); drop one of them"
        )
    return QuantizeConfig(**merged)
