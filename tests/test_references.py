"""The reference store: path/key mapping, strict validation, per-stack overrides, safe writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pytest_ovquant import atomic
from pytest_ovquant.errors import OVQuantError
from pytest_ovquant.references import (
    SCHEMA_VERSION,
    InvalidNodeIdError,
    MetricValues,
    ReferenceFileError,
    ReferenceStore,
    SpeedupValues,
    TestReference,
    split_node_id,
)

MODULE = "tests/models/test_zoo.py"
NODE = f"{MODULE}::test_accuracy[resnet18]"
INSTALLED = {"torch": "2.14.1", "nncf": "3.1.0", "openvino": "2026.4.1", "torchao": None}

FULL_ENTRY = """\
schema_version: 1
tests:
  test_accuracy[resnet18]:
    metrics:
      top1: {fp32: 0.953, int8: 0.948, drop: 0.005}
      cosine: {fp32: 1.0, int8: 0.996, drop: 0.004}
    speedup: {value: 3.21, baseline: eager, machine: 9f2c1a7e}
    quantizer: {preset: mixed}
    environment: {torch: 2.14.1}
    xfail_reason: known regression
"""


def full_reference(key: str = "test_accuracy[resnet18]", **changes) -> TestReference:
    reference = TestReference(
        key=key,
        metrics={
            "top1": MetricValues(fp32=0.953, int8=0.948, drop=0.005),
            # values that only survive an exact (repr) float round trip
            "cosine": MetricValues(fp32=0.1 + 0.2, int8=1 / 3, drop=None),
            "tiny": MetricValues(fp32=1e-12, int8=-2.5e-308, drop=123456789.123456789),
        },
        speedup=SpeedupValues(value=3.21, baseline="ov_fp32", machine="00001234"),
        quantizer={"preset": "mixed", "ignored_scope": {"types": ["linear"]}, "subset_size": 300},
        environment={"torch": "2.14.1", "openvino": "2026.4.1", "machine": {"cpu": "x86", "cores": 2}},
        xfail_reason="known regression in openvino 2026.4, ticket 123",
    )
    for name, value in changes.items():
        setattr(reference, name, value)
    return reference


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


# ---------------------------------------------------------------------------------------------
# Node id -> (file, key)


@pytest.mark.parametrize(
    "node_id, relative_file, key",
    [
        (NODE, "tests/models/test_zoo.yaml", "test_accuracy[resnet18]"),
        ("test_top.py::test_a", "test_top.yaml", "test_a"),
        ("tests/test_m.py::TestX::test_y[p]", "tests/test_m.yaml", "TestX::test_y[p]"),
        ("tests/test_m.py::TestX::TestInner::test_y", "tests/test_m.yaml", "TestX::TestInner::test_y"),
        ("tests/test_m.py::test_y[a::b]", "tests/test_m.yaml", "test_y[a::b]"),
        ("tests/test_m.py::test_y[dir/sub/file.py]", "tests/test_m.yaml", "test_y[dir/sub/file.py]"),
        ("tests/test_m.py::test_y[with space-[nested]]", "tests/test_m.yaml", "test_y[with space-[nested]]"),
        ("tests/test_m.py::test_y[x.py::z]", "tests/test_m.yaml", "test_y[x.py::z]"),
        ("docs/guide.txt::guide.txt", "docs/guide.txt.yaml", "guide.txt"),
    ],
)
def test_path_and_key_mapping(tmp_path: Path, node_id: str, relative_file: str, key: str) -> None:
    store = ReferenceStore(tmp_path / "reference_metrics", INSTALLED)
    assert split_node_id(node_id) == (node_id.split("::", 1)[0], key)
    assert store.path_for(node_id) == tmp_path / "reference_metrics" / relative_file


@pytest.mark.parametrize(
    "node_id", ["tests/test_m.py", "tests/test_m.py::", "::test_a", "../outside/test_m.py::test_a", "/abs/test_m.py::t"]
)
def test_node_id_that_names_no_reference_is_rejected(tmp_path: Path, node_id: str) -> None:
    with pytest.raises(InvalidNodeIdError, match="node id") as info:
        split_node_id(node_id)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidNodeIdError):
        ReferenceStore(tmp_path, INSTALLED).get(node_id)


# ---------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_and_file_layout(tmp_path: Path) -> None:
    root = tmp_path / "reference_metrics"
    store = ReferenceStore(root, INSTALLED)
    staged = {
        NODE: full_reference(),
        f"{MODULE}::TestZoo::test_b[a::b/c d]": TestReference(key="TestZoo::test_b[a::b/c d]", metrics={}),
        f"{MODULE}::test_a[1]": TestReference(key="test_a[1]", metrics={"m": MetricValues(fp32=1, int8=0)}),
    }
    for node_id, reference in staged.items():
        store.stage(node_id, reference)
    assert store.get(NODE) is None  # staging writes nothing

    assert store.write_pending() == [root / "tests/models/test_zoo.yaml"]
    assert store.write_pending() == []  # pending cleared

    fresh = ReferenceStore(root, INSTALLED)
    for node_id, reference in staged.items():
        assert fresh.get(node_id) == reference
    loaded = fresh.get(f"{MODULE}::test_a[1]")
    assert type(loaded.metrics["m"].fp32) is float and loaded.metrics["m"].drop is None

    text = (root / "tests/models/test_zoo.yaml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == f"schema_version: {SCHEMA_VERSION}"
    document = yaml.safe_load(text)
    assert list(document) == ["schema_version", "tests"]
    assert list(document["tests"]) == sorted(key for key in document["tests"])
    assert list(document["tests"]) == ["TestZoo::test_b[a::b/c d]", "test_a[1]", "test_accuracy[resnet18]"]
    # None fields are omitted, ints written as floats
    assert document["tests"]["test_a[1]"] == {"metrics": {"m": {"fp32": 1.0, "int8": 0.0}}}
    assert "drop" not in document["tests"]["test_accuracy[resnet18]"]["metrics"]["cosine"]
    assert "applied_overrides" not in text
    # the all-digit machine id stays a string
    assert document["tests"]["test_accuracy[resnet18]"]["speedup"]["machine"] == "00001234"


@pytest.mark.parametrize(
    "key",
    [
        "test_q['single' \"double\" #hash: colon, comma]",
        "test_q[yes]",
        "test_q[1.5e3]",
        "test_q[ünïcode-名前]",
        "test_q[- leading dash]",
        "test_q[trailing space ]",
        "test_q[" + "x" * 200 + "]",
        "TestX::test_y[{brace}&anchor*alias!tag%]",
    ],
)
def test_keys_with_yaml_special_characters_round_trip(tmp_path: Path, key: str) -> None:
    store = ReferenceStore(tmp_path, INSTALLED)
    reference = TestReference(key=key, metrics={"top1": MetricValues(fp32=0.5, int8=0.25, drop=0.25)})
    store.stage(f"tests/test_m.py::{key}", reference)
    store.write_pending()
    assert ReferenceStore(tmp_path, INSTALLED).get(f"tests/test_m.py::{key}") == reference


def test_missing_file_and_missing_entry_return_none(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path, INSTALLED)
    assert store.get(NODE) is None
    write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    store = ReferenceStore(tmp_path, INSTALLED)
    assert store.get(f"{MODULE}::test_other") is None
    reference = store.get(NODE)
    assert reference.metrics["top1"] == MetricValues(fp32=0.953, int8=0.948, drop=0.005)
    assert reference.speedup == SpeedupValues(value=3.21, baseline="eager", machine="9f2c1a7e")
    assert reference.xfail_reason == "known regression"
    assert reference.applied_overrides == []


def test_get_returns_a_copy(tmp_path: Path) -> None:
    write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    store = ReferenceStore(tmp_path, INSTALLED)
    store.get(NODE).metrics["top1"].int8 = 0.0
    assert store.get(NODE).metrics["top1"].int8 == 0.948


def test_ints_are_accepted_where_floats_are_expected(tmp_path: Path) -> None:
    write(
        tmp_path / "tests/test_m.yaml",
        """\
        schema_version: 1
        tests:
          test_a:
            metrics: {top1: {fp32: 1, int8: 0, drop: 1}}
            speedup: {value: 3, baseline: ov_fp32, machine: abc}
        """,
    )
    reference = ReferenceStore(tmp_path, INSTALLED).get("tests/test_m.py::test_a")
    assert reference.metrics["top1"] == MetricValues(fp32=1.0, int8=0.0, drop=1.0)
    assert type(reference.metrics["top1"].fp32) is float
    assert reference.speedup.value == 3.0 and type(reference.speedup.value) is float


# ---------------------------------------------------------------------------------------------
# Bad files: each message names the file, what is wrong, and the fix.

ENTRY_HEAD = "schema_version: 1\ntests:\n  test_a:\n"

BAD_FILES = {
    "empty": ("", ["empty"]),
    "whitespace only": ("  \n\n", ["empty"]),
    "comments only": ("# nothing here\n", ["no content"]),
    "truncated mid flow mapping": (
        "schema_version: 1\ntests:\n  test_a:\n    metrics:\n      top1: {fp32: 0.9, int8",
        ["line 5", "invalid YAML"],
    ),
    "truncated mid entry": ("schema_version: 1\ntests:\n  test_a:\n    metrics:\n      top1:", ["test 'test_a'", "metrics.top1"]),
    "invalid syntax": ("schema_version: 1\ntests:\n  test_a:\n    metrics: [1, 2\n  bad: : :\n", ["line 5", "invalid YAML"]),
    "tab indentation": ("schema_version: 1\ntests:\n\ttest_a: {}\n", ["line 3", "invalid YAML"]),
    "top level list": ("- schema_version: 1\n- tests: {}\n", ["top level must be a mapping", "not a list"]),
    "top level scalar": ("just text\n", ["top level must be a mapping", "not a str"]),
    "unknown schema_version": (
        "schema_version: 99\ntests: {}\n",
        ["schema_version 99", "it reads 1", "upgrade pytest-ovquant", "line 1"],
    ),
    "schema_version as string": ("schema_version: '1'\ntests: {}\n", ["schema_version '1'", "it reads 1"]),
    "schema_version as bool": ("schema_version: true\ntests: {}\n", ["schema_version True"]),
    "missing schema_version": ("tests: {}\n", ["no schema_version", "schema_version: 1"]),
    "missing tests": ("schema_version: 1\n", ["no 'tests' mapping"]),
    "tests not a mapping": ("schema_version: 1\ntests: [a, b]\n", ["line 2", "'tests' must be a mapping"]),
    "tests null": ("schema_version: 1\ntests:\n", ["'tests' must be a mapping"]),
    "unknown top-level key": ("schema_version: 1\ntests: {}\ntest: {}\n", ["unknown top-level key", "'test'"]),
    "duplicate key in tests": (
        "schema_version: 1\ntests:\n  test_a: {metrics: {}}\n  test_b: {metrics: {}}\n  test_a: {metrics: {}}\n",
        ["duplicate key 'test_a'", "line 5", "first at line 3"],
    ),
    "duplicate key in entry": (
        ENTRY_HEAD + "    metrics: {}\n    xfail_reason: a\n    metrics: {}\n",
        ["duplicate key 'metrics'", "line 6"],
    ),
    "duplicate metric field": (
        ENTRY_HEAD + "    metrics:\n      top1: {fp32: 1.0, fp32: 2.0}\n",
        ["duplicate key 'fp32'", "line 5"],
    ),
    "duplicate top-level key": ("schema_version: 1\nschema_version: 1\ntests: {}\n", ["duplicate key 'schema_version'"]),
    "entry not a mapping": (ENTRY_HEAD[:-1] + " 3\n", ["test 'test_a'", "must be a mapping"]),
    "unknown field in entry": (
        ENTRY_HEAD + "    metrics: {}\n    xfail: typo\n",
        ["test 'test_a'", "unknown field(s) 'xfail'", "allowed: metrics, speedup, quantizer, environment, xfail_reason"],
    ),
    "unknown field in metric": (
        ENTRY_HEAD + "    metrics: {top1: {fp32: 1.0, int4: 0.5}}\n",
        ["test 'test_a'", "'int4'", "metrics.top1", "allowed: fp32, int8, drop"],
    ),
    "unknown field in speedup": (
        ENTRY_HEAD + "    metrics: {}\n    speedup: {value: 2.0, baseline: eager, machine: m, when: now}\n",
        ["test 'test_a'", "'when'", "allowed: value, baseline, machine"],
    ),
    "metric value a string": (
        ENTRY_HEAD + "    metrics: {top1: {fp32: 0.9, int8: high}}\n",
        ["test 'test_a'", "metrics.top1.int8 = 'high' must be a number"],
    ),
    "metric value a bool": (
        ENTRY_HEAD + "    metrics: {top1: {fp32: true}}\n",
        ["test 'test_a'", "metrics.top1.fp32 = True must be a number"],
    ),
    "metric value nan": (ENTRY_HEAD + "    metrics: {top1: {drop: .nan}}\n", ["metrics.top1.drop", "finite"]),
    "metrics a list": (ENTRY_HEAD + "    metrics: [top1, top5]\n", ["test 'test_a'", "metrics = ['top1', 'top5'] must be a mapping"]),
    "metric values a number": (ENTRY_HEAD + "    metrics: {top1: 0.9}\n", ["test 'test_a'", "metrics.top1 must be a mapping"]),
    "metric name empty": (ENTRY_HEAD + "    metrics: {'': {fp32: 1.0}}\n", ["test 'test_a'", "metric name ''"]),
    "metric name not a string": (ENTRY_HEAD + "    metrics: {5: {fp32: 1.0}}\n", ["test 'test_a'", "metric name 5"]),
    "speedup value a string": (
        ENTRY_HEAD + "    metrics: {}\n    speedup: {value: fast, baseline: eager, machine: m}\n",
        ["test 'test_a'", "speedup.value = 'fast' must be a number"],
    ),
    "negative speedup": (
        ENTRY_HEAD + "    metrics: {}\n    speedup: {value: -1.5, baseline: eager, machine: m}\n",
        ["test 'test_a'", "speedup.value = -1.5 must be a positive number"],
    ),
    "zero speedup": (
        ENTRY_HEAD + "    metrics: {}\n    speedup: {value: 0, baseline: eager, machine: m}\n",
        ["speedup.value = 0 must be a positive number"],
    ),
    "bad baseline": (
        ENTRY_HEAD + "    metrics: {}\n    speedup: {value: 2.0, baseline: ov_int8, machine: m}\n",
        ["test 'test_a'", "speedup.baseline = 'ov_int8' must be one of eager, ov_fp32"],
    ),
    "speedup missing machine": (
        ENTRY_HEAD + "    metrics: {}\n    speedup: {value: 2.0, baseline: eager}\n",
        ["test 'test_a'", "speedup is missing field(s) machine"],
    ),
    "machine not a string": (
        ENTRY_HEAD + "    metrics: {}\n    speedup: {value: 2.0, baseline: eager, machine: 1234}\n",
        ["speedup.machine = 1234 must be a non-empty string (quote it)"],
    ),
    "quantizer not a mapping": (ENTRY_HEAD + "    metrics: {}\n    quantizer: mixed\n", ["test 'test_a'", "quantizer = 'mixed'"]),
    "environment a list": (ENTRY_HEAD + "    metrics: {}\n    environment: [torch]\n", ["test 'test_a'", "environment = ['torch']"]),
    "xfail_reason not a string": (ENTRY_HEAD + "    metrics: {}\n    xfail_reason: 123\n", ["test 'test_a'", "xfail_reason = 123"]),
    "test key not a string": ("schema_version: 1\ntests:\n  12: {metrics: {}}\n", ["line 3", "test key 12"]),
    "not utf-8": (None, ["not UTF-8"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_a_clear_error(tmp_path: Path, case: str) -> None:
    text, fragments = BAD_FILES[case]
    path = tmp_path / "tests/test_m.yaml"
    path.parent.mkdir(parents=True)
    if text is None:
        path.write_bytes(b"schema_version: 1\ntests:\n  test_a: {xfail_reason: \xff\xfe}\n")
    else:
        path.write_text(text, encoding="utf-8")
    store = ReferenceStore(tmp_path, INSTALLED)
    with pytest.raises(ReferenceFileError) as info:
        store.get("tests/test_m.py::test_a")
    message = str(info.value)
    assert str(path) in message
    assert info.value.path == str(path)
    assert "fix the file or delete it and re-record with --ovq-update-refs" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    # the same file refuses to be updated, and is left as it was
    before = path.read_bytes()
    store.stage("tests/test_m.py::test_b", TestReference(key="test_b", metrics={}))
    with pytest.raises(ReferenceFileError, match="not updated"):
        store.write_pending()
    assert path.read_bytes() == before
    assert listing(path.parent) == ["test_m.yaml"]
    assert store.pending == {path: ["test_b"]}


def test_entry_errors_name_the_entry_line(tmp_path: Path) -> None:
    write(
        tmp_path / "tests/test_m.yaml",
        """\
        schema_version: 1
        tests:
          test_a:
            metrics: {}
          test_b:
            metrics: {top1: {int8: "high"}}
        """,
    )
    with pytest.raises(ReferenceFileError) as info:
        ReferenceStore(tmp_path, INSTALLED).get("tests/test_m.py::test_a")  # whole file validated
    assert f"{tmp_path / 'tests/test_m.yaml'}:5: test 'test_b'" in str(info.value)
    assert info.value.line == 5


def test_every_truncation_of_a_file_loads_or_is_a_reference_file_error(tmp_path: Path) -> None:
    """A file cut anywhere (a crash of a non-atomic writer) never escapes as another exception."""
    store = ReferenceStore(tmp_path / "src", INSTALLED)
    store.stage(NODE, full_reference())
    store.stage(f"{MODULE}::test_b", TestReference(key="test_b", metrics={"m": MetricValues(fp32=1.0)}))
    (source,) = store.write_pending()
    text = source.read_text(encoding="utf-8")
    outcomes = {"loaded": 0, "error": 0}
    for cut in range(len(text)):
        path = write(tmp_path / f"cut{cut}" / "tests/models/test_zoo.yaml", text[:cut])
        try:
            ReferenceStore(path.parents[2], INSTALLED).get(NODE)
        except ReferenceFileError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
        else:
            outcomes["loaded"] += 1
    assert outcomes["error"] > 100  # e.g. every cut inside "schema_version" or a key
    assert outcomes["loaded"] > 0  # cuts at an entry boundary are valid (shorter) files


def test_from_dict_validates_like_the_loader() -> None:
    with pytest.raises(ReferenceFileError, match=r"src\.yaml: test 'k': metrics.top1.int8 = 'high'"):
        TestReference.from_dict("k", {"metrics": {"top1": {"int8": "high"}}}, "src.yaml")
    reference = TestReference.from_dict("k", {"metrics": {"top1": {"int8": 1}}}, "src.yaml")
    assert reference == TestReference(key="k", metrics={"top1": MetricValues(int8=1.0)})
    assert TestReference.from_dict("k", full_reference(key="k").to_dict(), "src.yaml") == full_reference(key="k")


# ---------------------------------------------------------------------------------------------
# Staging


def test_stage_rejects_bad_values_before_anything_is_written(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path, INSTALLED)
    bad_speedup = full_reference(speedup=SpeedupValues(value=-2.0, baseline="eager", machine="m"))
    with pytest.raises(ReferenceFileError, match=r"test 'test_accuracy\[resnet18\]': speedup.value = -2.0"):
        store.stage(NODE, bad_speedup)
    with pytest.raises(ReferenceFileError, match="quantizer cannot be written as YAML"):
        store.stage(NODE, full_reference(quantizer={"preset": object()}))
    with pytest.raises(ValueError, match="does not match node id"):
        store.stage(NODE, full_reference(key="test_other"))
    assert store.pending == {}
    assert store.write_pending() == []
    assert not (tmp_path / "tests").exists()


def test_staged_reference_is_a_snapshot(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path, INSTALLED)
    reference = full_reference()
    store.stage(NODE, reference)
    reference.metrics["top1"].int8 = 0.0
    store.write_pending()
    assert ReferenceStore(tmp_path, INSTALLED).get(NODE) == full_reference()


# ---------------------------------------------------------------------------------------------
# Per-stack override files

OVERRIDE_INT8 = """\
schema_version: 1
tests:
  test_accuracy[resnet18]:
    metrics:
      top1: {int8: 0.5}
