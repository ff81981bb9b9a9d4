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


class SampleProgress:
    """A tqdm bar over evaluation samples, drawn with capture suspended; silent for short runs.

    Called with the number of samples just evaluated; ``close()`` ends the bar.
    """

    MIN_SAMPLES = 200  # below this the evaluation takes seconds: no bar

    def __init__(self, config: pytest.Config, description: str, dataset: object) -> None:
        from .measure.evaluation import count_samples

        self.config = config
        self.description = description
        self.total = count_samples(dataset) if dataset is not None else None  # type: ignore[arg-type]
        self._bar = None

    def _enabled(self) -> bool:
        if self.config.get_verbosity() < 0 or hasattr(self.config, "workerinput"):
            return False
        return self.total is None or self.total >= self.MIN_SAMPLES

    def __call__(self, done: int) -> None:
        if not self._enabled():
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if capture is None:
            return
        from tqdm import tqdm

        with capture.global_and_fixture_disabled():
            if self._bar is None:
                self._bar = tqdm(total=self.total, desc=f"[ovquant] {self.description}", unit="sample", leave=False)
            self._bar.update(done)

    def close(self) -> None:
        if self._bar is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:
            with capture.global_and_fixture_disabled():
                self._bar.close()
        self._bar = None
