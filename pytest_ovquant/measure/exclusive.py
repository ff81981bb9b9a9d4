"""Keep timed sections alone on the machine across pytest-xdist workers (and concurrent runs).

Timing takes the *write* side of a cross-process reader/writer lock; builds and accuracy
evaluation, the CPU-heavy work of other workers, take the *read* side. So heavy work runs in
parallel, a speed measurement waits until it is alone, and while it runs nothing else of ours
starts (SQLite's pending-writer rule keeps new readers out). ``filelock.ReadWriteLock`` does the
locking; nothing here is hand-made.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

TIMING_LOCK_ENV = "OVQUANT_TIMING_LOCK"  # lets tests (and unusual CI layouts) choose the lock file


def default_lock_path() -> Path:
    """One lock per machine, in its temp dir: the CPU it guards is shared by every run on it,
    whichever project or checkout (xdist workers, a second CI job, a developer's run)."""
    explicit = os.environ.get(TIMING_LOCK_ENV)
    if explicit:
        return Path(explicit)
    return Path(tempfile.gettempdir()) / "pytest-ovquant" / "timing.lock"


class MachineLock:
    """``exclusive()`` for timed sections, ``shared()`` for heavy untimed work."""

    def __init__(self, path: Path) -> None:
        from filelock import ReadWriteLock

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = ReadWriteLock(str(path), is_singleton=False)
        self._depth = 0  # re-entrancy within this process: a build inside an evaluation, say

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._lock.read_lock():
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        if self._depth:
            raise RuntimeError("a timed section cannot run inside a shared (build/evaluation) section")
        with self._lock.write_lock():
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
