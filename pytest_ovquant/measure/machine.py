"""The machine fingerprint: a speed reference is only comparable on the machine it was taken on."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from typing import Any

# ISA features that change which int8/bf16 kernels OpenVINO picks.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    model, flags = platform.processor() or platform.machine(), ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    present = set(value.split())
                    flags = tuple(f for f in ISA_FLAGS if f in present)
    except OSError:
        pass
    return model, flags


# INT8 dot-product classes, best first. Without VNNI (AVX2, AVX-512F) the u8*s8 dot product goes
# through a saturating 16-bit intermediate (OpenVINO's "saturation issue"), so INT8 outputs differ
# from a VNNI/AMX machine's by far more than kernel noise: accuracy references are kept per class.
INT8_ISA_CLASSES = ("amx", "vnni", "avx512", "avx2", "baseline")
SATURATING_INT8_CLASSES = ("avx512", "avx2", "baseline")


def int8_isa_class(flags: tuple[str, ...] | list[str] | None = None) -> str:
    """This CPU's INT8 class (one of INT8_ISA_CLASSES), from its ISA flags (default: this machine's)."""
    present = set(_cpuinfo()[1] if flags is None else flags)
    if "amx_int8" in present:
        return "amx"
    if present & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    if "avx512f" in present:
        return "avx512"
    if "avx2" in present:
        return "avx2"
    return "baseline"


def default_precision_hint() -> str | None:
    """OpenVINO's INFERENCE_PRECISION_HINT for CPU on this machine (bf16 where the CPU has it)."""
    try:
        import openvino as ov

        hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
        return hint.to_string() if hasattr(hint, "to_string") else str(hint)
    except Exception:
        return None


def machine_info(*, torch_threads: int | None = None, precision_hint: str | None = None) -> dict[str, Any]:
    """What decides speed here: CPU model, ISA flags, threads, OpenVINO's precision hint."""
    import torch

    model, flags = _cpuinfo()
    return {
        "cpu": model,
        "isa": list(flags),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch_threads if torch_threads is not None else torch.get_num_threads(),
        "precision_hint": precision_hint if precision_hint is not None else default_precision_hint(),
    }


def fingerprint(info: dict[str, Any]) -> str:
    """Short stable id of ``machine_info()``."""
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:12]
