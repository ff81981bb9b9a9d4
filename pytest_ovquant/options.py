"""Command-line options (one ``--ovq-*`` group) and their ``[tool.pytest.ini_options]`` twins.

Precedence, lowest first: built-in default < ini key < command line < ``@pytest.mark.ovq_quantize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from .config import COMPILE_BACKENDS, LOWERINGS, METHODS, PRESETS, TARGET_DEVICES


@dataclass(frozen=True)
class ConfigOption:
    """A config key settable from the command line (``flag``) and from ini (``ini``)."""

    key: str
    flag: str
    help: str
    kind: str = "value"  # "value" | "true" (store_true) | "false" (store_true that sets False)

    @property
    def ini(self) -> str:
        return "ovq_" + self.key

    @property
    def dest(self) -> str:
        return "ovq_opt_" + self.key


CONFIG_OPTIONS: tuple[ConfigOption, ...] = (
    ConfigOption("preset", "--ovq-preset", f"OpenVINOQuantizer preset: {', '.join(PRESETS)}"),
    ConfigOption("model_type", "--ovq-model-type", "OpenVINOQuantizer model_type: transformer"),
    ConfigOption("target_device", "--ovq-target-device", f"OpenVINOQuantizer target_device: {', '.join(TARGET_DEVICES)}"),
    ConfigOption("method", "--ovq-method", f"quantization method: {', '.join(METHODS)}"),
    ConfigOption("smooth_quant", "--ovq-smooth-quant", "use NNCF quantize_pt2e with SmoothQuant", kind="true"),
    ConfigOption("subset_size", "--ovq-subset-size", "calibration items used (default 300)"),
    ConfigOption("lowering", "--ovq-lowering", f"lowering to OpenVINO: {', '.join(LOWERINGS)}"),
    ConfigOption(
        "compile_backend",
        "--ovq-compile-backend",
        f"torch.compile backend for lowering=torch.compile: {', '.join(COMPILE_BACKENDS)} "
        "(auto: ovquant_openvino on torch >= 2.13, OpenVINO's otherwise)",
    ),
    ConfigOption(
        "fp32_inference_precision",
        "--ovq-fp32-precision",
        "INFERENCE_PRECISION_HINT for the FP32 OpenVINO baseline: f32, bf16, f16 (default: OpenVINO's)",
    ),
    ConfigOption(
        "verify", "--ovq-no-verify", "do not fail tests whose INT8 module does not run int8", kind="false"
    ),
    ConfigOption("min_int8_fraction", "--ovq-min-int8-fraction", "fraction of quantized layers that must run int8 (default 1.0)"),
)


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ovquant", "PT2E quantization with OpenVINOQuantizer (pytest-ovquant)")
    for option in CONFIG_OPTIONS:
        if option.kind == "value":
            group.addoption(option.flag, dest=option.dest, default=None, help=option.help)
        else:
            group.addoption(option.flag, dest=option.dest, action="store_true", default=None, help=option.help)
        ini_help = option.help if option.kind == "value" else f"true/false: {option.key}"
        parser.addini(option.ini, help=ini_help, type="string", default="")
    group.addoption(
        "--ovq-update-refs",
        action="store_true",
        default=False,
        help="rewrite the references of gates that failed or had none (those tests still fail this run)",
    )
    group.addoption(
        "--ovq-regen-all",
        action="store_true",
        default=False,
        help="rewrite every gated test's reference; reference comparisons pass (code thresholds still apply)",
    )
    group.addoption(
        "--ovq-strict",
        action="store_true",
        default=False,
        help="an improvement beyond the tolerance fails too (record it with --ovq-update-refs)",
    )
    group.addoption("--ovq-results", metavar="PATH", default=None, help="write the gate results as JSON to PATH")
    group.addoption(
        "--ovq-reference-dir",
        metavar="DIR",
        default=None,
        help="where reference files live (default: <rootdir>/reference_metrics; ini: ovq_reference_dir)",
    )
    parser.addini("ovq_reference_dir", help="where reference files live (relative to rootdir)", default="")
    group.addoption(
        "--ovq-cache-dir",
        metavar="DIR",
        default=None,
        help="on-disk artifact cache (default: <rootdir>/.ovquant_cache; ini: ovq_cache_dir)",
    )
    parser.addini("ovq_cache_dir", help="on-disk artifact cache directory (relative to rootdir)", default="")
    group.addoption("--ovq-no-cache", action="store_true", default=False, help="do not read or write the artifact cache")
    group.addoption(
        "--ovq-clear-cache", action="store_true", default=False, help="empty the artifact cache before the run"
    )
    group.addoption(
        "--ovq-data-dir",
        metavar="DIR",
        default=None,
        help="an ImageFolder (DIR/<class>/<image>, optionally split in calibration/ and val/) for the "
        "ovq_image_folder_calibration / ovq_image_folder_eval fixtures (ini: ovq_data_dir)",
    )
    parser.addini("ovq_data_dir", help="ImageFolder for the ovq_image_folder_* fixtures (relative to rootdir)", default="")
    group.addoption(
        "--ovq-exit-gc",
        action="store_true",
        default=False,
        help="let Python run its last garbage collection at exit (skipped by default: with torch and OpenVINO "
        "loaded it takes 1-2 s and only frees memory the OS takes back)",
    )
    group.addoption(
        "--ovq-show-lowering",
        action="store_true",
        default=False,
        help="print every lowering report in the terminal summary (not only problems)",
    )


def config_layers(config: pytest.Config) -> list[tuple[str, dict[str, Any]]]:
    """(source, values) layers from ini then command line, for ``config.make_config``."""
    ini_values: dict[str, Any] = {}
    cli_values: dict[str, Any] = {}
    for option in CONFIG_OPTIONS:
        ini_value = config.getini(option.ini)
        if ini_value not in (None, "", []):
            ini_values[option.key] = ini_value
        cli_value = config.getoption(option.dest)
        if cli_value is not None:
            cli_values[option.key] = (option.kind != "false") if option.kind != "value" else cli_value
    layers = []
    if ini_values:
        layers.append(("ini [ovq_* keys]", ini_values))
    if cli_values:
        layers.append(("command line (--ovq-*)", cli_values))
    return layers
