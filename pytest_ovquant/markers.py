"""Marker registration and parsing (``--strict-markers`` clean; wrong arguments name the marker)."""

from __future__ import annotations

from typing import Any

import pytest

from .config import CONFIG_KEYS
from .errors import ConfigError

QUANTIZE_MARKER = "ovq_quantize"

MARKERS: dict[str, str] = {
    QUANTIZE_MARKER: (
        f"{QUANTIZE_MARKER}(**config): how pytest-ovquant quantizes and lowers this test's model "
        f"(keys: {', '.join(CONFIG_KEYS)})"
    ),
    "ovq_accuracy": (
        "ovq_accuracy(metric='top1', max_drop=None, max_relative_drop=None, min_value=None, tolerance=0.001): "
        "gate the INT8 metric against FP32 and against the stored reference (reference_metrics/)"
    ),
    "ovq_speedup": (
        "ovq_speedup(min=1.5, baseline='eager'|'ov_fp32', tolerance=0.1, rounds=30, warmup=3): "
        "gate the INT8 speedup over the baseline and against the reference taken on this machine"
    ),
}


def register(config: pytest.Config) -> None:
    for text in MARKERS.values():
        config.addinivalue_line("markers", text)


def quantize_marker_layers(item: pytest.Item) -> list[tuple[str, dict[str, Any]]]:
    """(source, kwargs) layers from ``ovq_quantize`` markers, outermost (module/class) first."""
    marks = list(item.iter_markers(QUANTIZE_MARKER))  # closest first
    layers = []
    for mark in reversed(marks):
        if mark.args:
            raise ConfigError(
                f"@pytest.mark.{QUANTIZE_MARKER} on {item.nodeid}: takes keyword arguments only, "
                f"got positional {mark.args!r}"
            )
        layers.append((f"@pytest.mark.{QUANTIZE_MARKER} on {item.nodeid}", dict(mark.kwargs)))
    return layers
