"""The reference store: accuracy/speedup references kept as YAML files in the repository.

One file per test module (``tests/models/test_zoo.py`` -> ``<root>/tests/models/test_zoo.yaml``),
one entry per test, keyed by the part of the node id after the first ``::`` so that a rename shows
up in the PR diff. Files are meant to be read and reviewed by people, so they are plain YAML with
sorted keys, validated strictly on load (a typo must not silently disable a gate) and written
atomically (a crash mid-update leaves the old file).

Values that differ per software stack live in *override files* next to the base file
(``test_zoo@openvino-2026.4.yaml``), the way NNCF's conformance suite keeps per-backend values:
the base file stays the single place that ``--ovq-update-refs`` writes, and a stack's known
deviations are kept (and reviewed) separately. INT8 results also depend on the CPU's INT8 class
(without VNNI the dot products can saturate), so ``test_zoo@isa-avx2.yaml`` holds the values of
machines of that class (``measure.machine.INT8_ISA_CLASSES``).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Mapping

import filelock
import yaml

from .atomic import atomic_write_text, remove_stale_temp_files
from .errors import OVQuantError
from .measure.machine import INT8_ISA_CLASSES

SCHEMA_VERSION = 1
# The versions this plugin can read; a file with any other is refused rather than misread.
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (SCHEMA_VERSION,)

SPEEDUP_BASELINES = ("eager", "ov_fp32")
ENTRY_FIELDS = ("metrics", "speedup", "quantizer", "environment", "xfail_reason")
METRIC_FIELDS = ("fp32", "int8", "drop")
SPEEDUP_FIELDS = ("value", "baseline", "machine")
TOP_LEVEL_KEYS = ("schema_version", "tests")

# How long write_pending waits for another process to finish updating the same file.
LOCK_TIMEOUT_S = 120.0

_FIX_BASE = "fix the file or delete it and re-record with --ovq-update-refs"
_FIX_OVERRIDE = "fix the override file or delete it (--ovq-update-refs never writes override files)"
_OVERRIDE_NAME = re.compile(r"^(?P<package>[A-Za-z0-9][A-Za-z0-9._-]*)-(?P<version>\d+(?:\.\d+)*)$")
_ISA_OVERRIDE_NAME = re.compile(r"^isa-(?P<isa>[a-z0-9]+)$")
ISA = "isa"  # the condition name of a CPU-class override file
_RELEASE = re.compile(r"^\s*[vV]?(?:\d+!)?(\d+(?:\.\d+)*)")


class ReferenceFileError(OVQuantError):
    """A reference file (or a reference about to be written) is invalid.

    The message names the file, what is wrong (with the YAML line where known) and how to fix it;
    ``path`` and ``line`` carry the same for callers that want them.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, line: int | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line


class InvalidNodeIdError(OVQuantError, ValueError):
    """A node id that cannot name a reference (no ``::``, or a path that leaves the reference root)."""


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class MetricValues:
    """One metric measured for FP32 and INT8 on the same samples (None: not measured)."""

    fp32: float | None = None
    int8: float | None = None
    drop: float | None = None

    def to_dict(self) -> dict[str, float]:
        # None fields are omitted: the file stays short, and a missing field reads back as None.
        return {name: float(value) for name in METRIC_FIELDS if (value := getattr(self, name)) is not None}


@dataclass
class SpeedupValues:
    """A measured speedup, its baseline, and the machine it holds for (speedups do not travel)."""

    value: float
    baseline: str
    machine: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": float(self.value), "baseline": self.baseline, "machine": self.machine}


