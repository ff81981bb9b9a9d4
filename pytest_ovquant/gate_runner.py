"""Run a gated test's gates: evaluate, time, decide against the stored reference, stage updates.

The plugin calls ``plan_for(item)`` at setup and ``run_gates(...)`` after the test body; the
outcome says whether the test fails, xfails (a recorded known regression) or passes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import torch

from . import compat
from .config import QuantizeConfig
from .errors import ConfigError
from .gates import (
    ACCURACY_MARKER,
    FAIL,
    IMPROVED,
    NEW,
    SPEEDUP_MARKER,
    AccuracyGate,
    GateRow,
    SpeedupGate,
    decide_accuracy,
    decide_speedup,
    parse_accuracy,
    parse_speedup,
)
from .measure.evaluation import EvaluationError, MetricResult, Progress, chunk_size, evaluate
from .measure.exclusive import MachineLock
from .measure.latency import SpeedupMeasurement, measure_speedup_adaptive
from .measure.machine import SATURATING_INT8_CLASSES, int8_isa_class
from .measure.recorded import RecordedOutputsStore
from .references import (
    MetricValues,
    ReferenceStore,
    SpeedupValues,
    TestReference,
    split_node_id,
)


@dataclass(frozen=True)
class GatePlan:
    accuracy: tuple[AccuracyGate, ...] = ()
    speedup: SpeedupGate | None = None


def plan_for(item: pytest.Item) -> GatePlan | None:
    """The gates on this test (markers on the test, its class or module); None when it has none."""
    accuracy = []
    for mark in item.iter_markers(ACCURACY_MARKER):
        accuracy.append(parse_accuracy(mark, f"@pytest.mark.{ACCURACY_MARKER} on {item.nodeid}"))
    speed_marks = list(item.iter_markers(SPEEDUP_MARKER))
    speedup = parse_speedup(speed_marks[0], f"@pytest.mark.{SPEEDUP_MARKER} on {item.nodeid}") if speed_marks else None
    if not accuracy and speedup is None:
        return None
    names = [gate.metric.name for gate in accuracy]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(
            f"@pytest.mark.{ACCURACY_MARKER} on {item.nodeid}: metric {', '.join(map(repr, twice))} is gated twice "
            "(markers on the test, its class and its module all apply); keep one marker per metric"
        )
    return GatePlan(tuple(accuracy), speedup)


@dataclass(frozen=True)
class UpdateMode:
    update_refs: bool = False  # rewrite references of failing/missing gates; those tests still fail
    regen_all: bool = False  # rewrite every gated test's reference; reference comparisons pass
    strict: bool = False  # an improvement beyond tolerance fails


@dataclass
class GateOutcome:
    """Everything about one gated test's gates, for the failure message and the reports."""

    node_id: str
    model: str
    rows: list[GateRow]
    reference_file: str
    machine: str
    config: dict[str, Any] = field(default_factory=dict)
    applied_overrides: list[str] = field(default_factory=list)
    xfail_reason: str | None = None
    updated: bool = False
    verdict: str = "passed"  # passed | failed | xfailed
    notes: list[str] = field(default_factory=list)
    staged_reference: dict[str, Any] | None = None  # the entry staged for writing (travels from xdist workers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "model": self.model,
            "verdict": self.verdict,
            "reference_file": self.reference_file,
            "reference_updated": self.updated,
            "applied_overrides": self.applied_overrides,
            "xfail_reason": self.xfail_reason,
            "machine": self.machine,
            "config": self.config,
            "notes": self.notes,
            "staged_reference": self.staged_reference,
            "rows": [
                {
                    "gate": r.gate,
                    "name": r.name,
                    "fp32": r.fp32,
                    "int8": r.int8,
                    "drop": r.drop,
                    "reference": r.reference,
                    "difference": r.difference,
                    "allowed": r.allowed,
                    "status": r.status,
                    "reasons": r.reasons,
                    "interval": r.interval,
                    "notes": r.notes,
                }
                for r in self.rows
            ],
        }