"""


@pytest.mark.parametrize(
    "suffix, installed, applies",
    [
        ("openvino-2026.4", {"openvino": "2026.4.1"}, True),
        ("openvino-2026.4", {"openvino": "2026.4"}, True),
        ("openvino-2026.4", {"openvino": "2026.4.0-17911-83d9b1b2a5f-releases/2026/4"}, True),
        ("openvino-2026.4", {"openvino": "2026.41.0"}, False),
        ("openvino-2026.4", {"openvino": "2026.40"}, False),
        ("openvino-2026.4", {"openvino": "2026.5.0"}, False),
        ("openvino-2026.4.1", {"openvino": "2026.4"}, False),
        ("openvino-2026.4.0", {"openvino": "2026.4"}, True),
        ("openvino-2026", {"openvino": "2026.4.1"}, True),
        ("torch-2.9", {"torch": "2.9.1+cu128"}, True),
        ("torch-2.9", {"torch": "2.9.0.dev20250101+cpu"}, True),
        ("torch-2.9", {"torch": "2.10.0"}, False),
        ("torch-2.9", {"torch": "12.9.1"}, False),
        ("torchao-0.18", {"torchao": None}, False),  # not installed
        ("torchao-0.18", {}, False),  # not even asked about
        ("torchao-0.18", {"torchao": "unknown"}, False),
        ("openvino_tokenizers-2026.4", {"openvino-tokenizers": "2026.4.0.0"}, True),
    ],
)
def test_override_applies_on_matching_version_prefix(tmp_path: Path, suffix: str, installed: dict, applies: bool) -> None:
    write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    write(tmp_path / f"tests/models/test_zoo@{suffix}.yaml", OVERRIDE_INT8)
    reference = ReferenceStore(tmp_path, installed).get(NODE)
    assert reference.metrics["top1"].int8 == (0.5 if applies else 0.948)
    assert reference.applied_overrides == ([f"test_zoo@{suffix}.yaml"] if applies else [])


def test_override_merges_fields_individually(tmp_path: Path) -> None:
    write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    write(
        tmp_path / "tests/models/test_zoo@openvino-2026.4.yaml",
        """\
        schema_version: 1
        tests:
          test_accuracy[resnet18]:
            metrics:
              top1: {int8: 0.9, drop: 0.053}
              top5: {fp32: 0.99}
            speedup: {value: 1.5}
            quantizer: {preset: performance}
            xfail_reason: only on 2026.4
        """,
    )
    reference = ReferenceStore(tmp_path, INSTALLED).get(NODE)
    assert reference.metrics == {
        "top1": MetricValues(fp32=0.953, int8=0.9, drop=0.053),  # fp32 kept from the base
        "cosine": MetricValues(fp32=1.0, int8=0.996, drop=0.004),  # untouched metric kept
        "top5": MetricValues(fp32=0.99),  # new metric added
    }
    assert reference.speedup == SpeedupValues(value=1.5, baseline="eager", machine="9f2c1a7e")
    assert reference.quantizer == {"preset": "performance"}  # replaced whole
    assert reference.environment == {"torch": "2.14.1"}  # not in the override: kept
    assert reference.xfail_reason == "only on 2026.4"


def test_override_can_clear_a_field_with_null(tmp_path: Path) -> None:
    write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    write(
        tmp_path / "tests/models/test_zoo@openvino-2026.4.yaml",
        """\
        schema_version: 1
        tests:
          test_accuracy[resnet18]: {metrics: {top1: {drop: null}}, speedup: null, xfail_reason: null}
        """,
    )
    reference = ReferenceStore(tmp_path, INSTALLED).get(NODE)
    assert reference.metrics["top1"] == MetricValues(fp32=0.953, int8=0.948, drop=None)
    assert reference.speedup is None and reference.xfail_reason is None


def test_override_creates_an_entry_missing_from_the_base(tmp_path: Path) -> None:
    write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    write(
        tmp_path / "tests/models/test_zoo@torch-2.14.yaml",
        """\
        schema_version: 1
        tests:
          TestNew::test_only_here[x]:
            metrics: {top1: {fp32: 0.7, int8: 0.6}}
        """,
    )
    store = ReferenceStore(tmp_path, INSTALLED)
    assert store.get(f"{MODULE}::TestNew::test_only_here[x]") == TestReference(
        key="TestNew::test_only_here[x]",
        metrics={"top1": MetricValues(fp32=0.7, int8=0.6)},
        applied_overrides=["test_zoo@torch-2.14.yaml"],
    )
    assert store.get(NODE).applied_overrides == []  # entries without an override entry are untouched


def test_override_without_base_file_still_applies(tmp_path: Path) -> None:
    write(tmp_path / "tests/models/test_zoo@torch-2.14.yaml", "schema_version: 1\ntests:\n  t: {metrics: {m: {int8: 1}}}\n")
    assert ReferenceStore(tmp_path, INSTALLED).get(f"{MODULE}::t").metrics == {"m": MetricValues(int8=1.0)}


def test_several_overrides_apply_in_sorted_file_name_order(tmp_path: Path) -> None:
    write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)

    def override(suffix: str, int8: float, drop: float | None = None) -> None:
        fields = f"int8: {int8}" + ("" if drop is None else f", drop: {drop}")
        write(
            tmp_path / f"tests/models/test_zoo@{suffix}.yaml",
            f"schema_version: 1\ntests:\n  test_accuracy[resnet18]:\n    metrics: {{top1: {{{fields}}}}}\n",
        )

    override("torch-2.14", 0.3, drop=0.1)  # sorts last: wins on int8
    override("openvino-2026.4", 0.1, drop=0.2)
    override("nncf-3.1", 0.2)
    override("nncf-3.0", 0.9)  # does not match
    reference = ReferenceStore(tmp_path, INSTALLED).get(NODE)
    assert reference.applied_overrides == ["test_zoo@nncf-3.1.yaml", "test_zoo@openvino-2026.4.yaml", "test_zoo@torch-2.14.yaml"]
    assert reference.metrics["top1"] == MetricValues(fp32=0.953, int8=0.3, drop=0.1)


def test_override_that_leaves_an_incomplete_entry_is_an_error(tmp_path: Path) -> None:
    override = write(
        tmp_path / "tests/models/test_zoo@openvino-2026.4.yaml",
        "schema_version: 1\ntests:\n  test_new:\n    speedup: {value: 2.0}\n",
    )
    with pytest.raises(ReferenceFileError) as info:
        ReferenceStore(tmp_path, INSTALLED).get(NODE)
    assert f"{override}:3: test 'test_new': speedup is missing field(s) baseline, machine" in str(info.value)
    assert "fix the override file or delete it" in str(info.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("schema_version: 1\ntests:\n  t: {metrics: {m: {int8: high}}}\n", "metrics.m.int8 = 'high'"),
        ("schema_version: 1\ntests:\n  t: {speedup: {baseline: eager_ish}}\n", "speedup.baseline = 'eager_ish'"),
        ("schema_version: 2\ntests: {}\n", "schema_version 2"),
        ("schema_version: 1\ntests:\n  t: {}\n  t: {}\n", "duplicate key 't'"),
    ],
)
def test_bad_matching_override_file_is_an_error(tmp_path: Path, text: str, fragment: str) -> None:
    write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    override = write(tmp_path / "tests/models/test_zoo@openvino-2026.4.yaml", text)
    with pytest.raises(ReferenceFileError) as info:
        ReferenceStore(tmp_path, INSTALLED).get(NODE)
    assert str(override) in str(info.value) and fragment in str(info.value)
    assert "override file" in str(info.value)


def test_override_file_with_a_bad_name_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    bad = write(tmp_path / "tests/models/test_zoo@openvino.yaml", OVERRIDE_INT8)
    with pytest.raises(ReferenceFileError, match=r"test_zoo@<package>-<version prefix>\.yaml") as info:
        ReferenceStore(tmp_path, INSTALLED).get(NODE)
    assert str(bad) in str(info.value)


def test_write_pending_never_touches_override_files(tmp_path: Path) -> None:
    base = write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    override = write(tmp_path / "tests/models/test_zoo@openvino-2026.4.yaml", OVERRIDE_INT8)
    os.utime(override, (1_000_000, 1_000_000))
    before = override.read_bytes()
    store = ReferenceStore(tmp_path, INSTALLED)
    reference = store.get(NODE)
    assert reference.applied_overrides == ["test_zoo@openvino-2026.4.yaml"]
    reference.metrics["top1"].fp32 = 0.96
    store.stage(NODE, reference)
    assert store.write_pending() == [base]
    assert override.read_bytes() == before and override.stat().st_mtime == 1_000_000
    assert listing(base.parent) == ["test_zoo.yaml", "test_zoo@openvino-2026.4.yaml"]
    written = yaml.safe_load(base.read_text())["tests"]["test_accuracy[resnet18]"]
    assert written["metrics"]["top1"]["fp32"] == 0.96
    assert "applied_overrides" not in base.read_text()


# ---------------------------------------------------------------------------------------------
# Writing


def test_write_pending_keeps_other_keys_including_ones_written_after_the_first_read(tmp_path: Path) -> None:
    base = write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    store = ReferenceStore(tmp_path, INSTALLED)
    assert store.get(NODE) is not None  # the store has read (and cached) the file

    other = ReferenceStore(tmp_path, INSTALLED)  # e.g. another xdist worker
    other.stage(f"{MODULE}::test_late", TestReference(key="test_late", metrics={"m": MetricValues(fp32=2.0)}))
    other.write_pending()

    store.stage(f"{MODULE}::test_mine", TestReference(key="test_mine", metrics={"m": MetricValues(int8=1.0)}))
    assert store.write_pending() == [base]

    fresh = ReferenceStore(tmp_path, INSTALLED)
    assert fresh.get(NODE).xfail_reason == "known regression"
    assert fresh.get(f"{MODULE}::test_late").metrics["m"].fp32 == 2.0
    assert fresh.get(f"{MODULE}::test_mine").metrics["m"].int8 == 1.0
    assert store.get(f"{MODULE}::test_late") is not None  # the writer's cache was refreshed


def test_write_pending_writes_each_module_and_creates_directories(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path / "deep" / "root", INSTALLED)
    store.stage("tests/a/test_x.py::t", TestReference(key="t", metrics={}))
    store.stage("tests/b/c/test_y.py::t", TestReference(key="t", metrics={}))
    store.stage("tests/b/c/test_y.py::u", TestReference(key="u", metrics={}))
    written = store.write_pending()
    assert written == [tmp_path / "deep/root/tests/a/test_x.yaml", tmp_path / "deep/root/tests/b/c/test_y.yaml"]
    assert list(yaml.safe_load(written[1].read_text())["tests"]) == ["t", "u"]
    assert oct(written[0].stat().st_mode & 0o777) == oct(0o644)


def test_one_malformed_file_does_not_block_the_other_modules(tmp_path: Path) -> None:
    bad = write(tmp_path / "tests/test_bad.yaml", "schema_version: 1\ntests: [oops]\n")
    store = ReferenceStore(tmp_path, INSTALLED)
    store.stage("tests/test_bad.py::t", TestReference(key="t", metrics={}))
    store.stage("tests/test_good.py::t", TestReference(key="t", metrics={}))
    with pytest.raises(ReferenceFileError, match="test_bad.yaml"):
        store.write_pending()
    assert bad.read_text() == "schema_version: 1\ntests: [oops]\n"
    assert ReferenceStore(tmp_path, INSTALLED).get("tests/test_good.py::t") is not None
    assert store.pending == {bad: ["t"]}  # kept for a retry after the file is fixed


@pytest.mark.parametrize("existing", [True, False])
def test_crash_mid_write_leaves_the_old_file_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    base = tmp_path / "tests/models/test_zoo.yaml"
    if existing:
        write(base, FULL_ENTRY)
    before = base.read_bytes() if existing else None
    store = ReferenceStore(tmp_path, INSTALLED)
    store.stage(NODE, full_reference())

    seen: list[str] = []

    def crash(src: str, dst: str) -> None:
        seen.append(Path(src).read_text(encoding="utf-8"))  # the complete new content was there
        raise OSError("simulated crash")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(ReferenceFileError, match="simulated crash"):
        store.write_pending()
    monkeypatch.undo()

    assert len(seen) == 1 and "known regression in openvino 2026.4" in seen[0]
    assert (base.read_bytes() if existing else None) == before
    assert base.exists() == existing
    assert listing(base.parent) == (["test_zoo.yaml"] if existing else [])
    # the update is still pending and goes through once the "crash" is gone
    assert store.write_pending() == [base]
    assert ReferenceStore(tmp_path, INSTALLED).get(NODE) == full_reference()
    assert listing(base.parent) == ["test_zoo.yaml"]


def test_crash_during_fsync_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = write(tmp_path / "tests/models/test_zoo.yaml", FULL_ENTRY)
    store = ReferenceStore(tmp_path, INSTALLED)
    store.stage(NODE, full_reference())

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", crash)
    with pytest.raises(ReferenceFileError, match="disk full"):
        store.write_pending()
    assert base.read_text() == FULL_ENTRY
    assert listing(base.parent) == ["test_zoo.yaml"]


WORKER = """
import sys, time
from pathlib import Path
from pytest_ovquant import atomic
from pytest_ovquant import references as refs

