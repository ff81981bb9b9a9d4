"""Atomic file writes: a crash mid-write leaves the old file intact, never a half-written one.

On Linux the new content goes into an *unnamed* file in the target's directory (``O_TMPFILE``),
is synced, and only then gets a temp name (``linkat`` through ``/proc/self/fd``) that is renamed
over the target at once. A process killed while writing or syncing (even by SIGKILL) leaves
nothing behind: the kernel frees the unnamed file. Only a kill between the last two calls (link,
rename) leaves a named temp file, ``.<name>.<random>.tmp``; ``remove_stale_temp_files`` removes
such leftovers (callers that serialise writers with a lock call it under the lock). Where
``O_TMPFILE`` or ``/proc`` is missing, the content is written to that named temp file directly.
"""

from __future__ import annotations

import errno
import os
import secrets
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"
# errors that mean "this kernel / file system / sandbox cannot link an unnamed file": use a named one
_NO_UNNAMED_LINK = {errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8): readers and crashes see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    data = text.encode("utf-8")
    if not _replace_via_unnamed_file(path, data, mode):
        _replace_via_named_file(path, data, mode)
    try:  # make the rename itself durable (best effort: not every platform can fsync a directory)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Delete temp files of ``path`` left by killed writers; call only while no writer is active."""
    removed = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return removed
    prefix = temp_prefix(path)
    for name in names:
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
            try:
                os.unlink(path.parent / name)
            except FileNotFoundError:
                continue
            removed.append(path.parent / name)
    return removed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _replace_via_unnamed_file(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` unnamed, sync, link under a temp name, rename; False if the OS cannot."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return False
    try:
        fd = os.open(path.parent, flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        return False  # not supported here; a real problem (full disk, permissions) shows again below
    tmp: Path | None = None
    try:
        _write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
        tmp = _link_unnamed(fd, path)
        if tmp is None:
            return False
        os.replace(tmp, path)
        tmp = None
        return True
    except BaseException:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    finally:
        os.close(fd)


def _link_unnamed(fd: int, path: Path) -> Path | None:
    """Give the unnamed file ``fd`` a temp name next to ``path``; None if linking is not possible."""
    try:
        proc_fds = os.open("/proc/self/fd", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        for _ in range(100):
            tmp = path.parent / f"{temp_prefix(path)}{secrets.token_hex(4)}{TEMP_SUFFIX}"
            try:
                # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N: the documented way to name an O_TMPFILE file
                os.link(str(fd), tmp, src_dir_fd=proc_fds, follow_symlinks=True)
            except FileExistsError:
                continue
            except OSError as error:
                if error.errno in _NO_UNNAMED_LINK:
                    return None
                raise
            return tmp
        raise FileExistsError(errno.EEXIST, f"no free temp file name next to {path}")
    finally:
        os.close(proc_fds)


def _replace_via_named_file(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
