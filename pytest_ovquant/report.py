"""End-of-run terminal output: the header line and the lowering table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from . import compat
from .flow.lower import LoweredModel
from .measure.machine import SATURATING_INT8_CLASSES, int8_isa_class

if TYPE_CHECKING:
    from .gate_runner import GateOutcome
    from .gates import GateRow


def header_line() -> str:
    versions = compat.stack_versions()
    stack = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    parts = [f"ovquant: {stack}"]
    try:
        quantizer = compat.find_openvino_quantizer().module
    except Exception as error:  # shown, not raised: a test that needs it will fail with the reason
        quantizer = f"not found ({error.__class__.__name__})"
    try:
        pt2e = compat.find_pt2e_functions().module
    except Exception as error:
        pt2e = f"not found ({error.__class__.__name__})"
    backend = "ovquant_openvino" if compat.needs_own_compile_backend() else "openvino"
    parts.append(f"OpenVINOQuantizer from {quantizer}; prepare/convert_pt2e from {pt2e}; torch.compile auto backend: {backend}")
    return "\n".join(parts)


def lowering_summary(lowered: LoweredModel) -> dict:
    """Plain data for the lowering table and the results file (also what xdist workers send)."""
    return {"model": lowered.name, "variant": config_variant(lowered.config), **lowered.report.to_dict()}


# Config fields worth naming in a table row when they differ from the defaults.
_VARIANT_FIELDS = ("preset", "model_type", "ignored_scope", "target_device", "method", "smooth_quant", "compile_backend")
_VARIANT_DEFAULTS = {"preset": None, "model_type": None, "ignored_scope": {}, "target_device": "ANY",
                     "method": "prepare_convert", "smooth_quant": False, "compile_backend": "auto"}


def config_variant(config: dict) -> str:
    """'preset=mixed ignored_scope=names:linear_2' for the fields that differ from the defaults."""
    parts = []
    for key in _VARIANT_FIELDS:
        value = config.get(key, _VARIANT_DEFAULTS[key])
        if value == _VARIANT_DEFAULTS[key] or value is None:
            continue
        if key == "ignored_scope":
            value = ";".join(f"{k}:{','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items())
        parts.append(f"{key}={value}")
    return " ".join(parts) or "default"


def lowering_table(lowerings: Sequence[dict]) -> list[str]:
    """One row per lowered module (``lowering_summary`` dicts): what runs and whether it is what it claims."""
    rows = [("model", "config", "lowering", "backend", "IRs", "FQ", "int8 layers", "precisions", "status")]
    for r in lowerings:
        precisions = "; ".join(
            f"{kind} " + ",".join(f"{p}:{n}" for p, n in by.items()) for kind, by in r["precisions"].items()
        )
        rows.append(
            (
                r["model"],
                r.get("variant", "default"),
                r["lowering"],
                r["backend"] or "openvino.Core",
                str(r["n_irs"]),
                str(r["fake_quantize"]),
                f"{r['int8_layers']}/{r['quantized_layers']}" if r["quantized"] else "-",
                precisions or "-",
                "PROBLEM" if r["problems"] else "ok" + (f" ({len(r['pytorch_ops'])} op(s) in PyTorch)" if r.get("pytorch_ops") else ""),
            )
        )
    return _table(rows)


# -- gates ------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.1f}"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def gate_rows_table(rows: Sequence["GateRow"]) -> list[str]:
    """obtained / reference / difference / allowed per metric (FP32 column: baseline ms for speed)."""
    table = [("gate", "metric", "FP32", "INT8 (obtained)", "drop", "reference", "difference", "allowed", "status")]
    for r in rows:
        speed = r.gate == "speedup"
        table.append(
            (
                r.gate,
                r.name,
                f"{_fmt(r.fp32, 2)} ms" if speed and r.fp32 is not None else _fmt(r.fp32),
                (f"{_fmt(r.int8, 3)}x" + (f" [{r.interval[0]:.3g}, {r.interval[1]:.3g}]" if r.interval else ""))
                if speed
                else _fmt(r.int8),
                _fmt(r.drop) + (f" [{r.interval[0]:.4f}, {r.interval[1]:.4f}]" if r.interval and not speed else ""),
                (f"{_fmt(r.reference, 3)}x" if speed else _fmt(r.reference)) if r.reference is not None else "-",
                _fmt(r.difference),
                r.allowed,
                r.status,
            )
        )
    return _table(table)


def update_command(node_id: str) -> str:
    return f"pytest '{node_id}' --ovq-update-refs"


def gate_failure_message(outcome: "GateOutcome") -> str:
    lines = [f"pytest-ovquant gates for {outcome.model} ({outcome.node_id}):"]
    lines += gate_rows_table(outcome.rows)
    for row in outcome.rows:
        lines += [f"- {row.name}: {reason}" for reason in row.reasons]
        lines += [f"  {row.name}: {note}" for note in row.notes]
    missing = any(r.status == "no reference" for r in outcome.rows)
    if outcome.updated:
        lines.append(f"reference updated in {outcome.reference_file}: review the diff, then rerun")
    elif any(r.nonfinite for r in outcome.rows):
        lines.append(f"reference: {outcome.reference_file}; NaN/Inf outputs are never recorded: fix them first")
    elif missing:
        lines.append(f"no reference for this test in {outcome.reference_file}; to record the values above:")
        lines.append(f"    {update_command(outcome.node_id)}")
    else:
        lines.append(f"reference: {outcome.reference_file}" + (f" (+ {', '.join(outcome.applied_overrides)})" if outcome.applied_overrides else ""))
        lines.append("if this change is intended, update the reference:")
        lines.append(f"    {update_command(outcome.node_id)}")
    lines += [f"note: {n}" for n in outcome.notes]
    return "\n".join(lines)


def summary_table(outcomes: Sequence["GateOutcome"]) -> list[str]:
    """One row per gated test: metric FP32 / INT8 / drop, speedup, gate status."""
    table = [("test", "metric", "FP32", "INT8", "drop", "speedup", "status")]
    for outcome in outcomes:
        accuracy = [r for r in outcome.rows if r.gate == "accuracy"]
        speed = next((r for r in outcome.rows if r.gate == "speedup"), None)
        speed_text = f"{speed.int8:.2f}x {speed.name.split()[-1]}" if speed else "-"
        status = outcome.verdict + (" (ref updated)" if outcome.updated else "")
        if not accuracy:
            table.append((outcome.node_id, "-", "-", "-", "-", speed_text, status))
        for index, row in enumerate(accuracy):
            table.append(
                (
                    outcome.node_id if index == 0 else "",
                    row.name,
                    _fmt(row.fp32),
                    _fmt(row.int8),
                    _fmt(row.drop),
                    speed_text if index == 0 else "",
                    status if index == 0 else "",
                )
            )
    return _table(table)


def markdown_summary(outcomes: Sequence["GateOutcome"], header: str) -> str:
    lines = ["### pytest-ovquant gates", "", header.replace("\n", "  \n"), ""]
    lines.append("| test | metric | FP32 | INT8 | drop | speedup | status |")
    lines.append("|---|---|---|---|---|---|---|")
    for outcome in outcomes:
        accuracy = [r for r in outcome.rows if r.gate == "accuracy"] or [None]
        speed = next((r for r in outcome.rows if r.gate == "speedup"), None)
        for row in accuracy:
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"`{outcome.node_id}`",
                        row.name if row else "-",
                        _fmt(row.fp32) if row else "-",
                        _fmt(row.int8) if row else "-",
                        _fmt(row.drop) if row else "-",
                        f"{speed.int8:.2f}x" if speed else "-",
                        outcome.verdict,
                    ]
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def machine_line(details: dict) -> str:
    isa = ",".join(details.get("isa") or []) or "-"
    int8_class = int8_isa_class(details.get("isa") or [])
    saturates = " (no VNNI: INT8 dot products can saturate)" if int8_class in SATURATING_INT8_CLASSES else ""
    return (
        f"{details.get('cpu')}; ISA {isa}; INT8 class {int8_class}{saturates}; "
        f"{details.get('logical_cpus')} logical CPUs; "
        f"torch threads {details.get('torch_threads')}; OpenVINO precision hint {details.get('precision_hint')}"
    )
