"""Content-addressed on-disk cache of flow artifacts, shared by test sessions and xdist workers.

Why: quantizing (calibration) and converting to OpenVINO dominate a warm test run; their results
depend only on content (model graph and weights, inputs, calibration data, config, package
versions), so a later session can load them instead of rebuilding.

Layout under ``root`` (default ``<rootdir>/.ovquant_cache/``)::

    .gitignore, CACHEDIR.TAG      the cache ignores itself (git, backup tools)
    <key[:2]>/<key>/              one published entry: payload files + meta.json (sha256 of each)
    locks/<key>.lock              filelock: check-build-publish of one key, across processes
    tmp/<key>.<pid>.<random>/     an entry being written; renamed into place when complete
    builds.log                    one line per real build (key, kind, pid, time)

Entry kinds (what ``artifacts`` stores): ``graph`` records (JSON), ``exported`` (the model's
``torch.export`` program), ``program`` (a quantized program), ``lowering`` (one OpenVINO IR plus a
JSON record of how to call it), ``fp32-outputs`` (the FP32 model's outputs over the evaluation
data: arrays plus a JSON record).

An entry is only ever published by renaming a complete temp directory, so a crash or Ctrl-C
never leaves a half-written entry under its final name. Entries are verified against their
meta.json before use; a bad one is reported and rebuilt. Nothing is loaded with ``pickle``:
programs go through ``torch.export.save``/``load``, IRs through ``openvino.save_model``/``read_model``,
arrays through ``numpy.load(allow_pickle=False)``, records through ``json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import filelock
import torch

from . import compat
from .atomic import atomic_write_text
from .errors import OVQuantError

if TYPE_CHECKING:  # openvino and numpy are imported lazily: the cache itself does not need them
    import numpy
    import openvino

T = TypeVar("T")

# Bumped when the entry layout or what goes into a key changes: old entries are then never hit.
CACHE_FORMAT = 1
# The packages whose versions decide whether an artifact is still valid (format of a saved
# program, quantizer behaviour, converter behaviour).
VERSIONED_PACKAGES = ("torch", "torchao", "nncf", "openvino", "executorch")
META_NAME = "meta.json"
PROGRAM_NAME = "program.pt2"
IR_NAME = "model.xml"
ARRAYS_NAME = "arrays.npz"
RECORD_NAME = "record.json"
BUILD_LOG_NAME = "builds.log"
# builds.log is trimmed to its last BUILD_LOG_KEEP lines once it grows past BUILD_LOG_MAX_BYTES.
BUILD_LOG_MAX_BYTES = 64 * 1024
BUILD_LOG_KEEP = 500
KEPT_NAMES = frozenset({".gitignore", "CACHEDIR.TAG", "locks"})
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by pytest-ovquant.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
# A build of a big model can take many minutes; waiting longer than this means a stuck process.
DEFAULT_LOCK_TIMEOUT_S = 3600.0
OPTIONS_HINT = "pass --ovq-cache-dir=<writable directory>, or disable the cache with --ovq-no-cache"


class CacheError(OVQuantError):
    """The artifact cache directory cannot be used."""


class CacheWarning(UserWarning):
    """A cache entry was unusable (tampered, half-written, unloadable) or could not be written."""


class _NotStored(Exception):
    """Raised by a writer for a value that is not to be stored (publish nothing, say nothing)."""


# -- keys ------------------------------------------------------------------------------------
def cache_key(*parts: str) -> str:
    """sha256 hex of the parts (NUL-separated, prefixed with the cache format)."""
    digest = hashlib.sha256(f"ovquant-cache-v{CACHE_FORMAT}".encode())
    for part in parts:
        digest.update(b"\0")
        digest.update(part.encode())
    return digest.hexdigest()


def versions_part() -> str:
    """The stack versions that invalidate cached artifacts, as one key part."""
    versions = compat.stack_versions()
    return json.dumps({name: versions.get(name) for name in VERSIONED_PACKAGES}, sort_keys=True)


def _fetch_attr(module: torch.nn.Module, target: str) -> Any:
    value: Any = module
    for name in target.split("."):
        value = getattr(value, name)
    return value


def graph_fingerprint(graph_module: torch.fx.GraphModule) -> str:
    """Hash of a graph's code and of every tensor/submodule it reads.

    Why: the model fingerprint (class name + state_dict) misses an edited ``forward`` and
    non-persistent buffers; a persistent cache must not serve a stale program for those.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(graph_module.code.encode())
    for node in graph_module.graph.nodes:
        if node.op != "get_attr":
            continue
        digest.update(str(node.target).encode())
        value = _fetch_attr(graph_module, str(node.target))
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, torch.fx.GraphModule):
            digest.update(graph_fingerprint(value).encode())
        else:
            digest.update(repr(type(value)).encode())
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _register_quantized_ops(*, everything: bool = False) -> None:
    """Import the modules that define the ops a quantized program uses, so it deserializes.

    ``torch.export.load`` resolves ``quantized_decomposed.*`` only if they are registered; a
    fresh process has not imported them yet. ``everything`` also imports the pt2e module
    (torchao: ~1 s), only needed for programs using its own ops.
    """
    with contextlib.suppress(Exception):
        import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers quantized_decomposed.*)
    if everything:
        with contextlib.suppress(Exception):
            compat.find_pt2e_functions()


