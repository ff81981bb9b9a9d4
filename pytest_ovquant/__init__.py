"""pytest-ovquant: PT2E quantization with NNCF's OpenVINOQuantizer, lowered to OpenVINO, as a gated pytest flow."""

from .config import QuantizeConfig, make_config
from .errors import (
    ConfigError,
    ExportError,
    LoweringError,
    MissingDependencyError,
    OVQuantError,
    QuantizeError,
)
from .flow import LoweredModel, build_quantizer, export_model, lower, quantize
from .verify import LoweringReport

__version__ = "0.1.0"

__all__ = [
    "QuantizeConfig",
    "make_config",
    "OVQuantError",
    "ConfigError",
    "ExportError",
    "QuantizeError",
    "LoweringError",
    "MissingDependencyError",
    "export_model",
    "build_quantizer",
    "quantize",
    "lower",
    "LoweredModel",
    "LoweringReport",
]