@dataclass
class TestReference:
    """Everything recorded for one test. ``applied_overrides`` is filled by ``get()`` only."""

    __test__ = False  # a dataclass named Test*, not a pytest test class

    key: str
    metrics: dict[str, MetricValues]
    speedup: SpeedupValues | None = None
    quantizer: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    xfail_reason: str | None = None
    # File names of the override files that changed this entry, in the order they applied.
    applied_overrides: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The entry as written to the file (no key, no ``applied_overrides``, no None fields)."""
        out: dict[str, Any] = {"metrics": {name: values.to_dict() for name, values in self.metrics.items()}}
        if self.speedup is not None:
            out["speedup"] = self.speedup.to_dict()
        if self.quantizer:
            out["quantizer"] = copy.deepcopy(dict(self.quantizer))
        if self.environment:
            out["environment"] = copy.deepcopy(dict(self.environment))
        if self.xfail_reason is not None:
            out["xfail_reason"] = self.xfail_reason
        return out

    @classmethod
    def from_dict(cls, key: str, data: Any, source: str) -> TestReference:
        """Validate one entry as read from ``source`` (a file path, used in error messages)."""
        return _build(key, _validate_entry(key, data, source, partial=False, fix=_FIX_BASE))


# ---------------------------------------------------------------------------------------------
# Validation: every check names the source, the test key and the field, and says how to fix it.


def _fail(source: str, key: str | None, what: str, fix: str) -> ReferenceFileError:
    where = f"{source}: test {key!r}: " if key is not None else f"{source}: "
    return ReferenceFileError(f"{where}{what}; {fix}")


def _number(source: str, key: str, name: str, value: Any, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(source, key, f"{name} = {value!r} must be a number", fix)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _fail(source, key, f"{name} = {value!r} must be a finite number", fix)
    return number


def _check_fields(source: str, key: str, name: str, data: Any, allowed: tuple[str, ...], fix: str) -> None:
    if not isinstance(data, Mapping):
        raise _fail(source, key, f"{name} must be a mapping with fields {', '.join(allowed)}, not {data!r}", fix)
    unknown = [str(f) for f in data if f not in allowed]
    if unknown:
        raise _fail(
            source, key, f"unknown field(s) {', '.join(map(repr, unknown))} in {name}; allowed: {', '.join(allowed)}", fix
        )


def _free_form(source: str, key: str, name: str, value: Any, fix: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(source, key, f"{name} = {value!r} must be a mapping", fix)
    try:  # it is written back with safe_dump(sort_keys=True): find out now, not mid-update
        yaml.safe_dump(dict(value), sort_keys=True)
    except (yaml.YAMLError, TypeError) as exc:
        raise _fail(source, key, f"{name} cannot be written as YAML ({exc})", fix) from None
    return copy.deepcopy(dict(value))


def _validate_entry(key: str, data: Any, source: str, *, partial: bool, fix: str) -> dict[str, Any]:
    """Check one entry and return it normalised (ints -> floats, null mappings -> {}).

    ``partial`` (override files): no field is required, and only the fields given are returned,
    so the merge can tell "not given" from "given as null".
    """
    _check_fields(source, key, "the entry", data, ENTRY_FIELDS, fix)
    out: dict[str, Any] = {}

    if "metrics" in data:
        metrics = data["metrics"]
        if metrics is None:
            metrics = {}
        if not isinstance(metrics, Mapping):
            raise _fail(source, key, f"metrics = {metrics!r} must be a mapping of metric name -> values", fix)
        out["metrics"] = {}
        for name, values in metrics.items():
            if not isinstance(name, str) or not name.strip():
                raise _fail(source, key, f"metric name {name!r} must be a non-empty string (quote it)", fix)
            _check_fields(source, key, f"metrics.{name}", values, METRIC_FIELDS, fix)
            out["metrics"][name] = {
                f: None if values[f] is None else _number(source, key, f"metrics.{name}.{f}", values[f], fix)
                for f in METRIC_FIELDS
                if f in values
            }
    elif not partial:
        out["metrics"] = {}

    if "speedup" in data and data["speedup"] is not None:
        speedup = data["speedup"]
        _check_fields(source, key, "speedup", speedup, SPEEDUP_FIELDS, fix)
        missing = [f for f in SPEEDUP_FIELDS if f not in speedup]
        if missing and not partial:
            raise _fail(source, key, f"speedup is missing field(s) {', '.join(missing)}", fix)
        checked: dict[str, Any] = {}
        if "value" in speedup:
            value = _number(source, key, "speedup.value", speedup["value"], fix)
            if value <= 0:
                raise _fail(source, key, f"speedup.value = {speedup['value']!r} must be a positive number", fix)
            checked["value"] = value
        if "baseline" in speedup:
            if speedup["baseline"] not in SPEEDUP_BASELINES:
                raise _fail(
                    source,
                    key,
                    f"speedup.baseline = {speedup['baseline']!r} must be one of {', '.join(SPEEDUP_BASELINES)}",
                    fix,
                )
            checked["baseline"] = speedup["baseline"]
        if "machine" in speedup:
            machine = speedup["machine"]
            if not isinstance(machine, str) or not machine:
                raise _fail(
                    source, key, f"speedup.machine = {machine!r} must be a non-empty string (quote it)", fix
                )
            checked["machine"] = machine
        out["speedup"] = checked
    elif "speedup" in data or not partial:
        out["speedup"] = None

    for name in ("quantizer", "environment"):
        if name in data:
            out[name] = _free_form(source, key, name, data[name], fix)
        elif not partial:
            out[name] = {}

    if "xfail_reason" in data:
        reason = data["xfail_reason"]
        if reason is not None and (not isinstance(reason, str) or not reason.strip()):
            raise _fail(source, key, f"xfail_reason = {reason!r} must be a non-empty string or null", fix)
        out["xfail_reason"] = reason
    elif not partial:
        out["xfail_reason"] = None
    return out


def _build(key: str, entry: Mapping[str, Any], applied: list[str] | None = None) -> TestReference:
    speedup = entry.get("speedup")
    return TestReference(
        key=key,
        metrics={name: MetricValues(**values) for name, values in entry["metrics"].items()},
        speedup=None if speedup is None else SpeedupValues(**speedup),
        quantizer=entry["quantizer"],
        environment=entry["environment"],
        xfail_reason=entry["xfail_reason"],
        applied_overrides=list(applied or []),
    )


def _merge(base: dict[str, Any] | None, override: Mapping[str, Any]) -> dict[str, Any]:
    """Override fields onto a (validated, possibly missing) base entry; see the module docstring."""
    merged = copy.deepcopy(base) if base is not None else {}
    for name, value in override.items():
        if name == "metrics":
            metrics = merged.setdefault("metrics", {})
            for metric, values in value.items():
                metrics.setdefault(metric, {}).update(values)  # fp32/int8/drop individually
        elif name == "speedup" and value is not None:
            merged["speedup"] = {**(merged.get("speedup") or {}), **value}
        else:  # speedup: null, quantizer, environment, xfail_reason: replaced whole
            merged[name] = copy.deepcopy(value)
    return merged


# ---------------------------------------------------------------------------------------------
# YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys and remembers each key's line."""

    def __init__(self, stream: str, name: str = "<unicode string>"):
        super().__init__(stream)
        self.name = name  # shown in marks ("in <file>, line N")
        self.key_lines: dict[int, dict[Any, int]] = {}
        self._keep: list[Any] = []  # keeps ids in key_lines valid while loading

    def _construct_map(self, node: yaml.MappingNode) -> Iterator[dict[Any, Any]]:
        data: dict[Any, Any] = {}
        yield data
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # construct_mapping reports unhashable keys with their position
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first at line {lines[key] + 1})",
                    key_node.start_mark,
                )
            lines[key] = key_node.start_mark.line
        data.update(self.construct_mapping(node))
        self.key_lines[id(data)] = lines
        self._keep.append(data)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader._construct_map)


