"""End-of-run terminal output: the header line and the lowering table."""

from __future__ import annotations

from typing import Sequence

from . import compat
from .flow.lower import LoweredModel


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


def lowering_table(models: Sequence[LoweredModel]) -> list[str]:
    """One row per lowered module: what runs and whether it is what it claims."""
    rows = [("model", "lowering", "backend", "IRs", "FQ", "int8 layers", "precisions", "status")]
    for lowered in models:
        r = lowered.report
        precisions = "; ".join(
            f"{kind} " + ",".join(f"{p}:{n}" for p, n in by.items()) for kind, by in r.precision_counts().items()
        )
        rows.append(
            (
                lowered.name,
                r.lowering,
                r.backend or "openvino.Core",
                str(r.n_irs),
                str(r.fake_quantize),
                f"{r.int8_layers}/{r.quantized_layers}" if r.quantized else "-",
                precisions or "-",
                "ok" if r.ok else "PROBLEM",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
