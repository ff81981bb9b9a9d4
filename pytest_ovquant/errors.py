"""Errors raised by pytest-ovquant. Each message names the thing that is wrong and the way out."""

from __future__ import annotations


class OVQuantError(Exception):
    """Base class of every error this plugin raises on purpose."""


class ConfigError(OVQuantError, ValueError):
    """A marker argument, option or ini value is invalid."""


class MissingDependencyError(OVQuantError, ImportError):
    """A package the flow needs is not installed."""


class ExportError(OVQuantError):
    """torch.export could not capture the model."""


class QuantizeError(OVQuantError):
    """Quantization (prepare/calibrate/convert or quantize_pt2e) failed."""


class LoweringError(OVQuantError):
    """Lowering to OpenVINO failed outright (as opposed to running, but not in int8)."""
