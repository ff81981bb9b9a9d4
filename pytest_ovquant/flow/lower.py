"""Step 3: lower a (quantized or FP32) graph to OpenVINO, and record what OpenVINO was given.

Two lowerings, selectable per test:

- ``"torch.compile"``: ``torch.compile(model, backend=..., options={"aot_autograd": True})``. The
  backend is OpenVINO's ``openvino`` where it freezes weights (torch <= 2.12) and the project's own
  ``ovquant_openvino`` where it does not (see ``ov_backend``); ``compile_backend`` forces one.
- ``"export"``: ``ov.convert_model(torch.export.export(model, args))`` compiled by ``openvino.Core``.

Both return a ``LoweredModel`` whose ``report`` (see ``..verify``) says what really runs.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Iterator, Sequence

import torch

from .. import compat
from ..config import QuantizeConfig
from ..errors import LoweringError, OVQuantError
from ..verify import IRSummary, LoweringReport, summarize_ir
from . import ov_backend


class LoweredModel:
    """A model lowered to OpenVINO: call it like the torch module; ``report`` says what runs."""

    def __init__(self, module: Any, report: LoweringReport, name: str = "model") -> None:
        self.module = module
        self.report = report
        self.name = name
        self.config: dict[str, Any] = {}  # the QuantizeConfig it came from (set by whoever built it)
        # (ov.Model, CompiledModel) of every IR the lowering produced (what ``replay`` stores)
        self.ir_records: list[tuple[Any, Any]] = []

    @property
    def lowering(self) -> str:
        return self.report.lowering

    @property
    def backend(self) -> str | None:
        return self.report.backend

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from torch.utils._pytree import tree_map

        with torch.no_grad():
            outputs = self.module(*args, **kwargs)
        # OpenVINO's torchdynamo executor returns tensors that share the infer request's output
        # buffer (share_outputs=True): the next call would overwrite a result the caller kept.
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, outputs)

    def __repr__(self) -> str:
        kind = "INT8" if self.report.quantized else "FP32"
        return f"<LoweredModel {self.name} {kind} lowering={self.lowering} backend={self.backend} irs={self.report.n_irs}>"


class OpenVINORunner:
    """Runs a CompiledModel with torch tensors in and the torch model's output structure out."""

    def __init__(self, compiled: Any, out_spec: Any) -> None:
        self.compiled = compiled
        self.out_spec = out_spec
        self._request = compiled.create_infer_request()

    def __call__(self, *args: torch.Tensor) -> Any:
        from torch.utils._pytree import tree_unflatten

        inputs = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a for a in args]
        results = self._request.infer(inputs)
        outputs = [torch.from_numpy(results[o]) for o in self.compiled.outputs]
        return tree_unflatten(outputs, self.out_spec)


@contextlib.contextmanager
def record_openvino_compiles() -> Iterator[list[tuple[Any, Any]]]:
    """Record every (ov.Model, CompiledModel) OpenVINO's torchdynamo integration compiles meanwhile.

    OpenVINO's torch.compile path (its own backend and ours alike) ends in
    ``openvino.frontend.pytorch.torchdynamo.compile``'s ``Core().compile_model(om, ...)``; we swap that
    module's ``Core`` for a recording subclass for the duration. Nothing else is changed.
    """
    import openvino as ov
    from openvino.frontend.pytorch.torchdynamo import compile as ov_compile
    from openvino.frontend.pytorch.torchdynamo import partition as ov_partition

    records = _Records()
    original = ov_compile.Core
    original_partition = ov_partition.Partitioner.make_partitions

    def recording_partition(self: Any, graph_module: Any, *args: Any, **kwargs: Any) -> Any:
        # ops left outside every OpenVINO partition because OpenVINO cannot convert them run in PyTorch
        fused = original_partition(self, graph_module, *args, **kwargs)
        with contextlib.suppress(Exception):  # recording must never break a lowering
            submodules = dict(fused.named_modules())
            for node in fused.graph.nodes:
                if node.op == "call_function" and not self.supported_ops.is_node_supported(submodules, node):
                    records.pytorch_ops.append(str(node.target))
        return fused

    class RecordingCore(original):  # type: ignore[misc, valid-type]
        def compile_model(self, model: Any, *args: Any, **kwargs: Any) -> Any:
            compiled = super().compile_model(model, *args, **kwargs)
            if isinstance(model, ov.Model):
                records.append((model, compiled))
            return compiled

    ov_compile.Core = RecordingCore
    ov_partition.Partitioner.make_partitions = recording_partition
    try:
        yield records
    finally:
        ov_compile.Core = original
        ov_partition.Partitioner.make_partitions = original_partition


