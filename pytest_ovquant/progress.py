"""Progress lines for long steps (export, calibration, compilation), shown while a test sets up.

pytest captures output during fixtures; these lines go to the terminal with capture suspended,
the way pytest's own ``-s`` output does. xdist workers have no terminal and stay quiet.
"""

from __future__ import annotations

import pytest


class ProgressPrinter:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def __call__(self, model: str, step: str, seconds: float, detail: str) -> None:
        if self.config.get_verbosity() < 0:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[ovquant] {model}: {step} {seconds:.1f}s ({detail})")
