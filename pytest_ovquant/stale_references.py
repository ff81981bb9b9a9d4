"""End-of-run report of reference entries that no collected test uses (a report line, not an error).

A test renamed or deleted leaves its entry behind in ``reference_metrics/``; an entry can also keep
a metric (or a speedup) that no marker of its test gates any more. The file is still valid, so
neither is an error: both are listed in the terminal summary (``ovquant references``) with the file
and the way out. Keys are only judged in modules collected whole: ``-k``/``-m``/``--deselect`` or a
``file.py::test`` argument leave a module's other tests uncollected, not gone; nor after a
collection error (a test that failed to collect is not gone either).

Under xdist each worker collects the whole session and sends its lines; the controller prints them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .errors import OVQuantError
from .gate_runner import plan_for
from .session import SESSION_KEY

WORKER_OUTPUT_KEY = "ovquant_stale_references"
SECTION = "ovquant references"


class StaleReferenceReport:
    """pytest plugin object registered by ``plugin.pytest_configure``."""

    def __init__(self) -> None:
        self.partial_modules: set[str] = set()  # module parts of node ids with deselected tests
        self.lines: list[str] = []

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.partial_modules.add(item.nodeid.partition("::")[0])

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        state = session.config.stash.get(SESSION_KEY, None)
        if state is None or session.testsfailed:
            return
        invocation = session.config.invocation_params.dir
        narrowed = {Path(invocation, arg.split("::")[0]).resolve() for arg in session.config.args if "::" in arg}
        self.lines = stale_lines(state.references, session.items, self.partial_modules, narrowed)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[WORKER_OUTPUT_KEY] = list(self.lines)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        for line in getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY, []):
            if line not in self.lines:
                self.lines.append(line)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.lines:
            return
        terminalreporter.section(SECTION)
        terminalreporter.write_line("reference entries that no collected test uses (not an error; tidy the files):")
        for line in self.lines:
            terminalreporter.write_line(line)


def stale_lines(store: Any, items: list[pytest.Item], partial_modules: set[str], narrowed: set[Path]) -> list[str]:
    """One line per stale key (whole modules only) and per entry field no gate of its test uses."""
    lines: list[str] = []
    whole: dict[str, list[str]] = {}
    for item in items:
        module = item.nodeid.partition("::")[0]
        if "::" not in item.nodeid or module in partial_modules or Path(item.path).resolve() in narrowed:
            continue
        whole.setdefault(module, []).append(item.nodeid)
    for node_ids in whole.values():
        try:
            stale = store.stale_keys(node_ids)
        except (OVQuantError, ValueError):  # a malformed file fails the gates that read it, with its own error
            continue
        for path, keys in stale.items():
            lines += [
                f"{path}: {key!r}: no such test (renamed or deleted?); delete the entry, or rename its key to the "
                "test's new id"
                for key in keys
            ]
    for item in items:
        try:
            reference = store.get(item.nodeid)
            plan = plan_for(item)
        except (OVQuantError, ValueError):
            continue
        if reference is None:
            continue
        gated = {gate.metric.name for gate in plan.accuracy} if plan is not None else set()
        unused = [f"metric {name!r}" for name in sorted(set(reference.metrics) - gated)]
        if reference.speedup is not None and (plan is None or plan.speedup is None):
            unused.append("speedup")
        if unused:
            key = item.nodeid.partition("::")[2]
            lines.append(
                f"{store.path_for(item.nodeid)}: {key!r}: {', '.join(unused)} gated by no ovq_accuracy/ovq_speedup "
                "marker of the test; delete it from the entry (--ovq-regen-all rewrites the entry with what is gated)"
            )
    return lines