@dataclass
class _ParsedFile:
    """A validated reference file: entries normalised, plus each entry's line for messages."""

    path: Path
    entries: dict[str, dict[str, Any]]
    lines: dict[str, int]


def _parse_file(path: Path, *, partial: bool) -> _ParsedFile:
    fix = _FIX_OVERRIDE if partial else _FIX_BASE
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ReferenceFileError(f"{path}: not UTF-8 text ({exc}); {fix}", path=path) from None
    if not text.strip():
        raise ReferenceFileError(
            f"{path}: the file is empty (a reference file starts with 'schema_version: {SCHEMA_VERSION}'); {fix}",
            path=path,
        )
    loader = _StrictLoader(text, str(path))
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        where = "" if mark is None else f"line {line}, column {mark.column + 1}: "
        what = ": ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ReferenceFileError(f"{path}: {where}invalid YAML ({what}); {fix}", path=path, line=line) from None
    except yaml.YAMLError as exc:
        raise ReferenceFileError(f"{path}: invalid YAML ({exc}); {fix}", path=path) from None
    finally:
        loader.dispose()

    if data is None:
        raise ReferenceFileError(
            f"{path}: the file has no content (a reference file starts with 'schema_version: {SCHEMA_VERSION}'); {fix}",
            path=path,
        )
    if not isinstance(data, dict):
        raise ReferenceFileError(
            f"{path}: the top level must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}, "
            f"not a {type(data).__name__}; {fix}",
            path=path,
            line=1,
        )
    top_lines = loader.key_lines.get(id(data), {})
    if "schema_version" not in data:
        raise ReferenceFileError(
            f"{path}: no schema_version; add 'schema_version: {SCHEMA_VERSION}' as the first line, or {fix}", path=path
        )
    version = data["schema_version"]
    if isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS:
        line = top_lines.get("schema_version", 0) + 1
        raise ReferenceFileError(
            f"{path}: line {line}: schema_version {version!r} is not one this plugin reads "
            f"(it reads {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}); upgrade pytest-ovquant "
            "(pip install -U pytest-ovquant) if the file was written by a newer version, or " + fix,
            path=path,
            line=line,
        )
    unknown = [str(k) for k in data if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise ReferenceFileError(
            f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(TOP_LEVEL_KEYS)}; {fix}",
            path=path,
        )
    if "tests" not in data:
        raise ReferenceFileError(f"{path}: no 'tests' mapping (write 'tests: {{}}' for none); {fix}", path=path)
    tests = data["tests"]
    if not isinstance(tests, dict):
        line = top_lines.get("tests", 0) + 1
        raise ReferenceFileError(
            f"{path}: line {line}: 'tests' must be a mapping of test key -> entry, not {tests!r}; {fix}",
            path=path,
            line=line,
        )
    key_lines = loader.key_lines.get(id(tests), {})
    entries: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    for key, entry in tests.items():
        line = key_lines.get(key, 0) + 1
        if not isinstance(key, str) or not key:
            raise ReferenceFileError(
                f"{path}: line {line}: test key {key!r} must be a non-empty string (quote it); {fix}",
                path=path,
                line=line,
            )
        try:
            entries[key] = _validate_entry(key, entry, f"{path}:{line}", partial=partial, fix=fix)
        except ReferenceFileError as exc:
            exc.path, exc.line = str(path), line
            raise
        lines[key] = line
    return _ParsedFile(path=path, entries=entries, lines=lines)