class _Records(list):
    """(ov.Model, CompiledModel) pairs, plus the ops the partitioner left to PyTorch (unconvertible)."""

    def __init__(self) -> None:
        super().__init__()
        self.pytorch_ops: list[str] = []


def resolve_backend(config: QuantizeConfig) -> str:
    """The torch.compile backend name the config asks for on the installed torch."""
    import openvino.torch  # noqa: F401  (registers the "openvino" backend)

    if config.compile_backend == "openvino":
        return "openvino"
    if config.compile_backend == "ovquant_openvino" or compat.needs_own_compile_backend():
        return ov_backend.register()
    return "openvino"


def count_model_inputs(example_inputs: tuple[Any, ...]) -> int:
    """How many inputs OpenVINO gets (the tensors among the example inputs)."""
    return sum(1 for a in example_inputs if isinstance(a, torch.Tensor))


def _report(
    lowering: str,
    backend: str | None,
    records: list[tuple[Any, Any]],
    example_inputs: tuple[Any, ...],
    config: QuantizeConfig,
    quantized: bool,
    seconds: float,
) -> LoweringReport:
    return LoweringReport(
        lowering=lowering,
        backend=backend,
        quantized=quantized,
        model_inputs=count_model_inputs(example_inputs),
        irs=[summarize_ir(model_ir, compiled) for model_ir, compiled in records],
        min_int8_fraction=config.min_int8_fraction,
        compile_seconds=seconds,
        pytorch_ops=list(getattr(records, "pytorch_ops", [])),
    )


def ov_compile_config(config: QuantizeConfig, quantized: bool, compile_cache_dir: str | None = None) -> dict[str, str]:
    """The ``compile_model`` properties a lowering uses (precision hint, OpenVINO's blob cache)."""
    ov_config = {}
    if not quantized and config.fp32_inference_precision:
        ov_config["INFERENCE_PRECISION_HINT"] = config.fp32_inference_precision
    if compile_cache_dir:
        # OpenVINO's own blob cache: a warm run imports the compiled model instead of compiling it
        ov_config["CACHE_DIR"] = compile_cache_dir
    return ov_config


def lower_torch_compile(
    model: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    config: QuantizeConfig,
    *,
    quantized: bool,
    name: str = "model",
    compile_cache_dir: str | None = None,
) -> LoweredModel:
    backend = resolve_backend(config)
    options = config.effective_compile_options()
    ov_config = ov_compile_config(config, quantized, compile_cache_dir if backend != "inductor" else None)
    if ov_config:
        options["config"] = {**options.get("config", {}), **ov_config}
    # A private copy: dynamo caches compiled code per module, and the same quantized model may be
    # lowered with several backends in one session.
    compiled_module = torch.compile(copy.deepcopy(model), backend=backend, options=options or None)
    start = time.perf_counter()
    with record_openvino_compiles() as records, torch.no_grad():
        try:
            compiled_module(*example_inputs)  # torch.compile compiles on the first call
        except Exception as error:
            raise LoweringError(
                f"torch.compile(backend={backend!r}, options={options}) failed on {name}: "
                f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}; "
                "use compile_backend='auto' with the default compile_options "
                "(OpenVINO's backend without options={'aot_autograd': True} crashes in dynamo guard building "
                "on torch >= 2.13), or lowering='export'"
            ) from error
    seconds = time.perf_counter() - start
    report = _report("torch.compile", backend, records, example_inputs, config, quantized, seconds)
    lowered = LoweredModel(compiled_module, report, name)
    lowered.ir_records = list(records)
    return lowered


def export_to_openvino(model: torch.nn.Module, example_inputs: tuple[Any, ...]) -> Any:
    """``ov.convert_model(torch.export.export(model, args))``: the export lowering's IR."""
    import openvino as ov

    return ov.convert_model(torch.export.export(model, example_inputs))


EXPORT_LOWERING = "ov.convert_model(torch.export.export(...))"


