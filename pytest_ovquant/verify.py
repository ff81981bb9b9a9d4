"""Lowering verification: what does OpenVINO really run?

A lowering is inspected through the pairs (``ov.Model`` handed to ``compile_model``, the resulting
``CompiledModel``) it produced. From them:

- how many IRs were built (0: the torch.compile backend fell back to inductor; >1: graph breaks),
- which weight operands of Convolution/MatMul are *runtime inputs* instead of constants,
- how many FakeQuantize nodes the IR has and which compute layers they quantize,
- the runtime layer type and precision (``rt_info["layerType"]`` / ``["runtimePrecision"]``) of
  every Convolution / FullyConnected / MatMul after compilation.

``LoweringReport.problems()`` turns those facts into causes and ways out.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

# Types in the ov.Model (before compilation) that do the heavy lifting.
COMPUTE_TYPES = frozenset({"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul"})
# Layer types after compilation (the CPU plugin fuses MatMul with constant weights into FullyConnected).
RUNTIME_COMPUTE_TYPES = frozenset({"Convolution", "Deconvolution", "FullyConnected", "MatMul"})
INT8_PRECISIONS = frozenset({"u8", "i8"})
# Ops a weight passes through on its way to a compute op (quantization, layout, dtype).
WEIGHT_PATH_TYPES = frozenset(
    {"FakeQuantize", "Convert", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Multiply", "Subtract"}
)
# Operand paths additionally pass through ops that commute with quantization (the quantizer puts
# the FakeQuantize before a MaxPool, not after it).
OPERAND_PATH_TYPES = WEIGHT_PATH_TYPES | {"MaxPool"}
LOW_PRECISION_CONSTANTS = frozenset({"i8", "u8", "i4", "u4"})


@dataclass(frozen=True)
class RuntimeLayer:
    name: str
    layer_type: str
    precision: str


@dataclass
class IRSummary:
    """One OpenVINO IR (a torch.compile partition, or the whole exported model)."""

    n_inputs: int
    fake_quantize: int
    compute_ops: int
    quantized_compute_ops: int
    weight_inputs: int  # weight operands of compute ops fed by a runtime Parameter
    runtime_layers: list[RuntimeLayer] = field(default_factory=list)
    inference_precision: str | None = None


def _rt(op: Any, key: str) -> str:
    info = op.get_rt_info()
    if key not in info:
        return "?"
    value = info[key]
    return value.astype(str) if hasattr(value, "astype") else str(value)


def _upstream(output: Any, through: frozenset[str]) -> Iterable[Any]:
    """Nodes reachable upstream from ``output`` while passing only through ``through`` types.

    For FakeQuantize only the data input is followed (the others are its ranges).
    """
    seen: set[int] = set()
    stack = [output.get_node()]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if node.get_type_name() in through:
            inputs = node.inputs()[:1] if node.get_type_name() == "FakeQuantize" else node.inputs()
            stack.extend(i.get_source_output().get_node() for i in inputs)


def _is_quantization(node: Any) -> bool:
    """A FakeQuantize, or an int8 constant decompressed by Convert (folded weight quantization)."""
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Convert":
        source = node.input_value(0).get_node()
        return source.get_type_name() == "Constant" and source.get_element_type().to_string() in LOW_PRECISION_CONSTANTS
    return False


def summarize_ir(model: Any, compiled: Any) -> IRSummary:
    """Facts about one (ov.Model, CompiledModel) pair."""
    fake_quantize = 0
    compute_ops = 0
    quantized = 0
    weight_inputs = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            fake_quantize += 1
        if kind not in COMPUTE_TYPES or op.get_input_size() < 2:
            continue
        compute_ops += 1
        operand_paths = [list(_upstream(op.input_value(i), OPERAND_PATH_TYPES)) for i in range(2)]
        if any(_is_quantization(n) for path in operand_paths for n in path):
            quantized += 1
        weight_path = list(_upstream(op.input_value(1), WEIGHT_PATH_TYPES))
        # Only a weight that reached the op through weight-path ops and started at a Parameter.
        if any(n.get_type_name() == "Parameter" for n in weight_path) and not any(
            n.get_type_name() == "Constant" and n.get_output_partial_shape(0).rank.get_length() > 1
            for n in weight_path
        ):
            weight_inputs += 1
    runtime_layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        layer_type = _rt(op, "layerType")
        if layer_type in RUNTIME_COMPUTE_TYPES:
            runtime_layers.append(RuntimeLayer(op.get_friendly_name(), layer_type, _rt(op, "runtimePrecision")))
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    except Exception:  # not every device exposes it
        precision = None
    return IRSummary(
        n_inputs=len(model.inputs),
        fake_quantize=fake_quantize,
        compute_ops=compute_ops,
        quantized_compute_ops=quantized,
        weight_inputs=weight_inputs,
        runtime_layers=runtime_layers,
        inference_precision=precision,
    )


@dataclass
class LoweringReport:
    """What a lowering produced and whether it runs the way it claims to."""

    lowering: str  # "torch.compile" or "export"
    backend: str | None  # torch.compile backend name; None for the export lowering
    quantized: bool  # the module is meant to run INT8
    model_inputs: int  # tensor inputs the user passes
    irs: list[IRSummary] = field(default_factory=list)
    min_int8_fraction: float = 1.0
    compile_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    # ops the torch.compile partitioner left to PyTorch because OpenVINO cannot convert them (one per node)
    pytorch_ops: list[str] = field(default_factory=list)

    # -- aggregate facts ---------------------------------------------------------------------
    @property
    def n_irs(self) -> int:
        return len(self.irs)

    @property
    def fake_quantize(self) -> int:
        return sum(ir.fake_quantize for ir in self.irs)

    @property
    def weight_inputs(self) -> int:
        return sum(ir.weight_inputs for ir in self.irs)

    @property
    def runtime_inputs(self) -> int:
        return sum(ir.n_inputs for ir in self.irs)

    @property
    def runtime_layers(self) -> list[RuntimeLayer]:
        return [layer for ir in self.irs for layer in ir.runtime_layers]

    @property
    def quantized_layers(self) -> int:
        """Compute layers the IR quantizes (FakeQuantize on an operand)."""
        return sum(ir.quantized_compute_ops for ir in self.irs)

    @property
    def int8_layers(self) -> int:
        return sum(1 for layer in self.runtime_layers if layer.precision in INT8_PRECISIONS)

    @property
    def inference_precision(self) -> str | None:
        hints = {ir.inference_precision for ir in self.irs if ir.inference_precision}
        return ",".join(sorted(hints)) if hints else None

    def precision_counts(self) -> dict[str, dict[str, int]]:
        """{layer type: {runtime precision: count}}"""
        counts: dict[str, Counter] = {}
        for layer in self.runtime_layers:
            counts.setdefault(layer.layer_type, Counter())[layer.precision] += 1
        return {kind: dict(sorted(c.items())) for kind, c in sorted(counts.items())}

    # -- verdict -----------------------------------------------------------------------------
    def _layer_phrase(self) -> str:
        parts = [
            f"{n} {kind} {precision}"
            for kind, by_precision in self.precision_counts().items()
            for precision, n in by_precision.items()
        ]
        return ", ".join(parts) if parts else "no compute layers"

    def _pytorch_ops_phrase(self) -> str:
        counts = Counter(self.pytorch_ops)
        return ", ".join(f"{op}" + (f" x{n}" if n > 1 else "") for op, n in sorted(counts.items()))

    def problems(self) -> list[str]:
        """Each problem names the cause and the way out. Empty: the lowering is what it claims."""
        found: list[str] = []
        if self.n_irs == 0:
            if self.pytorch_ops:
                found.append(
                    f"no OpenVINO IR was built: OpenVINO cannot convert {self._pytorch_ops_phrase()}, so the "
                    "model ran in PyTorch; replace these ops in the model, or test only the part OpenVINO converts"
                )
            elif self.lowering == "torch.compile":
                found.append(
                    f"no OpenVINO IR was built: torch.compile backend {self.backend!r} fell back to another "
                    "compiler (OpenVINO's 'openvino' backend catches every error and silently calls inductor's "
                    "compile_fx; on torch <= 2.12 it does so unless options={'aot_autograd': True}); "
                    "use compile_backend='auto' with the default compile_options, or lowering='export'"
                )
            else:
                found.append("no OpenVINO IR was built by the export lowering")
            return found
        if not self.quantized:
            return found
        if self.fake_quantize == 0:
            found.append(
                "the OpenVINO IR has no FakeQuantize node: the module reaching OpenVINO is not quantized "
                "(was convert_pt2e run with fold_quantize=False, and is this the quantized model?)"
            )
            return found
        needed = max(1, math.ceil(self.min_int8_fraction * self.quantized_layers))
        if self.int8_layers < needed:
            head = (
                f"{self.int8_layers} of {self.quantized_layers} quantized layers run in int8 "
                f"({self._layer_phrase()})"
            )
            if self.weight_inputs:
                found.append(
                    f"{head}: weights are runtime inputs ({self.weight_inputs} weight operands are IR "
                    f"Parameters; the IR has {self.runtime_inputs} inputs for {self.model_inputs} model "
                    f"input(s)); OpenVINO's 'openvino' torch.compile backend does this on torch >= 2.13; "
                    "use compile_backend='auto' (the ovquant_openvino backend), lowering='export', or torch 2.9"
                )
            else:
                found.append(
                    f"{head}: OpenVINO chose another precision for them; check the CPU's int8 support "
                    "(VNNI/AMX) and INFERENCE_PRECISION_HINT, or lower min_int8_fraction if some layers are "
                    "meant to stay in floating point"
                )
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()

    def describe(self) -> str:
        """A few lines for terminal output and failure messages."""
        kind = "INT8" if self.quantized else "FP32"
        lines = [
            f"lowering={self.lowering} backend={self.backend or '-'} ({kind}): {self.n_irs} IR(s), "
            f"{self.runtime_inputs} runtime input(s) for {self.model_inputs} model input(s), "
            f"{self.fake_quantize} FakeQuantize, inference precision hint {self.inference_precision or '?'}",
            f"compute layers: {self._layer_phrase()}"
            + (f"; {self.int8_layers} of {self.quantized_layers} quantized layers in int8" if self.quantized else ""),
        ]
        if self.n_irs > 1:
            lines.append(f"note: {self.n_irs} IRs means graph breaks; the parts between them run in PyTorch")
        if self.pytorch_ops and self.n_irs:
            lines.append(
                f"note: OpenVINO cannot convert {self._pytorch_ops_phrase()}: ran in PyTorch between the IRs "
                "(replace these ops to run the whole model in OpenVINO)"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        lines.extend(f"PROBLEM: {p}" for p in self.problems())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lowering": self.lowering,
            "backend": self.backend,
            "quantized": self.quantized,
            "n_irs": self.n_irs,
            "model_inputs": self.model_inputs,
            "runtime_inputs": self.runtime_inputs,
            "weight_inputs": self.weight_inputs,
            "fake_quantize": self.fake_quantize,
            "quantized_layers": self.quantized_layers,
            "int8_layers": self.int8_layers,
            "precisions": self.precision_counts(),
            "inference_precision": self.inference_precision,
            "compile_seconds": self.compile_seconds,
            "pytorch_ops": list(self.pytorch_ops),
            "problems": self.problems(),
            "irs": [asdict(ir) for ir in self.irs],
        }


class LoweringCheckFailed(AssertionError):
    """Raised (as a test failure) when a lowering does not run the way it claims."""


def check(report: LoweringReport, label: str = "compiled model") -> None:
    """Raise ``LoweringCheckFailed`` with the report when it has problems."""
    problems = report.problems()
    if problems:
        raise LoweringCheckFailed(
            f"{label}: the OpenVINO lowering does not run as claimed\n" + report.describe()
        )