def _write_record(record: dict[str, Any], directory: Path) -> None:
    atomic_write_text(directory / RECORD_NAME, json.dumps(record, sort_keys=True) + "\n")


def _read_record(entry: Path) -> dict[str, Any]:
    record = json.loads((entry / RECORD_NAME).read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise ValueError(f"{RECORD_NAME} holds a {type(record).__name__}, not an object")
    return record


def _load_program(path: Path) -> torch.export.ExportedProgram:
    """``torch.export.load`` once the ops a (quantized) program may use are registered."""

    def load() -> torch.export.ExportedProgram:
        with warnings.catch_warnings():
            # torch 2.9 warns once that the archive's buffer is read-only; the tensors are copied
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            return torch.export.load(path)

    _register_quantized_ops()
    try:
        return load()
    except Exception:  # an op from a module not imported yet: import it, try once more
        _register_quantized_ops(everything=True)
        return load()


def _payload_writer(
    to_stored: Callable[[T], "tuple[Any, dict[str, Any]] | None"], save: Callable[[Any, Path], None]
) -> Callable[[T, Path], None]:
    """The writer of an entry made of one payload plus a JSON record: ``to_stored(value)`` gives
    (payload, record), or None for a value that is not to be stored (nothing is published)."""

    def write(value: T, tmp: Path) -> None:
        stored = to_stored(value)
        if stored is None:
            raise _NotStored
        payload, record = stored
        save(payload, tmp)
        _write_record(record, tmp)

    return write


def _load_ir(entry: Path, from_ir: Callable[["openvino.Model", dict[str, Any]], T]) -> T:
    import openvino as ov

    return from_ir(ov.Core().read_model(str(entry / IR_NAME)), _read_record(entry))


# -- the cache ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildLogEntry:
    """One line of builds.log: a build that really ran (not a load)."""

    key: str
    kind: str
    pid: int
    time: float


class ArtifactCache:
    """Build-once-per-content store on disk; ``enabled=False`` makes it a pass-through."""

    def __init__(
        self,
        root: Path,
        *,
        enabled: bool = True,
        warn: Callable[[str], None] | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self._warn_callback = warn
        self.lock_timeout = lock_timeout
        if enabled:
            self._prepare_root()
            self._sweep_tmp()

    # -- public API ------------------------------------------------------------------------
    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get_or_build_program(
        self,
        key: str,
        build: Callable[[], torch.fx.GraphModule],
        example_inputs: tuple[Any, ...],
        *,
        dynamic_shapes: Any = None,
    ) -> tuple[torch.fx.GraphModule, str]:
        """A quantized (or any exportable) graph module, and "hit" | "built" | "rebuilt".

        On a build the module is re-exported with ``example_inputs`` (and ``dynamic_shapes``,
        which must match how it was exported) and saved with ``torch.export.save``; the module
        ``build()`` returned is what this call returns.
        """

        def write(module: torch.fx.GraphModule, tmp: Path) -> None:
            with torch.no_grad():
                program = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes)
            torch.export.save(program, tmp / PROGRAM_NAME)

        def load(entry: Path) -> torch.fx.GraphModule:
            return _load_program(entry / PROGRAM_NAME).module()

        return self._get_or_build(key, "program", build, write, load)

    def get_or_build_exported(
        self, key: str, build: Callable[[], torch.export.ExportedProgram]
    ) -> tuple[torch.export.ExportedProgram, str]:
        """An ``ExportedProgram`` as ``build()`` makes it (saved as is with ``torch.export.save``), and its status."""

        def write(program: torch.export.ExportedProgram, tmp: Path) -> None:
            torch.export.save(program, tmp / PROGRAM_NAME)

        return self._get_or_build(key, "exported", build, write, lambda entry: _load_program(entry / PROGRAM_NAME))

    def get_or_build_record(self, key: str, kind: str, build: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], str]:
        """A small JSON-able record (e.g. which graph a model exports to), and its status."""

        return self._get_or_build(key, kind, build, _write_record, _read_record)

    def get_or_build_ir(
        self,
        key: str,
        build: Callable[[], T],
        to_ir: Callable[[T], "tuple[openvino.Model, dict[str, Any]] | None"],
        from_ir: Callable[["openvino.Model", dict[str, Any]], T],
        *,
        kind: str = "lowering",
    ) -> tuple[T, str]:
        """Something made of one OpenVINO IR plus a JSON record (a lowering), and its status.

        ``to_ir(value)`` gives what to store, or None when ``value`` cannot be stored (nothing is
        published, no warning); ``from_ir(ir, record)`` rebuilds the value from a stored entry.
        """

        def save(ir: "openvino.Model", tmp: Path) -> None:
            import openvino as ov

            ov.save_model(ir, tmp / IR_NAME, compress_to_fp16=False)

        return self._get_or_build(key, kind, build, _payload_writer(to_ir, save), lambda entry: _load_ir(entry, from_ir))

    def read_ir(
        self, key: str, from_ir: Callable[["openvino.Model", dict[str, Any]], T], *, kind: str = "lowering"
    ) -> T | None:
        """A stored IR entry's value as ``get_or_build_ir`` would load it; None when there is no sound
        entry (then nothing is built, warned or discarded: the next ``get_or_build_ir`` sees to it)."""
        if not self.enabled:
            return None
        entry = self.entry_dir(key)
        with self._key_lock(key):
            if not entry.is_dir() or self._verify(entry, key, kind) is not None:
                return None
            return _load_ir(entry, from_ir)

    def get_or_build_arrays(
        self,
        key: str,
        kind: str,
        build: Callable[[], T],
        to_arrays: Callable[[T], "tuple[dict[str, numpy.ndarray], dict[str, Any]] | None"],
        from_arrays: Callable[["dict[str, numpy.ndarray]", dict[str, Any]], T],
    ) -> tuple[T, str]:
        """Something made of numpy arrays plus a JSON record (recorded outputs), and its status.

        As ``get_or_build_ir``: ``to_arrays(value)`` gives what to store, or None for nothing.
        Arrays go into one uncompressed ``.npz`` read back with ``allow_pickle=False``.
        """

        def save(arrays: "dict[str, numpy.ndarray]", tmp: Path) -> None:
            import numpy

            with (tmp / ARRAYS_NAME).open("wb") as handle:
                numpy.savez(handle, **arrays)

        def load(entry: Path) -> T:
            import numpy

            with numpy.load(entry / ARRAYS_NAME, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
            return from_arrays(arrays, _read_record(entry))

        return self._get_or_build(key, kind, build, _payload_writer(to_arrays, save), load)

    def clear(self) -> None:
        """Remove every entry, temp dir and the build log; keep .gitignore, CACHEDIR.TAG and locks/.

        Lock files stay: deleting one another process is about to open would split the lock in two.
        Call it before workers start (it does not take the per-key locks).
        """
        if not self.root.is_dir():
            return
        for child in self.root.iterdir():
            if child.name in KEPT_NAMES:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    child.unlink()
        if self.enabled:
            self._prepare_root()

    def build_log(self, key: str | None = None) -> list[BuildLogEntry]:
        """The builds recorded in builds.log (all, or those of ``key``)."""
        try:
            lines = (self.root / BUILD_LOG_NAME).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            fields = line.split()
            if len(fields) != 4:
                continue
            try:
                entry = BuildLogEntry(key=fields[0], kind=fields[1], pid=int(fields[2]), time=float(fields[3]))
            except ValueError:
                continue
            if key is None or entry.key == key:
                entries.append(entry)
        return entries

    # -- protocol --------------------------------------------------------------------------
    def _get_or_build(
        self,
        key: str,
        kind: str,
        build: Callable[[], T],
        write: Callable[[T, Path], None],
        load: Callable[[Path], T],
    ) -> tuple[T, str]:
        if not self.enabled:
            return build(), "built"
        entry = self.entry_dir(key)
        with self._key_lock(key):
            self._remove_tmp_of(key)  # left by a process killed while writing this key
            status = "built"
            if entry.exists() or entry.is_symlink():
                problem = self._verify(entry, key, kind)
                if problem is None:
                    try:
                        return load(entry), "hit"
                    except Exception as error:  # noqa: BLE001 - any failure means: rebuild
                        problem = f"could not be loaded ({type(error).__name__}: {str(error).strip()[:300]})"
                self.warn(f"pytest-ovquant cache: entry {entry} {problem}; discarding and rebuilding it")
                self._discard(entry)
                status = "rebuilt"
            value = build()
            self._log_build(key, kind)
            self._publish(key, kind, entry, value, write)
            return value, status

    def _verify(self, entry: Path, key: str, kind: str) -> str | None:
        """None if the entry is complete and unmodified, else what is wrong with it."""
        meta_path = entry / META_NAME
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return f"has no {META_NAME} (half-written)"
        except (OSError, ValueError) as error:
            return f"has an unreadable {META_NAME} ({error})"
        if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict) or not meta["files"]:
            return f"has a malformed {META_NAME}"
        if meta.get("key") != key or meta.get("kind") != kind or meta.get("format") != CACHE_FORMAT:
            return f"has a {META_NAME} for another key, kind or cache format"
        present = {p.name for p in entry.iterdir() if p.name != META_NAME}
        if present != set(meta["files"]):
            return f"has files {sorted(present)} but {META_NAME} lists {sorted(meta['files'])}"
        for name, expected in meta["files"].items():
            if _sha256_file(entry / name) != expected:
                return f"has a modified {name} (sha256 differs from {META_NAME})"
        return None

    def _publish(self, key: str, kind: str, entry: Path, value: T, write: Callable[[T, Path], None]) -> None:
        """Write into a temp dir, hash, rename into place; on any failure publish nothing."""
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            tmp.mkdir(parents=True)
            write(value, tmp)
            files = {p.name: _sha256_file(p) for p in sorted(tmp.iterdir())}
            meta = {"format": CACHE_FORMAT, "key": key, "kind": kind, "files": files, "created": time.time()}
            atomic_write_text(tmp / META_NAME, json.dumps(meta, indent=1, sort_keys=True) + "\n")
            entry.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, entry)
            except OSError:
                if not entry.exists():
                    raise
                # another process published this key meanwhile (it did not honour the lock): keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except _NotStored:
            shutil.rmtree(tmp, ignore_errors=True)
        except Exception as error:  # the artifact is fine; only caching it failed
            shutil.rmtree(tmp, ignore_errors=True)
            self.warn(
                f"pytest-ovquant cache: could not save the {kind} for key {key} under {self.root} "
                f"({type(error).__name__}: {str(error).strip()[:300]}); continuing without caching it"
            )
        except BaseException:  # Ctrl-C while writing: leave no temp dir behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- housekeeping ----------------------------------------------------------------------
    def _prepare_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for name, text in ((".gitignore", "*\n"), ("CACHEDIR.TAG", CACHEDIR_TAG)):
                path = self.root / name
                if not path.is_file() or path.read_text(encoding="utf-8") != text:
                    atomic_write_text(path, text)
            (self.root / "locks").mkdir(exist_ok=True)
            (self.root / "tmp").mkdir(exist_ok=True)
            probe = self.root / "tmp" / f".probe.{os.getpid()}.{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise CacheError(
                f"the artifact cache directory {self.root} is not usable "
                f"({type(error).__name__}: {error.strerror or error}); {OPTIONS_HINT}"
            ) from None

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        path = self.root / "locks" / f"{key}.lock"
        lock = filelock.FileLock(str(path), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise CacheError(
                f"pytest-ovquant: waited {self.lock_timeout:.0f} s for {path} (another process is building "
                f"this artifact and has not finished); stop that process, or {OPTIONS_HINT}"
            ) from None
        except OSError as error:
            raise CacheError(f"pytest-ovquant: cannot lock {path} ({error}); {OPTIONS_HINT}") from None
        try:
            yield
        finally:
            lock.release()

    def _remove_tmp_of(self, key: str) -> None:
        """Temp dirs of ``key``; call with the key's lock held (so nobody is writing them)."""
        for stale in (self.root / "tmp").glob(f"{key}.*"):
            shutil.rmtree(stale, ignore_errors=True)

    def _sweep_tmp(self) -> None:
        """Remove temp dirs left by killed processes, skipping keys being built right now."""
        keys = {p.name.split(".", 1)[0] for p in (self.root / "tmp").iterdir() if not p.name.startswith(".")}
        for key in keys:
            lock = filelock.FileLock(str(self.root / "locks" / f"{key}.lock"), timeout=0)
            try:
                lock.acquire()
            except (filelock.Timeout, OSError):
                continue  # a live process holds it: its temp dir is in use
            try:
                self._remove_tmp_of(key)
            finally:
                lock.release()

    def _discard(self, entry: Path) -> None:
        """Unpublish first (one rename), then delete at leisure."""
        trash = self.root / "tmp" / f"{entry.name}.discard.{secrets.token_hex(4)}"
        try:
            os.rename(entry, trash)
        except OSError:
            trash = entry
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                trash.unlink()

    def _log_build(self, key: str, kind: str) -> None:
        """Append one line under the log's lock (a trim replaces the file); trim when it grows."""
        path = self.root / BUILD_LOG_NAME
        line = f"{key} {kind} {os.getpid()} {time.time():.3f}\n"
        try:
            with filelock.FileLock(str(self.root / "locks" / f"{BUILD_LOG_NAME}.lock"), timeout=60):
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(line)
                if path.stat().st_size > BUILD_LOG_MAX_BYTES:
                    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
                    atomic_write_text(path, "".join(lines[-BUILD_LOG_KEEP:]))
        except (OSError, filelock.Timeout) as error:
            self.warn(f"pytest-ovquant cache: could not update {path} ({error})")

    def warn(self, message: str) -> None:
        """Say what went wrong with the cache (a CacheWarning, and the plugin's callback), and carry on."""
        warnings.warn(message, CacheWarning, stacklevel=4)
        if self._warn_callback is not None:
            self._warn_callback(message)


__all__ = [
    "ArtifactCache",
    "BuildLogEntry",
    "CacheError",
    "CacheWarning",
    "cache_key",
    "graph_fingerprint",
    "versions_part",
]
