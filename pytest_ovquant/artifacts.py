"""Build-once store of flow artifacts (exported, quantized, lowered) for a test session.

Keys are content fingerprints (model weights and class, input shapes, calibration data) plus the
config fields that matter for the step, so two tests that ask for the same thing share one build
whichever fixture scope the user's ``ovq_model`` has.

With an ``ArtifactCache`` the quantized program and the export lowering's IR also persist across
sessions (and xdist workers); the in-memory memo stays in front of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .cache import ArtifactCache, cache_key, graph_fingerprint, versions_part
from .config import QuantizeConfig
from .fingerprint import ModelFingerprints, inputs_signature, tensors_fingerprint
from .flow.export import batch_dynamic_shapes, export_model
from .flow.lower import IRConverter, LoweredModel, export_to_openvino, lower
from .flow.quantize import calibration_items, quantize

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
    # id(quantized graph) -> its disk-cache key, so the IR lowered from it gets a stable key
    program_keys: dict[int, str] = field(default_factory=dict)

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
        self._model_key = (store.fingerprints(model), inputs_signature(example_inputs))

    def _export_key(self, config: QuantizeConfig) -> tuple:
        return ("export", *self._model_key, config.dynamic_batch, config.strict_export)

    def exported(self, config: QuantizeConfig) -> torch.fx.GraphModule:
        def build() -> tuple[Any, str]:
            graph = export_model(
                self.model,
                self.example_inputs,
                name=self.name,
                dynamic_batch=config.dynamic_batch,
                strict=config.strict_export,
            )
            return graph, f"torch.export{' (dynamic batch)' if config.dynamic_batch else ''}"

        return self.store.get_or_build(self._export_key(config), self.name, "export", build)

    def _quantize_key(self, config: QuantizeConfig, calibration_fp: str) -> tuple:
        return ("quantize", *self._model_key, calibration_fp, config.quantizer_key())

    def quantized(self, config: QuantizeConfig) -> torch.fx.GraphModule:
        dataset = self._calibration()
        items = calibration_items(dataset, config.subset_size)
        calibration_fp = tensors_fingerprint(items)
        key = self._quantize_key(config, calibration_fp)

        def build() -> tuple[Any, str]:
            exported = self.exported(config)
            detail = f"{config.method}, {len(items)} calibration item(s)"
            cache = self.store.disk_cache
            if cache is None:
                return quantize(exported, config, items, name=self.name), detail
            disk_key = cache_key(
                "program",
                *self._model_key,
                graph_fingerprint(exported),
                calibration_fp,
                config.quantizer_key(),
                versions_part(),
            )
            graph, status = cache.get_or_build_program(
                disk_key,
                lambda: quantize(exported, config, items, name=self.name),
                self.example_inputs,
                dynamic_shapes=batch_dynamic_shapes(self.example_inputs) if config.dynamic_batch else None,
            )
            self.store.program_keys[id(graph)] = disk_key
            return graph, f"{detail}, {CACHE_STATUS[status]}"

        return self.store.get_or_build(key, self.name, "quantize", build)

    def _ir_converter(
        self, config: QuantizeConfig, source: torch.fx.GraphModule, quantized: bool
    ) -> tuple[IRConverter | None, list[str]]:
        """For the export lowering with a cache: a converter serving the IR from disk, and its statuses."""
        cache = self.store.disk_cache
        statuses: list[str] = []
        if cache is None or config.lowering != "export":
            return None, statuses
        if quantized and id(source) in self.store.program_keys:
            ir_key = cache_key("ir", self.store.program_keys[id(source)])
        else:
            ir_key = cache_key(
                "ir",
                "int8" if quantized else "fp32",
                *self._model_key,
                graph_fingerprint(source),
                versions_part(),
            )

        def convert(module: torch.nn.Module, example_inputs: tuple[Any, ...]) -> Any:
            model, status = cache.get_or_build_ir(ir_key, lambda: export_to_openvino(module, example_inputs))
            statuses.append(status)
            return model

        return convert, statuses

    def lowered(self, config: QuantizeConfig, *, quantized: bool) -> LoweredModel:
        if quantized:
            source = self.quantized(config)
            base_key: tuple = ("quantized", id(source))
        else:
            source = self.exported(config)
            base_key = self._export_key(config)
        key = ("lower", *base_key, config.lowering_key(), quantized)

        def build() -> tuple[Any, str]:
            convert, statuses = self._ir_converter(config, source, quantized)
            lowered = lower(
                source,
                self.example_inputs,
                config,
                quantized=quantized,
                name=f"{self.name} {'INT8' if quantized else 'FP32'}",
                convert=convert,
                compile_cache_dir=str(self.store.disk_cache.root / "openvino") if self.store.disk_cache else None,
            )
            lowered.config = config.to_dict()
            report = lowered.report
            detail = f"{report.lowering}/{report.backend or 'openvino.Core'}: {report.n_irs} IR(s)"
            if quantized:
                detail += f", {report.int8_layers}/{report.quantized_layers} quantized layers int8"
            if statuses:
                detail += f", IR {CACHE_STATUS[statuses[-1]]}"
            return lowered, detail

        return self.store.get_or_build(key, self.name, "lower INT8" if quantized else "lower FP32", build)
