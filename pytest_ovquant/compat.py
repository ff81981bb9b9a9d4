"""The one place that knows where things live across torch / torchao / nncf / executorch releases.

Locations moved between releases (see the project README, "Support matrix"):
- ``OpenVINOQuantizer``: ``nncf.experimental.torch.fx`` up to nncf 3.1; from nncf 3.2 in
  ``executorch.backends.openvino.quantizer`` (mode-based constructor).
- ``prepare_pt2e`` / ``convert_pt2e``: ``torch.ao.quantization.quantize_pt2e`` up to torch 2.9,
  ``torchao.quantization.pt2e.quantize_pt2e`` afterwards (torch >= 2.10 removed the former).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from .errors import MissingDependencyError

# Candidates in the order they are tried; the first importable one wins.
QUANTIZER_LOCATIONS: tuple[tuple[str, str], ...] = (
    ("nncf.experimental.torch.fx", "OpenVINOQuantizer"),
    ("executorch.backends.openvino.quantizer", "OpenVINOQuantizer"),
)
PT2E_LOCATIONS: tuple[str, ...] = (
    "torchao.quantization.pt2e.quantize_pt2e",
    "torch.ao.quantization.quantize_pt2e",
)
# torch releases on which OpenVINO's own torch.compile backend turns every weight into a
# runtime input of the IR (its replace_params_with_constants freezes nothing there).
OWN_BACKEND_FROM_TORCH: tuple[int, int] = (2, 13)


@dataclass(frozen=True)
class QuantizerLocation:
    cls: type
    module: str


@dataclass(frozen=True)
class PT2EFunctions:
    prepare_pt2e: Callable[..., Any]
    convert_pt2e: Callable[..., Any]
    module: str


def _try_import(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
    except Exception:  # a broken optional package must not hide the other candidates
        return None


@lru_cache(maxsize=None)
def find_openvino_quantizer() -> QuantizerLocation:
    """Return the importable ``OpenVINOQuantizer`` class, or say which packages provide it."""
    for module_name, attr in QUANTIZER_LOCATIONS:
        module = _try_import(module_name)
        if module is not None and hasattr(module, attr):
            return QuantizerLocation(getattr(module, attr), module_name)
    raise MissingDependencyError(
        "OpenVINOQuantizer is not importable from "
        + " or ".join(f"{m}.{a}" for m, a in QUANTIZER_LOCATIONS)
        + ". Install 'nncf<=3.1' (it ships nncf.experimental.torch.fx.OpenVINOQuantizer), "
        "or newer nncf together with 'executorch' (executorch.backends.openvino.quantizer)."
    )


@lru_cache(maxsize=None)
def find_pt2e_functions() -> PT2EFunctions:
    """Return ``prepare_pt2e`` / ``convert_pt2e`` from torchao or torch.ao, whichever exists."""
    for module_name in PT2E_LOCATIONS:
        module = _try_import(module_name)
        if module is not None and hasattr(module, "prepare_pt2e") and hasattr(module, "convert_pt2e"):
            return PT2EFunctions(module.prepare_pt2e, module.convert_pt2e, module_name)
    raise MissingDependencyError(
        "prepare_pt2e/convert_pt2e are not importable from "
        + " or ".join(PT2E_LOCATIONS)
        + ". On torch >= 2.10 install 'torchao' (pip install torchao); "
        "torch <= 2.9 ships them in torch.ao.quantization.quantize_pt2e."
    )


def find_nncf_quantize_pt2e() -> Callable[..., Any]:
    """NNCF's ``quantize_pt2e`` (SmoothQuant / bias correction); it duck-types the quantizer."""
    module = _try_import("nncf.experimental.torch.fx")
    if module is None or not hasattr(module, "quantize_pt2e"):
        raise MissingDependencyError(
            "nncf.experimental.torch.fx.quantize_pt2e is not importable: install 'nncf>=3.0' "
            "(nncf >= 3.4 also needs 'torchao')."
        )
    return module.quantize_pt2e


def parse_version(text: str) -> tuple[int, ...]:
    """'2.14.1+cu130' -> (2, 14, 1); '2.10.0rc1' -> (2, 10, 0); '3.1.0.dev0' -> (3, 1, 0).

    Only the leading numeric release segments count; a pre/dev/local tail ends the version.
    """
    parts: list[int] = []
    for piece in text.split("+")[0].split("."):
        if piece.isdigit():
            parts.append(int(piece))
            continue
        leading = ""
        for ch in piece:
            if not ch.isdigit():
                break
            leading += ch
        if leading:
            parts.append(int(leading))
        break
    return tuple(parts)


def torch_version() -> tuple[int, ...]:
    import torch

    return parse_version(torch.__version__)


def needs_own_compile_backend() -> bool:
    """True where OpenVINO's torch.compile backend would leave weights as runtime inputs."""
    return torch_version()[:2] >= OWN_BACKEND_FROM_TORCH


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


STACK_PACKAGES: tuple[str, ...] = ("torch", "torchvision", "torchao", "nncf", "openvino", "executorch")


def stack_versions() -> dict[str, str | None]:
    """Versions of the packages the flow depends on (None: not installed), plus Python."""
    versions = {name: package_version(name) for name in STACK_PACKAGES}
    versions["python"] = platform.python_version()
    return versions