def _dump(entries: Mapping[str, TestReference]) -> str:
    document = {
        "schema_version": SCHEMA_VERSION,
        "tests": {key: entries[key].to_dict() for key in sorted(entries)},
    }
    # sort_keys: 'schema_version' < 'tests', entries and their fields sorted -> stable diffs.
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False, allow_unicode=True, width=4096)


def _write_failed(path: Path, error: OSError, count: int) -> ReferenceFileError:
    """The error for a reference file that could not be written: what happened, and what to do."""
    reason = error.strerror or str(error)
    if error.errno in errno.errorcode:
        reason = f"{errno.errorcode[error.errno]}: {reason}"
    return ReferenceFileError(
        f"{path}: could not write {count} updated reference(s) ({reason}); the file was left as it was, "
        f"nothing was half-written. Free disk space (or fix the quota / permissions of {path.parent}) and rerun "
        "with --ovq-update-refs (or --ovq-regen-all) to record them",
        path=path,
    )


# ---------------------------------------------------------------------------------------------
# Node ids, override names, versions


def split_node_id(node_id: str) -> tuple[str, str]:
    """``tests/m/test_zoo.py::TestX::test_y[p]`` -> (``tests/m/test_zoo.py``, ``TestX::test_y[p]``).

    Splits at the first ``::`` (parameters may contain ``::``, ``/``, spaces). Raises
    InvalidNodeIdError (a ValueError) for an id without ``::``, an empty part, or a module path
    that is absolute or goes up with ``..`` (it would put the reference file outside the root).
    """
    module, sep, key = node_id.partition("::")
    if not sep or not module or not key:
        raise InvalidNodeIdError(
            f"node id {node_id!r} does not name a test: expected '<module path>::<test name>' "
            "(a pytest node id relative to the rootdir)"
        )
    posix = PurePosixPath(module)
    if posix.is_absolute() or ".." in posix.parts or module.startswith(("\\", "/")) or ":" in posix.parts[0]:
        raise InvalidNodeIdError(
            f"node id {node_id!r}: module path {module!r} is outside the rootdir; references are kept only "
            "for tests under the pytest rootdir"
        )
    if "@" in posix.name:
        raise InvalidNodeIdError(
            f"node id {node_id!r}: module file name {posix.name!r} contains '@', which reference file names "
            "use for per-stack overrides; rename the module"
        )
    return module, key


def _normalise_package(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version: str) -> tuple[int, ...] | None:
    """The release part of a version string ('2.9.1+cu128' -> (2, 9, 1)); None if it has none."""
    match = _RELEASE.match(version.split("+", 1)[0])
    return None if match is None else tuple(int(part) for part in match.group(1).split("."))


