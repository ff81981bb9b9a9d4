"""Build-once store of flow artifacts (exported, quantized, lowered) for a test session.

Keys are content fingerprints (model weights and class, input shapes, calibration data) plus the
config fields that matter for the step, so two tests that ask for the same thing share one build
whichever fixture scope the user's ``ovq_model`` has.

With an ``ArtifactCache`` they also persist across sessions (and xdist workers): which graph a
model exports to (a record), its exported program, the quantized program, and each lowering's IR
(replayed, see ``flow.replay``); the in-memory memo stays in front of it. A warm run then neither
exports, loads a program, nor traces with dynamo, unless a test asks for those artifacts themselves
(and then loads them).
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._pytree import treespec_loads

from .cache import ArtifactCache, cache_key, graph_fingerprint, versions_part
from .config import QuantizeConfig
from .errors import LoweringError
from .fingerprint import ModelFingerprints, definition_fingerprint, inputs_signature, tensors_fingerprint
from .flow.export import batch_dynamic_shapes, export_program
from .flow.lower import LoweredModel, compile_export_lowering, convert_export_lowering, count_model_inputs, lower
from .flow.quantize import calibration_items, quantize
from .flow.replay import REPLAY_NOTE, ir_record, is_replayed_torch_compile, replay, replay_record
from .measure.recorded import RecordedOutputsStore

# (step, seconds, detail) -> None; the plugin shows these as progress lines.
StepListener = Callable[[str, str, float, str], None]

# get_or_build_* status -> what progress lines and BuildRecord.detail say
CACHE_STATUS = {"hit": "cache hit", "built": "built", "rebuilt": "rebuilt (bad cache entry)"}


@dataclass
class BuildRecord:
    """One build that really happened (not a reuse): for the summary and for tests of build-once."""

    model: str
    step: str
    seconds: float
    detail: str


@dataclass
class ArtifactStore:
    """Session-wide memo of built artifacts."""

    fingerprints: ModelFingerprints = field(default_factory=ModelFingerprints)
    built: dict[tuple, Any] = field(default_factory=dict)
    records: list[BuildRecord] = field(default_factory=list)
    listener: StepListener | None = None
    cache: ArtifactCache | None = None
    # export key -> fingerprint of the exported graph (the disk-cache keys' base), once per session
    graph_fingerprints: dict[tuple, str] = field(default_factory=dict)

    @property
    def disk_cache(self) -> ArtifactCache | None:
        """The cache when it is set and enabled (else every step builds in memory only)."""
        return self.cache if self.cache is not None and self.cache.enabled else None

    def get_or_build(self, key: tuple, model_name: str, step: str, build: Callable[[], tuple[Any, str]]) -> Any:
        if key in self.built:
            return self.built[key]
        start = time.perf_counter()
        value, detail = build()
        seconds = time.perf_counter() - start
        self.built[key] = value
        self.records.append(BuildRecord(model_name, step, seconds, detail))
        if self.listener is not None:
            self.listener(model_name, step, seconds, detail)
        return value

    def lowered_models(self) -> list[LoweredModel]:
        return [v for v in self.built.values() if isinstance(v, LoweredModel)]


class ModelArtifacts:
    """The flow's artifacts for one (model, example inputs) pair; each built on first use."""

    def __init__(
        self,
        store: ArtifactStore,
        model: torch.nn.Module,
        example_inputs: tuple[Any, ...],
        name: str,
        calibration: Callable[[], Any],
    ) -> None:
        self.store = store
        self.model = model
        self.example_inputs = example_inputs
        self.name = name
        self._calibration = calibration  # called only when quantizing (it may warn)
        self._calibration_read: dict[int, tuple[list[Any], str]] = {}  # subset_size -> (items, fingerprint)
        self._model_key = (store.fingerprints(model), inputs_signature(example_inputs))

    def _export_key(self, config: QuantizeConfig) -> tuple:
        return ("export", *self._model_key, config.dynamic_batch, config.strict_export)

    @functools.cached_property
    def _definition(self) -> str | None:
        """The model's ``definition_fingerprint`` (None: not stable across runs), computed once."""
        return definition_fingerprint(self.model)

    def _definition_key(self, kind: str, config: QuantizeConfig, definition: str) -> str:
        """Disk-cache key of what the model's definition decides (its graph, its exported program)."""
        return cache_key(kind, *self._model_key, definition, str(config.dynamic_batch), str(config.strict_export), versions_part())

    def exported(self, config: QuantizeConfig) -> torch.fx.GraphModule:
        def export_now() -> torch.export.ExportedProgram:
            return export_program(
                self.model,
                self.example_inputs,
                name=self.name,
                dynamic_batch=config.dynamic_batch,
                strict=config.strict_export,
            )

        def build() -> tuple[Any, str]:
            detail = f"torch.export{' (dynamic batch)' if config.dynamic_batch else ''}"
            cache = self.store.disk_cache
            definition = self._definition if cache is not None else None
            if cache is None or definition is None:
                return export_now().module(), detail
            program, status = cache.get_or_build_exported(self._definition_key("exported", config, definition), export_now)
            return program.module(), f"{detail}, {CACHE_STATUS[status]}"

        return self.store.get_or_build(self._export_key(config), self.name, "export", build)

    def graph_fingerprint(self, config: QuantizeConfig) -> str:
        """Fingerprint of the graph ``torch.export`` makes of the model: the base of the disk-cache keys.

        With the disk cache it is kept in a record keyed by the model's definition (weights, classes,
        attributes, source files; see ``definition_fingerprint``), so a warm run need not export.
        """
        key = self._export_key(config)
        if key in self.store.graph_fingerprints:
            return self.store.graph_fingerprints[key]
        cache = self.store.disk_cache
        definition = self._definition if cache is not None else None
        if cache is None or definition is None:
            value = graph_fingerprint(self.exported(config))
        else:
            record, _ = cache.get_or_build_record(
                self._definition_key("graph", config, definition),
                "graph",
                lambda: {"graph": graph_fingerprint(self.exported(config))},
            )
            value = str(record.get("graph"))
        self.store.graph_fingerprints[key] = value
        return value

    def _calibration_fingerprint(self, config: QuantizeConfig) -> tuple[list[Any], str]:
        """The calibration items and their fingerprint, read once (the dataset may be a one-shot generator)."""
        if config.subset_size not in self._calibration_read:
            items = calibration_items(self._calibration(), config.subset_size)
            self._calibration_read[config.subset_size] = (items, tensors_fingerprint(items))
        return self._calibration_read[config.subset_size]

    def _quantize_key(self, config: QuantizeConfig, calibration_fp: str) -> tuple:
        return ("quantize", *self._model_key, calibration_fp, config.quantizer_key())

    def _program_disk_key(self, config: QuantizeConfig, calibration_fp: str) -> str:
        return cache_key(
            "program",
            *self._model_key,
            self.graph_fingerprint(config),
            calibration_fp,
            config.quantizer_key(),
            versions_part(),
        )

    def quantized(self, config: QuantizeConfig) -> torch.fx.GraphModule:
        items, calibration_fp = self._calibration_fingerprint(config)

        def build() -> tuple[Any, str]:
            detail = f"{config.method}, {len(items)} calibration item(s)"
            cache = self.store.disk_cache
            if cache is None:
                return quantize(self.exported(config), config, items, name=self.name), detail
            graph, status = cache.get_or_build_program(
                self._program_disk_key(config, calibration_fp),
                lambda: quantize(self.exported(config), config, items, name=self.name),
                self.example_inputs,
                dynamic_shapes=batch_dynamic_shapes(self.example_inputs) if config.dynamic_batch else None,
            )
            return graph, f"{detail}, {CACHE_STATUS[status]}"

        return self.store.get_or_build(self._quantize_key(config, calibration_fp), self.name, "quantize", build)

    def lowered(self, config: QuantizeConfig, *, quantized: bool, timing: bool = False) -> LoweredModel:
        """The (INT8 or FP32) model lowered to OpenVINO; with the disk cache, replayed when possible.

        ``timing=True``: the module a timed section may use, never a replayed torch.compile lowering
        (see ``flow.replay``); the real one is then built.
        """
        step = "lower INT8" if quantized else "lower FP32"
        name = f"{self.name} {'INT8' if quantized else 'FP32'}"
        if quantized:
            _, calibration_fp = self._calibration_fingerprint(config)
            source_key = self._quantize_key(config, calibration_fp)
            source: Callable[[], torch.fx.GraphModule] = lambda: self.quantized(config)  # noqa: E731
            disk_source: Callable[[], str] = lambda: self._program_disk_key(config, calibration_fp)  # noqa: E731
        else:
            source_key = self._export_key(config)
            source = lambda: self.exported(config)  # noqa: E731
            disk_source = lambda: cache_key("fp32", *self._model_key, self.graph_fingerprint(config), versions_part())  # noqa: E731
        key = ("lower", *source_key, config.lowering_key(), quantized)
        compile_cache_dir = str(self.store.disk_cache.root / "openvino") if self.store.disk_cache else None

        def lower_now() -> LoweredModel:
            lowered = lower(source(), self.example_inputs, config, quantized=quantized, name=name, compile_cache_dir=compile_cache_dir)
            lowered.config = config.to_dict()
            return lowered

        def build_real() -> LoweredModel:  # a replayed torch.compile lowering's real one, built once
            return self.store.get_or_build(("real", *key), self.name, f"{step} (torch.compile)", lambda: _described(lower_now()))

        def build() -> tuple[Any, str]:
            cache = self.store.disk_cache
            if cache is None:
                return _described(lower_now())
            not_stored: list[str] = []

            def to_ir(lowered: LoweredModel) -> Any:
                stored = replay_record(lowered, self.example_inputs)
                if isinstance(stored, str):
                    not_stored.append(stored)
                    return None
                return stored

            def from_ir(ir: Any, record: dict[str, Any]) -> LoweredModel:
                lowered = replay(
                    ir, record, config, quantized=quantized, name=name, compile_cache_dir=compile_cache_dir, build_real=build_real
                )
                lowered.config = config.to_dict()
                return lowered

            disk_key = cache_key("lowering", disk_source(), config.lowering_key(), versions_part())
            if config.lowering == "export":
                lowered, status = self._export_lowering(disk_key, source, config, quantized, name, compile_cache_dir, not_stored)
            else:
                lowered, status = cache.get_or_build_ir(disk_key, lower_now, to_ir, from_ir)
                if status != "hit" and compile_cache_dir:
                    # OpenVINO keys its blob cache by the IR it compiles, and the IR read back from
                    # the entry hashes unlike the in-memory one the lowering compiled: compile the
                    # stored one now, so that a first warm run imports blobs instead of compiling.
                    # (Should that fail, the warm run's load fails too and rebuilds, with a warning.)
                    with contextlib.suppress(LoweringError):
                        cache.read_ir(disk_key, from_ir)
            lowered, detail = _described(lowered)
            detail += f", {CACHE_STATUS[status]}"
            if not_stored:
                detail += f" (not cached: {not_stored[0]})"
            return lowered, detail

        lowered = self.store.get_or_build(key, self.name, step, build)
        if timing and is_replayed_torch_compile(lowered):
            return lowered.module.real()
        return lowered

    def fp32_outputs_store(self, eval_dataset: Any, chunk_size: int, machine: str) -> RecordedOutputsStore | None:
        """Where the FP32 model's outputs over ``eval_dataset`` are kept across runs, if they can be.

        The key: the model (weights, definition), the evaluation inputs, the chunk size, the stack's
        versions and the machine (CPU kernels and thread count change float results). None without
        the disk cache, for a model whose definition is not stable across runs, and for a dataset
        that is not an in-memory list or tuple (fingerprinting a generator would consume it, a
        DataLoader would read and decode everything twice).
        """
        cache = self.store.disk_cache
        if cache is None or self._definition is None or not isinstance(eval_dataset, (list, tuple)):
            return None
        try:
            # the inputs only: targets do not change what the model outputs
            data = tensors_fingerprint(item[0] for item in eval_dataset)
        except Exception:  # not (inputs, target) pairs: the evaluation itself says what is wrong
            return None
        key = cache_key("fp32-outputs", *self._model_key, self._definition, data, str(chunk_size), machine, versions_part())
        return RecordedOutputsStore(cache, key)

    def _export_lowering(
        self,
        disk_key: str,
        source: Callable[[], torch.fx.GraphModule],
        config: QuantizeConfig,
        quantized: bool,
        name: str,
        compile_cache_dir: str | None,
        not_stored: list[str],
    ) -> tuple[LoweredModel, str]:
        """The export lowering through the disk cache: its IR is stored once converted, then compiled.

        Compiling outside the cached step: where the CPU plugin cannot compile the IR, the failure
        comes back on every run, but the conversion is not redone.
        """
        cache = self.store.disk_cache
        assert cache is not None

        def to_ir(converted: tuple[Any, Any]) -> Any:
            ir, out_spec = converted
            record = ir_record("export", None, out_spec, self.example_inputs)
            if isinstance(record, str):
                not_stored.append(record)
                return None
            return ir, record

        def from_ir(ir: Any, record: dict[str, Any]) -> tuple[Any, Any]:
            return ir, treespec_loads(record["out_spec"])

        (ir, out_spec), status = cache.get_or_build_ir(
            disk_key, lambda: convert_export_lowering(source(), self.example_inputs, name=name), to_ir, from_ir
        )
        if status != "hit":
            # compile the IR as later runs read it back: OpenVINO's blob cache is keyed by the IR
            # compiled, and the read-back one hashes unlike the converter's in-memory one
            ir, out_spec = cache.read_ir(disk_key, from_ir) or (ir, out_spec)
        lowered = compile_export_lowering(
            ir,
            out_spec,
            config,
            quantized=quantized,
            model_inputs=count_model_inputs(self.example_inputs),
            name=name,
            compile_cache_dir=compile_cache_dir,
            notes=[REPLAY_NOTE] if status == "hit" else (),
        )
        return lowered, status


def _described(lowered: LoweredModel) -> tuple[LoweredModel, str]:
    """The progress line's detail for a lowering."""
    report = lowered.report
    detail = f"{report.lowering}/{report.backend or 'openvino.Core'}: {report.n_irs} IR(s)"
    if report.quantized:
        detail += f", {report.int8_layers}/{report.quantized_layers} quantized layers int8"
    return lowered, detail