root, prefix, start = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
real_write = refs.atomic_write_text

def slow_write(path, text):
    time.sleep(0.01)  # widen the read-modify-write window: without the lock, updates get lost
    real_write(path, text)

refs.atomic_write_text = slow_write
store = refs.ReferenceStore(root, {})
while not start.exists():
    time.sleep(0.005)
for i in range(20):
    key = f"test_{prefix}[{i}]"
    store.stage(f"tests/test_shared.py::{key}", refs.TestReference(key=key, metrics={"m": refs.MetricValues(fp32=i)}))
    store.write_pending()
"""


def test_two_processes_updating_the_same_file_keep_all_keys(tmp_path: Path) -> None:
    start = tmp_path / "start"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / "refs"), prefix, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in ("a", "b")
    ]
    start.touch()  # both workers start writing at the same time, after their (slow) imports
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
    path = tmp_path / "refs/tests/test_shared.yaml"
    keys = set(yaml.safe_load(path.read_text())["tests"])
    expected = {f"test_{p}[{i}]" for p in "ab" for i in range(20)}
    assert keys == expected, f"lost: {sorted(expected - keys)}"
    assert listing(path.parent) == ["test_shared.yaml"]


# ---------------------------------------------------------------------------------------------
# Stale keys


def test_stale_keys_reports_references_of_tests_that_no_longer_exist(tmp_path: Path) -> None:
    base = write(
        tmp_path / "tests/models/test_zoo.yaml",
        """\
        schema_version: 1
        tests:
          test_accuracy[resnet18]: {metrics: {}}
          test_accuracy[vgg16]: {metrics: {}}
          TestOld::test_gone: {metrics: {}}
        """,
    )
    override = write(
        tmp_path / "tests/models/test_zoo@torch-2.9.yaml",
        "schema_version: 1\ntests:\n  test_accuracy[resnet18]: {}\n  test_removed: {}\n",
    )
    write(tmp_path / "tests/test_other.yaml", "schema_version: 1\ntests:\n  test_x: {metrics: {}}\n")  # not collected
    store = ReferenceStore(tmp_path, INSTALLED)
    collected = [NODE, f"{MODULE}::test_accuracy[mobilenet]", "tests/test_new.py::test_a"]
    assert store.stale_keys(collected) == {
        base: ["TestOld::test_gone", "test_accuracy[vgg16]"],
        override: ["test_removed"],
    }
    assert store.stale_keys([NODE, f"{MODULE}::test_accuracy[vgg16]", f"{MODULE}::TestOld::test_gone", f"{MODULE}::test_removed"]) == {}
    assert store.stale_keys([]) == {}


def test_errors_share_the_plugin_base_class() -> None:
    assert issubclass(ReferenceFileError, OVQuantError)
    assert issubclass(InvalidNodeIdError, OVQuantError) and issubclass(InvalidNodeIdError, ValueError)