def _prefix_matches(prefix: tuple[int, ...], installed: str | None) -> bool:
    if installed is None:
        return False
    release = _release(installed)
    if release is None:
        return False
    release = release + (0,) * max(0, len(prefix) - len(release))  # '2026.4' is '2026.4.0'
    return release[: len(prefix)] == prefix


# ---------------------------------------------------------------------------------------------
# The store


@dataclass
class _Module:
    """What ``get()`` serves for one module: merged references, plus the files they came from."""

    references: dict[str, TestReference]


class ReferenceStore:
    """Reads references (base file + matching override files) and writes updated base files."""

    def __init__(self, root: Path, installed: Mapping[str, str | None], *, isa_class: str | None = None):
        self.root = Path(root)
        self.installed: dict[str, str | None] = {_normalise_package(k): v for k, v in installed.items()}
        self.isa_class = isa_class  # this machine's INT8 class: which '@isa-<class>' files apply
        self._cache: dict[Path, _Module] = {}
        self._pending: dict[Path, dict[str, TestReference]] = {}

    # -- paths ----------------------------------------------------------------------------
    def path_for(self, node_id: str) -> Path:
        """The base reference file of the node id's module."""
        module, _ = split_node_id(node_id)
        relative = PurePosixPath(module)
        # Non-Python items (doctest text files, ...) keep their full name, so x.txt and x.py differ.
        name = relative.name[: -len(".py")] if relative.suffix == ".py" else relative.name
        return self.root.joinpath(*relative.parts[:-1], name + ".yaml")

    def override_files(self, base: Path) -> list[tuple[Path, str, tuple[int, ...] | str]]:
        """All override files of a base file, sorted by name, as (path, package, version prefix),
        or (path, "isa", INT8 class) for a CPU-class file."""

        stem = base.name[: -len(".yaml")]
        try:
            names = sorted(os.listdir(base.parent))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if not (name.startswith(stem + "@") and name.endswith(".yaml")):
                continue
            condition = name[len(stem) + 1 : -len(".yaml")]
            path = base.parent / name
            isa = _ISA_OVERRIDE_NAME.match(condition)
            if isa is not None and isa.group("isa") in INT8_ISA_CLASSES:
                found.append((path, ISA, isa.group("isa")))
                continue
            match = _OVERRIDE_NAME.match(condition)
            if match is None or isa is not None:
                raise ReferenceFileError(
                    f"{path}: looks like an override file of {base.name} but its name is not "
                    f"'{stem}@<package>-<version prefix>.yaml' (e.g. '{stem}@openvino-2026.4.yaml') nor "
                    f"'{stem}@isa-<class>.yaml' with a class in {', '.join(INT8_ISA_CLASSES)}; rename or delete it",
                    path=path,
                )
            prefix = tuple(int(part) for part in match.group("version").split("."))
            found.append((path, _normalise_package(match.group("package")), prefix))
        return found

    # -- reading --------------------------------------------------------------------------
    def _load(self, base: Path) -> _Module:
        cached = self._cache.get(base)
        if cached is not None:
            return cached
        parsed = _parse_file(base, partial=False) if base.is_file() else None
        raw: dict[str, dict[str, Any]] = dict(parsed.entries) if parsed else {}
        applied: dict[str, list[str]] = {key: [] for key in raw}
        sources: dict[str, list[str]] = {key: [f"{base}:{parsed.lines[key]}"] for key in raw} if parsed else {}
        last_override: dict[str, Path] = {}
        for path, package, prefix in self.override_files(base):
            if not self._applies(package, prefix):
                continue
            override = _parse_file(path, partial=True)
            for key, entry in override.entries.items():
                raw[key] = _merge(raw.get(key), entry)
                applied.setdefault(key, []).append(path.name)
                sources.setdefault(key, []).append(f"{path}:{override.lines[key]}")
                last_override[key] = path
        references = {}
        for key, entry in raw.items():
            if applied[key]:  # the merge result must be a complete entry
                source = " + ".join(sources[key])
                try:
                    entry = _validate_entry(key, entry, source, partial=False, fix=_FIX_OVERRIDE)
                except ReferenceFileError as exc:
                    exc.path = str(last_override[key])
                    raise
            references[key] = _build(key, entry, applied[key])
        module = _Module(references=references)
        self._cache[base] = module
        return module

    def _applies(self, package: str, condition: tuple[int, ...] | str) -> bool:
        if package == ISA:
            return condition == self.isa_class
        return isinstance(condition, tuple) and _prefix_matches(condition, self.installed.get(package))

    def get(self, node_id: str) -> TestReference | None:
        """The test's reference with matching overrides applied; None if there is none."""
        _, key = split_node_id(node_id)
        reference = self._load(self.path_for(node_id)).references.get(key)
        return copy.deepcopy(reference)

    # -- writing --------------------------------------------------------------------------
    def stage(self, node_id: str, reference: TestReference) -> None:
        """Record an update for ``write_pending``; checks now that it can be written and read back."""
        path = self.path_for(node_id)
        _, key = split_node_id(node_id)
        if reference.key != key:
            raise ValueError(f"reference key {reference.key!r} does not match node id {node_id!r} (key {key!r})")
        # The same checks as on load, so a bad value fails here and never reaches a file.
        checked = TestReference.from_dict(key, reference.to_dict(), f"{path} (update for {node_id})")
        self._pending.setdefault(path, {})[key] = checked

    @property
    def pending(self) -> dict[Path, list[str]]:
        """Staged keys per base file (read-only view)."""
        return {path: sorted(keys) for path, keys in self._pending.items()}

    def write_pending(self) -> list[Path]:
        """Write every staged update into its base file; return the files written.

        Each file is re-read under a cross-process lock, so entries written meanwhile by another
        process (other keys) are kept. A malformed existing file is refused, not overwritten.
        Files that fail keep their staged updates; the others are written, then the errors raised.
        """
        written: list[Path] = []
        errors: list[OVQuantError] = []
        for path in sorted(self._pending):
            try:
                self._write_one(path, self._pending[path])
            except OVQuantError as exc:
                errors.append(exc)
                continue
            finally:
                self._cache.pop(path, None)  # next get() reads what is on disk now
            del self._pending[path]
            written.append(path)
        if errors:
            if len(errors) == 1:
                raise errors[0]
            raise ReferenceFileError(
                "could not write these reference files:\n" + "\n".join(f"  {e}" for e in errors)
                + (f"\nwritten: {', '.join(map(str, written))}" if written else "")
            )
        return written

    def _write_one(self, path: Path, updates: Mapping[str, TestReference]) -> None:
        lock = filelock.FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except filelock.Timeout:
            raise OVQuantError(
                f"{path}: could not lock {path}.lock within {LOCK_TIMEOUT_S:.0f} s (another process is "
                "updating this reference file); retry when it is done"
            ) from None
        except OSError as error:
            raise _write_failed(path, error, len(updates)) from error
        try:
            # temp files of a writer killed between naming its temp file and renaming it (the lock
            # is held, so no live writer owns one)
            with contextlib.suppress(OSError):
                remove_stale_temp_files(path)
            entries: dict[str, TestReference] = {}
            if path.exists():
                try:
                    parsed = _parse_file(path, partial=False)
                except ReferenceFileError as exc:
                    raise ReferenceFileError(
                        f"{exc}\n(not updated: {len(updates)} staged reference(s) were not written, to keep "
                        "the file as it is)",
                        path=exc.path,
                        line=exc.line,
                    ) from None
                entries = {key: _build(key, entry) for key, entry in parsed.entries.items()}
            entries.update(updates)
            try:
                atomic_write_text(path, _dump(entries))
            except OSError as error:  # disk full, quota, file size limit, permissions
                raise _write_failed(path, error, len(updates)) from error
        finally:
            lock.release()

    # -- housekeeping ---------------------------------------------------------------------
    def stale_keys(self, collected_node_ids: Iterable[str]) -> dict[Path, list[str]]:
        """Keys in the collected modules' reference files (base and overrides) that no collected test has.

        Only meaningful when whole modules were collected (no ``-k``/deselection): the caller decides.
        """
        collected: dict[Path, set[str]] = {}
        for node_id in collected_node_ids:
            _, key = split_node_id(node_id)
            collected.setdefault(self.path_for(node_id), set()).add(key)
        stale: dict[Path, list[str]] = {}
        for base in sorted(collected):
            files = [(base, False)] if base.is_file() else []
            files += [(path, True) for path, _, _ in self.override_files(base)]
            for path, partial in files:
                keys = sorted(set(_parse_file(path, partial=partial).entries) - collected[base])
                if keys:
                    stale[path] = keys
        return stale