def outcome_from_dict(data: dict[str, Any]) -> GateOutcome:
    """Inverse of ``GateOutcome.to_dict`` (xdist workers send outcomes as plain data)."""
    rows = [GateRow(**row) for row in data["rows"]]
    return GateOutcome(
        node_id=data["node_id"],
        model=data["model"],
        rows=rows,
        reference_file=data["reference_file"],
        machine=data["machine"],
        config=data.get("config", {}),
        applied_overrides=list(data.get("applied_overrides", [])),
        xfail_reason=data.get("xfail_reason"),
        updated=data.get("reference_updated", False),
        verdict=data["verdict"],
        notes=list(data.get("notes", [])),
        staged_reference=data.get("staged_reference"),
    )


def measure_for_gate(
    gate: SpeedupGate, baseline: Callable[[], Any], candidate: Callable[[], Any], threshold: float | None
) -> SpeedupMeasurement:
    """The speed gate's measurement with the marker's settings; ``threshold`` lets it stop once decided."""
    return measure_speedup_adaptive(
        baseline,
        candidate,
        baseline_name=gate.baseline,
        warmup=gate.warmup,
        min_rounds=gate.rounds,
        max_rounds=gate.max_rounds,
        target_relative_width=gate.target_width,
        budget_seconds=gate.budget,
        threshold=threshold,
        confidence=gate.confidence,
    )


def _new_reference(
    key: str,
    rows: list[GateRow],
    config: QuantizeConfig,
    machine: str,
    machine_details: dict[str, Any],
    baseline: str | None,
    previous: TestReference | None,
) -> TestReference:
    metrics = {r.name: MetricValues(fp32=r.fp32, int8=r.int8, drop=r.drop) for r in rows if r.gate == "accuracy"}
    speed = next((r for r in rows if r.gate == "speedup"), None)
    versions = {k: v for k, v in compat.stack_versions().items() if v}
    return TestReference(
        key=key,
        metrics=metrics,
        speedup=SpeedupValues(value=speed.int8, baseline=baseline or "eager", machine=machine) if speed else None,
        quantizer=config.to_dict(),
        environment={**versions, "machine": {"id": machine, **machine_details}},
        # a recorded known-regression reason stays, unless it came from a per-stack override file
        xfail_reason=previous.xfail_reason if previous is not None and not previous.applied_overrides else None,
    )


