"""A torch.compile lowering served again from the one OpenVINO IR it produced (the cache stores it).

Why: a warm run would otherwise trace the cached quantized program with dynamo again; only
OpenVINO's compiled blob was cached. Replaying reads the IR, compiles it (``CACHE_DIR`` makes that
an import of the blob) and summarizes it again, so the lowering report describes what runs now.

A torch.compile lowering is replayable when its partitioner made one partition, left no op to
PyTorch, its inputs are all tensors, and the IR called directly with the example inputs gives the
compiled module's outputs bit for bit (which also checks the input order). (The export lowering's
module *is* its IR: ``artifacts`` stores that IR once converted and compiles it on every run,
``lower.compile_export_lowering``.)

A replayed torch.compile lowering runs the IR only for calls with the example inputs' shapes and
dtypes (the signature dynamo traced); any other call goes to a real ``torch.compile``, built on
first need. Timed sections never get a replay (``ModelArtifacts.lowered(timing=True)``): dynamo's
per-call cost is part of what a torch.compile user runs.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten, treespec_dumps, treespec_loads

from ..config import QuantizeConfig
from ..fingerprint import inputs_signature
from ..verify import LoweringReport, summarize_ir
from .lower import LoweredModel, OpenVINORunner, compile_ir, count_model_inputs

REPLAY_NOTE = "replayed from the artifact cache: the IR this lowering produced in an earlier run"


def replay_record(lowered: LoweredModel, example_inputs: tuple[Any, ...]) -> tuple[Any, dict[str, Any]] | str:
    """(IR, record) to store for a torch.compile lowering, or why it cannot be replayed."""
    records = lowered.ir_records
    if len(records) != 1:
        return f"{len(records)} OpenVINO IRs"
    if lowered.report.pytorch_ops:
        return f"{len(lowered.report.pytorch_ops)} op(s) run in PyTorch"
    if not example_inputs or not all(isinstance(a, torch.Tensor) for a in example_inputs):
        return "the example inputs are not all tensors"
    ir, compiled = records[0]
    expected, out_spec = tree_flatten(lowered(*example_inputs))
    obtained, _ = tree_flatten(OpenVINORunner(compiled, out_spec)(*example_inputs))
    if len(obtained) != len(expected) or not all(
        isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
        for a, b in zip(obtained, expected)
    ):
        return "the IR alone does not reproduce the compiled module's outputs"
    record = ir_record(lowered.report.lowering, lowered.report.backend, out_spec, example_inputs)
    return record if isinstance(record, str) else (ir, record)


def ir_record(lowering: str, backend: str | None, out_spec: Any, example_inputs: tuple[Any, ...]) -> dict[str, Any] | str:
    """The JSON record stored beside a lowering's IR (how to call it), or why there can be none."""
    try:
        spec = treespec_dumps(out_spec)
    except Exception as error:  # an output type pytree cannot serialize
        return f"its output structure cannot be saved ({type(error).__name__})"
    return {
        "lowering": lowering,
        "backend": backend,
        "out_spec": spec,
        "signature": inputs_signature(example_inputs),
        "model_inputs": count_model_inputs(example_inputs),
    }


class ReplayedTorchCompile:
    """The module of a replayed torch.compile lowering: the IR for the traced signature, else the real thing."""

    def __init__(self, runner: OpenVINORunner, signature: str, build_real: Callable[[], LoweredModel]) -> None:
        self.runner = runner
        self.signature = signature
        self._build_real = build_real
        self._real: LoweredModel | None = None

    def real(self) -> LoweredModel:
        """The torch.compile lowering itself, built on first need."""
        if self._real is None:
            self._real = self._build_real()
        return self._real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs and inputs_signature(args) == self.signature:
            return self.runner(*args)
        return self.real().module(*args, **kwargs)


def replay(
    ir: Any,
    record: dict[str, Any],
    config: QuantizeConfig,
    *,
    quantized: bool,
    name: str,
    compile_cache_dir: str | None,
    build_real: Callable[[], LoweredModel],
) -> LoweredModel:
    """The torch.compile lowering ``record`` describes, running ``ir``; its report is made from the compiled IR."""
    out_spec = treespec_loads(record["out_spec"])
    start = time.perf_counter()
    how = f"its OpenVINO IR replayed from the artifact cache ({record['lowering']} lowering)"
    compiled = compile_ir(ir, config, quantized=quantized, name=name, how=how, compile_cache_dir=compile_cache_dir)
    report = LoweringReport(
        lowering=record["lowering"],
        backend=record["backend"],
        quantized=quantized,
        model_inputs=record["model_inputs"],
        irs=[summarize_ir(ir, compiled)],
        min_int8_fraction=config.min_int8_fraction,
        compile_seconds=time.perf_counter() - start,
        notes=[REPLAY_NOTE],
    )
    module = ReplayedTorchCompile(OpenVINORunner(compiled, out_spec), record["signature"], build_real)
    lowered = LoweredModel(module, report, name)
    lowered.ir_records = [(ir, compiled)]
    return lowered


def is_replayed_torch_compile(lowered: LoweredModel) -> bool:
    return isinstance(lowered.module, ReplayedTorchCompile)


__all__ = ["REPLAY_NOTE", "ReplayedTorchCompile", "ir_record", "is_replayed_torch_compile", "replay", "replay_record"]
