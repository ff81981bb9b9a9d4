"""Plugin state: one ``SessionState`` per pytest run and one ``GateContext`` per gated test.

Kept apart from the hooks (``plugin``) so that other modules can read the state without importing
the plugin; both live in ``config.stash`` / ``item.stash`` under the keys below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import report
from .artifacts import ArtifactStore
from .config import QuantizeConfig
from .flow.lower import LoweredModel
from .gate_runner import GateOutcome, GatePlan, UpdateMode
from .measure import machine
from .measure.exclusive import MachineLock
from .measure.recorded import RecordedOutputsStore
from .references import ReferenceStore


@dataclass
class SessionState:
    """Plugin state for one pytest run (kept in ``config.stash``)."""

    store: ArtifactStore
    references: ReferenceStore
    mode: UpdateMode
    option_layers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outcomes: list[GateOutcome] = field(default_factory=list)
    machine_lock: MachineLock | None = None  # timed sections alone, across xdist workers
    remote_lowerings: list[dict[str, Any]] = field(default_factory=list)  # sent by xdist workers
    written_references: list[Path] = field(default_factory=list)
    reference_error: str | None = None  # why staged references could not be written (disk full, ...)
    _machine: tuple[str, dict[str, Any]] | None = None

    def lowerings(self) -> list[dict[str, Any]]:
        """This process's lowerings and the workers', in a stable order (so -n 0 and -n N agree)."""
        local = [report.lowering_summary(m) for m in self.store.lowered_models()]
        unique: dict[tuple, dict[str, Any]] = {}
        for row in local + self.remote_lowerings:  # each xdist worker lowers what its tests need
            unique.setdefault((row["model"], row.get("variant"), row["lowering"], row["backend"], row["quantized"]), row)
        return sorted(unique.values(), key=lambda r: (r["model"], r["lowering"], not r["quantized"], r.get("variant") or ""))

    def sorted_outcomes(self) -> list[GateOutcome]:
        return sorted(self.outcomes, key=lambda o: o.node_id)

    def machine(self) -> tuple[str, dict[str, Any]]:
        """(fingerprint id, details), computed once: speed references are only compared on the same one."""
        if self._machine is None:
            details = machine.machine_info()
            self._machine = (machine.fingerprint(details), details)
        return self._machine


@dataclass
class GateContext:
    """What a gated test's gates need, resolved at setup (so build errors are setup errors)."""

    plan: GatePlan
    config: QuantizeConfig
    model_name: str
    fp32_model: Any
    int8_model: LoweredModel
    example_inputs: tuple[Any, ...]
    eval_dataset: Any = None
    baseline_model: Any = None
    fp32_outputs: RecordedOutputsStore | None = None  # the FP32 side of the evaluation, kept across runs


SESSION_KEY = pytest.StashKey[SessionState]()
# Lowered models a test was served, with the verify flag of that test's config.
SERVED_KEY = pytest.StashKey[list[tuple[LoweredModel, bool]]]()
GATE_KEY = pytest.StashKey[GateContext]()
