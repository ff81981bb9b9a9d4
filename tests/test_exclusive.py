"""The machine lock: a timed section runs alone; heavy untimed work runs side by side."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_ovquant.measure.exclusive import MachineLock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pytest_ovquant.measure.exclusive import MachineLock
    lock_path, mode, log, hold = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
    lock = MachineLock(lock_path)
    section = lock.exclusive() if mode == "exclusive" else lock.shared()
    with section:
        with open(log, "a") as f:
            f.write(f"{mode}-in {time.monotonic()}\\n")
        time.sleep(hold)
        with open(log, "a") as f:
            f.write(f"{mode}-out {time.monotonic()}\\n")
    """
)


def _start(tmp_path: Path, mode: str, hold: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "timing.lock"), mode, str(tmp_path / "log"), str(hold)]
    )


def _events(tmp_path: Path) -> list[tuple[str, float]]:
    lines = (tmp_path / "log").read_text().split()
    return sorted(((lines[i], float(lines[i + 1])) for i in range(0, len(lines), 2)), key=lambda e: e[1])


def _wait_for(tmp_path: Path, event: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (tmp_path / "log").exists() and event in (tmp_path / "log").read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{event} never happened")


def test_shared_work_waits_for_a_timed_section_and_vice_versa(tmp_path):
    timed = _start(tmp_path, "exclusive", 1.5)
    _wait_for(tmp_path, "exclusive-in")
    build = _start(tmp_path, "shared", 0.1)
    assert timed.wait(60) == 0 and build.wait(60) == 0
    order = [name for name, _ in _events(tmp_path)]
    assert order == ["exclusive-in", "exclusive-out", "shared-in", "shared-out"]


def test_shared_sections_overlap(tmp_path):
    first = _start(tmp_path, "shared", 2.0)
    _wait_for(tmp_path, "shared-in")
    second = _start(tmp_path, "shared", 0.1)
    assert first.wait(60) == 0 and second.wait(60) == 0
    events = _events(tmp_path)
    ins = [t for name, t in events if name == "shared-in"]
    first_out = [t for name, t in events if name == "shared-out"][-1]
    assert len(ins) == 2 and ins[1] < first_out  # the second entered while the first was inside


def test_a_timed_section_cannot_nest_inside_shared_work(tmp_path):
    lock = MachineLock(tmp_path / "timing.lock")
    with lock.shared(), lock.shared():  # re-entrant within a process
        with pytest.raises(RuntimeError, match="timed section"):
            with lock.exclusive():
                pass
    with lock.exclusive():
        pass
