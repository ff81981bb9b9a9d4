"""Machine-readable results: JUnit properties per gated test, the JSON results file, the CI step summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from . import compat
from .atomic import atomic_write_text
from .gate_runner import GateOutcome

RESULTS_SCHEMA_VERSION = 1


def junit_properties(outcome: GateOutcome) -> list[tuple[str, Any]]:
    """(name, value) pairs for ``record_property`` / JUnit XML."""
    props: list[tuple[str, Any]] = [("ovq_gate_verdict", outcome.verdict)]
    for row in outcome.rows:
        if row.gate == "accuracy":
            props += [
                (f"ovq_{row.name}_fp32", row.fp32),
                (f"ovq_{row.name}_int8", row.int8),
                (f"ovq_{row.name}_drop", row.drop),
                (f"ovq_{row.name}_status", row.status),
            ]
        else:
            props += [("ovq_speedup", row.int8), ("ovq_speedup_baseline", row.name), ("ovq_speedup_status", row.status)]
    return [(name, value) for name, value in props if value is not None]


def results_payload(
    outcomes: Sequence[GateOutcome], machine: tuple[str, dict[str, Any]], lowerings: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    machine_id, details = machine
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "stack": compat.stack_versions(),
        "machine": {"id": machine_id, **details},
        "gates": [o.to_dict() for o in sorted(outcomes, key=lambda o: o.node_id)],
        "lowerings": list(lowerings),
    }


def write_results(path: Path, payload: dict[str, Any]) -> None:
    import json

    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def append_markdown(path: Path, text: str) -> None:
    """Append to GitHub's step summary (appending is what the runner expects; not atomic by design)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