def _lowering_error(name: str, how: str, error: Exception) -> LoweringError:
    text = str(error).strip()
    hint = ""
    if "No conversion rule found" in text or "wasn't fully converted" in text:
        hint = (
            "\nhint: OpenVINO cannot convert the operations named above: replace them in the model, or use "
            "lowering='torch.compile', where they run in PyTorch between OpenVINO partitions (the lowering "
            "report names them)"
        )
    return LoweringError(f"lowering {name} with {how} failed: {type(error).__name__}: {text[:2000]}{hint}")


def convert_export_lowering(model: torch.nn.Module, example_inputs: tuple[Any, ...], *, name: str = "model") -> tuple[Any, Any]:
    """The export lowering's machine-independent half: (IR, treespec of the model's outputs).

    Kept apart from compiling so the artifact cache can store the IR even where the CPU plugin then
    fails to compile it (a strict xfail need not convert again on every run).
    """
    from torch.utils._pytree import tree_flatten

    try:
        with torch.no_grad():
            _, out_spec = tree_flatten(model(*example_inputs))
            return export_to_openvino(model, example_inputs), out_spec
    except OVQuantError:
        raise
    except Exception as error:
        raise _lowering_error(name, EXPORT_LOWERING, error) from error


def compile_ir(ir: Any, config: QuantizeConfig, *, quantized: bool, name: str, how: str, compile_cache_dir: str | None) -> Any:
    """``Core().compile_model`` for the CPU with the config's properties; a failure is a ``LoweringError``."""
    import openvino as ov

    try:
        return ov.Core().compile_model(ir, "CPU", ov_compile_config(config, quantized, compile_cache_dir))
    except Exception as error:
        raise _lowering_error(name, how, error) from error


def compile_export_lowering(
    ir: Any,
    out_spec: Any,
    config: QuantizeConfig,
    *,
    quantized: bool,
    model_inputs: int,
    name: str = "model",
    compile_cache_dir: str | None = None,
    notes: Sequence[str] = (),
    started: float | None = None,
) -> LoweredModel:
    """The export lowering's second half: compile ``ir`` and call it like the model (``out_spec``)."""
    start = time.perf_counter() if started is None else started
    compiled = compile_ir(ir, config, quantized=quantized, name=name, how=EXPORT_LOWERING, compile_cache_dir=compile_cache_dir)
    report = LoweringReport(
        lowering="export",
        backend=None,
        quantized=quantized,
        model_inputs=model_inputs,
        irs=[summarize_ir(ir, compiled)],
        min_int8_fraction=config.min_int8_fraction,
        compile_seconds=time.perf_counter() - start,
        notes=list(notes),
    )
    lowered = LoweredModel(OpenVINORunner(compiled, out_spec), report, name)
    lowered.ir_records = [(ir, compiled)]
    return lowered


def lower_export(
    model: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    config: QuantizeConfig,
    *,
    quantized: bool,
    name: str = "model",
    compile_cache_dir: str | None = None,
) -> LoweredModel:
    start = time.perf_counter()
    ir, out_spec = convert_export_lowering(model, example_inputs, name=name)
    return compile_export_lowering(
        ir,
        out_spec,
        config,
        quantized=quantized,
        model_inputs=count_model_inputs(example_inputs),
        name=name,
        compile_cache_dir=compile_cache_dir,
        started=start,
    )


def lower(
    model: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    config: QuantizeConfig,
    *,
    quantized: bool,
    name: str = "model",
    compile_cache_dir: str | None = None,
) -> LoweredModel:
    """Lower ``model`` the way ``config.lowering`` says; the report is filled, not checked.

    ``compile_cache_dir`` is OpenVINO's ``CACHE_DIR`` for compiled blobs.
    """
    if config.lowering == "export":
        return lower_export(model, example_inputs, config, quantized=quantized, name=name, compile_cache_dir=compile_cache_dir)
    return lower_torch_compile(
        model, example_inputs, config, quantized=quantized, name=name, compile_cache_dir=compile_cache_dir
    )


__all__ = [
    "EXPORT_LOWERING",
    "IRSummary",
    "LoweredModel",
    "OpenVINORunner",
    "compile_export_lowering",
    "compile_ir",
    "convert_export_lowering",
    "count_model_inputs",
    "export_to_openvino",
    "lower",
    "lower_export",
    "lower_torch_compile",
    "ov_compile_config",
]
