"""The PT2E flow, one module per step: export -> quantize -> lower (-> verify, in ..verify)."""

from .export import export_model
from .lower import LoweredModel, lower
from .quantize import build_quantizer, quantize

__all__ = ["export_model", "build_quantizer", "quantize", "lower", "LoweredModel"]