def run_gates(
    plan: GatePlan,
    *,
    node_id: str,
    model_name: str,
    config: QuantizeConfig,
    fp32_model: Callable[..., Any],
    int8_model: Callable[..., Any],
    eval_dataset: Iterable[Any] | None,
    example_inputs: tuple[Any, ...],
    baseline_model: Callable[..., Any] | None,
    store: ReferenceStore,
    machine: str,
    machine_details: dict[str, Any],
    mode: UpdateMode,
    progress: Progress | None = None,
    machine_lock: MachineLock | None = None,
    fp32_outputs: RecordedOutputsStore | None = None,
) -> GateOutcome:
    """The gates of one test, decided; ``fp32_outputs``: FP32 outputs recorded in an earlier run."""
    reference = store.get(node_id)
    rows: list[GateRow] = []
    shared = machine_lock.shared if machine_lock is not None else contextlib.nullcontext
    exclusive = machine_lock.exclusive if machine_lock is not None else contextlib.nullcontext
    if plan.accuracy:

        def evaluate_with(fp32: Callable[..., Any]) -> dict[str, MetricResult]:
            return evaluate(
                fp32,
                int8_model,
                eval_dataset if eval_dataset is not None else [],
                [gate.metric for gate in plan.accuracy],
                batch_size=chunk_size(example_inputs),
                progress=progress,
            )

        with shared():
            try:
                results = (
                    fp32_outputs.evaluate(fp32_model, evaluate_with) if fp32_outputs is not None else evaluate_with(fp32_model)
                )
            except EvaluationError as error:
                raise EvaluationError(f"evaluating {model_name}: {error}") from error
        for gate in plan.accuracy:
            ref_values = reference.metrics.get(gate.metric.name) if reference is not None else None
            rows.append(decide_accuracy(gate, results[gate.metric.name], ref_values))
    if plan.speedup is not None:
        assert baseline_model is not None
        gate = plan.speedup
        ref_speed = reference.speedup if reference is not None else None
        comparable = ref_speed is not None and ref_speed.baseline == gate.baseline and ref_speed.machine == machine
        recording = mode.update_refs or mode.regen_all
        # Stop early only when the one threshold that matters is settled; with a reference to
        # compare with, or a reference to record, measure until the interval is narrow (or the budget).
        threshold = None if (comparable or recording) else gate.min
        with exclusive(), torch.no_grad():  # alone on the machine; the eager baseline without autograd
            measurement = measure_for_gate(
                gate, lambda: baseline_model(*example_inputs), lambda: int8_model(*example_inputs), threshold
            )
        row = decide_speedup(gate, measurement, ref_speed, machine)
        row.fp32 = measurement.baseline_median_ms
        row.drop = None
        rows.append(row)

    outcome = GateOutcome(
        node_id=node_id,
        model=model_name,
        rows=rows,
        reference_file=str(store.path_for(node_id)),
        machine=machine,
        config=config.to_dict(),
        applied_overrides=list(getattr(reference, "applied_overrides", []) or []),
        xfail_reason=reference.xfail_reason if reference is not None else None,
    )
    if reference is not None and plan.accuracy:
        absent = [g.metric.name for g in plan.accuracy if g.metric.name not in reference.metrics]
        unused = sorted(set(reference.metrics) - {g.metric.name for g in plan.accuracy})
        if absent and unused:
            outcome.notes.append(
                f"the reference entry has no {', '.join(map(repr, absent))} but has {', '.join(map(repr, unused))}, "
                "which no ovq_accuracy marker of this test gates (renamed or misspelt?); fix the name in "
                f"{outcome.reference_file}, or re-record the entry with --ovq-update-refs"
            )
    if mode.regen_all:  # the reference comparison is what is being regenerated: it passes
        for row in rows:
            if row.status in (FAIL, IMPROVED, NEW) and not row.threshold_failed:
                row.status = "regenerated"
    failing = [r for r in rows if r.status == FAIL]
    missing = [r for r in rows if r.status == NEW]
    improved = [r for r in rows if r.status == IMPROVED]
    wants_update = mode.regen_all or (mode.update_refs and (failing or missing or (improved and mode.strict)))
    if wants_update and any(r.nonfinite for r in rows):  # a NaN/Inf value is never recorded
        wants_update = False
        outcome.notes.append("reference not updated: the outputs are not finite (NaN/Inf); fix that first")
    if wants_update:
        key = split_node_id(node_id)[1]
        new_reference = _new_reference(
            key, rows, config, machine, machine_details, plan.speedup.baseline if plan.speedup else None, reference
        )
        store.stage(node_id, new_reference)
        outcome.staged_reference = new_reference.to_dict()
        outcome.updated = True
    if failing or missing or (improved and mode.strict and not mode.regen_all):
        outcome.verdict = "failed"
    if outcome.verdict == "failed" and outcome.xfail_reason and not outcome.updated:
        outcome.verdict = "xfailed"
    if improved and not mode.strict:
        outcome.notes.append("improved beyond tolerance: record it with --ovq-update-refs (fails with --ovq-strict)")
    if any(r.gate == "accuracy" for r in failing) and reference is not None:
        note = _isa_class_note(reference, machine_details, store.path_for(node_id))
        if note:
            outcome.notes.append(note)
    return outcome


def _isa_class_note(reference: TestReference, machine_details: dict[str, Any], base: Path) -> str | None:
    """Say so when the reference was recorded on a CPU of another INT8 class (VNNI vs saturating)."""
    recorded = ((reference.environment or {}).get("machine") or {}).get("isa")
    if recorded is None:
        return None
    theirs, ours = int8_isa_class(recorded), int8_isa_class(machine_details.get("isa") or [])
    if theirs == ours:
        return None
    why = " (no VNNI: INT8 dot products can saturate)" if ours in SATURATING_INT8_CLASSES else ""
    override = base.with_name(f"{base.stem}@isa-{ours}.yaml")
    return (
        f"the reference was recorded on a CPU of INT8 class {theirs}; this one is {ours}{why}: INT8 outputs "
        f"differ between these classes; keep this class's values in {override}"
    )
