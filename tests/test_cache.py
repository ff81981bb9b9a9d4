"""The on-disk artifact cache: hits across instances and processes, integrity, crash safety, integration.

Real artifacts throughout: a quantized SmallCNN (torch.export.save/load round trip, lowered through
both lowerings) and its OpenVINO IR. Cross-process tests start real Python processes on one root.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import filelock
import pytest
import torch
from small_models import SmallCNN, image_batches, seeded

from pytest_ovquant.artifacts import ArtifactStore, ModelArtifacts
from pytest_ovquant.cache import (
    ArtifactCache,
    CacheError,
    CacheWarning,
    cache_key,
    graph_fingerprint,
    versions_part,
)
from pytest_ovquant.config import make_config
from pytest_ovquant.errors import LoweringError, OVQuantError
from pytest_ovquant.fingerprint import definition_fingerprint
from pytest_ovquant.flow import export_model, lower, quantize
from pytest_ovquant.flow.export import export_program
from pytest_ovquant.flow.lower import export_to_openvino
from pytest_ovquant.flow.replay import REPLAY_NOTE, ReplayedTorchCompile, replay_record

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quantized_cnn(small_cnn, cnn_inputs, cnn_calibration) -> torch.fx.GraphModule:
    return quantize(export_model(small_cnn, cnn_inputs), make_config(), cnn_calibration[:8])


class Builder:
    """A build function that counts its calls."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.make()


def must_not_build() -> Any:
    raise AssertionError("build() called although the entry is in the cache")


def entries(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("??/*/meta.json"))


def tmp_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "tmp").iterdir() if not p.name.startswith(".")) if (root / "tmp").exists() else []


# -- keys and the directory --------------------------------------------------------------------
def test_cache_key_is_sha256_of_its_parts_and_versions_name_the_stack():
    key = cache_key("a", "b")
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == cache_key("a", "b")
    assert len({key, cache_key("ab"), cache_key("a", "b", ""), cache_key("b", "a")}) == 4
    versions = json.loads(versions_part())
    assert {"torch", "nncf", "openvino"} <= set(versions)
    assert versions["torch"] == torch.__version__.split("+")[0]


def test_new_cache_ignores_itself_in_git_and_tags_itself(tmp_path):
    root = tmp_path / "deep" / ".ovquant_cache"
    ArtifactCache(root)
    assert (root / ".gitignore").read_text() == "*\n"
    assert (root / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_graph_fingerprint_sees_an_edited_forward_with_the_same_weights(small_cnn, cnn_inputs):
    class Switch(SmallCNN):
        use_relu = True

        def forward(self, x):
            x = self.conv1(x)
            x = torch.relu(x) if self.use_relu else torch.sigmoid(x)
            x = torch.relu(self.conv2(x))
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))

    model = Switch()
    model.load_state_dict(small_cnn.state_dict())
    with_relu = graph_fingerprint(export_model(model.eval(), cnn_inputs))
    model.use_relu = False  # same class, same state_dict: only the graph tells them apart
    assert graph_fingerprint(export_model(model, cnn_inputs)) != with_relu
    assert graph_fingerprint(export_model(small_cnn, cnn_inputs)) == graph_fingerprint(
        export_model(small_cnn, cnn_inputs)
    )


NET_SOURCE = """
import torch


def activation(x):
    return torch.relu(x)


class Net(torch.nn.Module):
    def __init__(self, eps=1e-5):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.eps = eps
        self.register_buffer("offset", torch.zeros(4), persistent=False)

    def forward(self, x):
        return activation(self.linear(x) + self.offset) + self.eps
"""


def _import_net(path: Path, source: str) -> Any:
    import importlib.util

    path.write_text(source)
    spec = importlib.util.spec_from_file_location("net_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does: inspect finds a class's file through it
    spec.loader.exec_module(module)
    return module


def _net(module: Any, **kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return module.Net(**kwargs).eval()


def test_definition_fingerprint_sees_what_the_state_dict_does_not(tmp_path):
    module = _import_net(tmp_path / "net.py", NET_SOURCE)
    base = definition_fingerprint(_net(module))
    assert base is not None and definition_fingerprint(_net(module)) == base
    # same state_dict, different exported graph: each one changes the fingerprint
    changed = {
        "an attribute": _net(module, eps=1e-3),
        "training mode": _net(module).train(),
    }
    with_buffer = _net(module)
    with_buffer.offset.fill_(1.0)  # a non-persistent buffer: not in the state_dict
    changed["a non-persistent buffer"] = with_buffer
    with_hook = _net(module)
    with_hook.linear.register_forward_hook(lambda mod, args, out: out * 2)
    changed["a forward hook"] = with_hook
    for what, model in changed.items():
        assert definition_fingerprint(model) != base, what
    # an edited helper in the model's source file (the class itself unchanged)
    edited = _import_net(tmp_path / "net.py", NET_SOURCE.replace("torch.relu(x)", "torch.sigmoid(x)"))
    assert definition_fingerprint(_net(edited)) != base


def test_definition_fingerprint_is_the_same_in_another_process_and_none_without_a_stable_identity(tmp_path):
    module = _import_net(tmp_path / "net.py", NET_SOURCE)
    script = (
        "import importlib.util, sys, torch\n"
        "from pytest_ovquant.fingerprint import definition_fingerprint\n"
        f"spec = importlib.util.spec_from_file_location('net_under_test', {str(tmp_path / 'net.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['net_under_test'] = module\n"
        "spec.loader.exec_module(module)\n"
        "torch.manual_seed(0)\n"
        "print(definition_fingerprint(module.Net().eval()))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout.strip() == definition_fingerprint(_net(module))
    model = _net(module)
    model.helper = object()  # repr names a memory address: no identity across processes
    assert definition_fingerprint(model) is None


def test_graph_record_follows_the_definition_and_matches_the_exported_graph(tmp_path):
    module = _import_net(tmp_path / "net.py", NET_SOURCE)
    inputs = (torch.randn(2, 4),)
    config = make_config()
    for eps in (1e-5, 1e-3):  # same weights, different graphs
        model = _net(module, eps=eps)
        expected = graph_fingerprint(export_model(model, inputs))
        cold = ArtifactStore(cache=ArtifactCache(tmp_path / "cache"))
        assert _artifacts(cold, model, inputs, []).graph_fingerprint(config) == expected
        warm = ArtifactStore(cache=ArtifactCache(tmp_path / "cache"))
        assert _artifacts(warm, model, inputs, []).graph_fingerprint(config) == expected
        assert [r.step for r in warm.records] == []  # the record answered: no export
    assert [e.kind for e in ArtifactCache(tmp_path / "cache").build_log()] == ["exported", "graph"] * 2
    # without a stable definition the model is exported each time
    model = _net(module)
    model.helper = object()
    store = ArtifactStore(cache=ArtifactCache(tmp_path / "cache"))
    assert _artifacts(store, model, inputs, []).graph_fingerprint(config) == graph_fingerprint(export_model(model, inputs))
    assert [r.step for r in store.records] == ["export"]


# -- programs: miss, hit, round trip -----------------------------------------------------------
def test_miss_then_hit_in_a_new_instance_without_building(tmp_path, quantized_cnn, cnn_inputs):
    key = cache_key("program", "miss-then-hit")
    build = Builder(lambda: quantized_cnn)
    module, status = ArtifactCache(tmp_path).get_or_build_program(key, build, cnn_inputs)
    assert (status, build.calls) == ("built", 1)
    assert module is quantized_cnn
    assert entries(tmp_path) == [tmp_path / key[:2] / key]
    assert tmp_dirs(tmp_path) == []

    loaded, status = ArtifactCache(tmp_path).get_or_build_program(key, must_not_build, cnn_inputs)
    assert status == "hit"
    assert isinstance(loaded, torch.fx.GraphModule) and loaded is not quantized_cnn
    for inputs in (cnn_inputs, *image_batches(3, seed=7)):
        with torch.no_grad():
            torch.testing.assert_close(loaded(*inputs), quantized_cnn(*inputs), rtol=0, atol=0)
    [logged] = ArtifactCache(tmp_path).build_log()
    assert (logged.key, logged.kind, logged.pid) == (key, "program", os.getpid())
    meta = json.loads((tmp_path / key[:2] / key / "meta.json").read_text())
    assert meta["key"] == key and set(meta["files"]) == {"program.pt2"}


@pytest.mark.parametrize("lowering", ["torch.compile", "export"])
def test_loaded_program_still_lowers_to_int8(tmp_path, quantized_cnn, cnn_inputs, lowering):
    key = cache_key("program", "lowers")
    ArtifactCache(tmp_path).get_or_build_program(key, lambda: quantized_cnn, cnn_inputs)
    loaded, status = ArtifactCache(tmp_path).get_or_build_program(key, must_not_build, cnn_inputs)
    assert status == "hit"
    config = make_config(("test", {"lowering": lowering}))
    report = lower(loaded, cnn_inputs, config, quantized=True).report
    assert report.ok, report.describe()
    assert report.quantized_layers == 3 and report.int8_layers == 3
    original = lower(quantized_cnn, cnn_inputs, config, quantized=True).report
    assert (report.n_irs, report.int8_layers) == (original.n_irs, original.int8_layers)


def test_dynamic_batch_program_round_trips_with_a_dynamic_batch(tmp_path, small_cnn):
    example = (torch.randn(2, 3, 32, 32),)
    config = make_config(("test", {"dynamic_batch": True}))
    from pytest_ovquant.flow.export import batch_dynamic_shapes

    built = quantize(export_model(small_cnn, example, dynamic_batch=True), config, image_batches(4))
    key = cache_key("program", "dynamic")
    shapes = batch_dynamic_shapes(example)
    ArtifactCache(tmp_path).get_or_build_program(key, lambda: built, example, dynamic_shapes=shapes)
    loaded, status = ArtifactCache(tmp_path).get_or_build_program(key, must_not_build, example, dynamic_shapes=shapes)
    assert status == "hit"
    batch5 = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch5), built(batch5), rtol=0, atol=0)


def test_exported_program_is_saved_as_is_and_loads_to_the_same_graph(tmp_path, small_cnn, cnn_inputs):
    program = export_program(small_cnn, cnn_inputs)
    key = cache_key("exported", "cnn")
    build = Builder(lambda: program)
    assert ArtifactCache(tmp_path).get_or_build_exported(key, build) == (program, "built")
    loaded, status = ArtifactCache(tmp_path).get_or_build_exported(key, must_not_build)
    assert status == "hit" and isinstance(loaded, torch.export.ExportedProgram) and loaded is not program
    fresh, again = program.module(), loaded.module()
    # the same code with the same node names (tests address nodes by name) and the same weights
    assert again.code == fresh.code
    assert graph_fingerprint(again) == graph_fingerprint(fresh)
    with torch.no_grad():
        torch.testing.assert_close(again(*cnn_inputs), small_cnn(*cnn_inputs), rtol=0, atol=0)
    assert [e.kind for e in ArtifactCache(tmp_path).build_log()] == ["exported"]


def test_store_serves_the_exported_model_from_the_cache_when_its_definition_is_stable(tmp_path, small_cnn, cnn_inputs):
    config = make_config()
    cold = ArtifactStore(cache=ArtifactCache(tmp_path))
    built = _artifacts(cold, small_cnn, cnn_inputs, []).exported(config)
    assert _details(cold, "export") == ["torch.export, built"]
    warm = ArtifactStore(cache=ArtifactCache(tmp_path))
    loaded = _artifacts(warm, small_cnn, cnn_inputs, []).exported(config)
    assert _details(warm, "export") == ["torch.export, cache hit"]
    assert loaded.code == built.code
    # a model without a stable definition is exported every time, and nothing is stored for it
    unstable = seeded(SmallCNN())
    unstable.helper = object()
    store = ArtifactStore(cache=ArtifactCache(tmp_path))
    _artifacts(store, unstable, cnn_inputs, []).exported(config)
    assert _details(store, "export") == ["torch.export"]
    assert [e.kind for e in ArtifactCache(tmp_path).build_log()] == ["exported"]


# -- integrity ---------------------------------------------------------------------------------
def test_tampered_entry_warns_naming_it_and_is_rebuilt(tmp_path, quantized_cnn, cnn_inputs):
    key = cache_key("program", "tampered")
    ArtifactCache(tmp_path).get_or_build_program(key, lambda: quantized_cnn, cnn_inputs)
    entry = tmp_path / key[:2] / key
    payload = entry / "program.pt2"
    data = bytearray(payload.read_bytes())
    for offset in (len(data) // 3, len(data) // 2):
        data[offset] ^= 0xFF
    payload.write_bytes(bytes(data))

    told: list[str] = []
    build = Builder(lambda: quantized_cnn)
    with pytest.warns(CacheWarning, match="modified program.pt2") as caught:
        module, status = ArtifactCache(tmp_path, warn=told.append).get_or_build_program(key, build, cnn_inputs)
    assert (status, build.calls, module) == ("rebuilt", 1, quantized_cnn)
    assert str(entry) in str(caught[0].message)
    assert len(told) == 1 and str(entry) in told[0]
    # the rebuilt entry is sound again
    assert ArtifactCache(tmp_path).get_or_build_program(key, must_not_build, cnn_inputs)[1] == "hit"
    assert len(ArtifactCache(tmp_path).build_log(key)) == 2


def test_entry_without_meta_json_counts_as_half_written_and_is_rebuilt(tmp_path, quantized_cnn, cnn_inputs):
    key = cache_key("program", "half")
    ArtifactCache(tmp_path).get_or_build_program(key, lambda: quantized_cnn, cnn_inputs)
    entry = tmp_path / key[:2] / key
    (entry / "meta.json").unlink()
    build = Builder(lambda: quantized_cnn)
    with pytest.warns(CacheWarning, match="half-written") as caught:
        _, status = ArtifactCache(tmp_path).get_or_build_program(key, build, cnn_inputs)
    assert (status, build.calls) == ("rebuilt", 1)
    assert str(entry) in str(caught[0].message)
    assert (entry / "meta.json").exists()
    assert tmp_dirs(tmp_path) == []


def test_unloadable_entry_with_matching_hashes_is_rebuilt(tmp_path, quantized_cnn, cnn_inputs):
    """A payload that hashes right but is not a program (e.g. written by a buggy release)."""
    key = cache_key("program", "unloadable")
    cache = ArtifactCache(tmp_path)
    cache.get_or_build_program(key, lambda: quantized_cnn, cnn_inputs)
    entry = tmp_path / key[:2] / key
    (entry / "program.pt2").write_bytes(b"not a zip archive")
    meta = json.loads((entry / "meta.json").read_text())
    import hashlib

    meta["files"]["program.pt2"] = hashlib.sha256(b"not a zip archive").hexdigest()
    (entry / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(CacheWarning, match="could not be loaded"):
        assert ArtifactCache(tmp_path).get_or_build_program(key, lambda: quantized_cnn, cnn_inputs)[1] == "rebuilt"


def test_stale_tmp_dirs_are_ignored_and_cleaned(tmp_path, quantized_cnn, cnn_inputs):
    key = cache_key("program", "stale-tmp")
    other = cache_key("program", "stale-other")
    ArtifactCache(tmp_path)
    for stale_key in (key, other):  # as left by processes killed while writing
        stale = tmp_path / "tmp" / f"{stale_key}.424242.deadbeef"
        stale.mkdir(parents=True)
        (stale / "program.pt2").write_bytes(b"partial")
    cache = ArtifactCache(tmp_path)  # sweeps temp dirs nobody is writing
    assert tmp_dirs(tmp_path) == []
    stale = tmp_path / "tmp" / f"{key}.424242.deadbeef"
    stale.mkdir()
    build = Builder(lambda: quantized_cnn)
    assert cache.get_or_build_program(key, build, cnn_inputs)[1] == "built"  # never taken for an entry
    assert build.calls == 1
    assert tmp_dirs(tmp_path) == []
    assert entries(tmp_path) == [tmp_path / key[:2] / key]


def test_tmp_dir_of_a_key_being_built_is_not_swept(tmp_path):
    key = cache_key("program", "busy")
    ArtifactCache(tmp_path)
    busy = tmp_path / "tmp" / f"{key}.1.cafe"
    busy.mkdir()
    lock = filelock.FileLock(str(tmp_path / "locks" / f"{key}.lock"))
    with lock:
        ArtifactCache(tmp_path)
        assert busy.exists()
    ArtifactCache(tmp_path)
    assert not busy.exists()


# -- failures during a build -------------------------------------------------------------------
@pytest.mark.parametrize(
    "error", [RuntimeError("calibration failed"), KeyboardInterrupt()], ids=["exception", "KeyboardInterrupt"]
)
def test_failing_or_interrupted_build_leaves_no_entry_and_no_tmp_dir(tmp_path, cnn_inputs, error):
    key = cache_key("program", "failing")
    cache = ArtifactCache(tmp_path)

    def build() -> torch.fx.GraphModule:
        raise error

    with pytest.raises(type(error)):
        cache.get_or_build_program(key, build, cnn_inputs)
    assert entries(tmp_path) == [] and tmp_dirs(tmp_path) == []
    assert not (tmp_path / key[:2]).exists()
    assert cache.build_log() == []
    # and the lock was released: the next attempt builds
    assert ArtifactCache(tmp_path, lock_timeout=5).get_or_build_record(key, "record", _tiny_record)[1] == "built"


def test_interrupt_while_saving_leaves_no_entry_and_no_tmp_dir(tmp_path, quantized_cnn, cnn_inputs, monkeypatch):
    def interrupted_save(program: Any, path: Path) -> None:
        Path(path).write_bytes(b"half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.export, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        ArtifactCache(tmp_path).get_or_build_program(cache_key("interrupted"), lambda: quantized_cnn, cnn_inputs)
    assert entries(tmp_path) == [] and tmp_dirs(tmp_path) == []


def test_failed_save_warns_and_still_returns_the_built_module(tmp_path, quantized_cnn, cnn_inputs, monkeypatch):
    def failing_save(program: Any, path: Path) -> None:
        Path(path).write_bytes(b"half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.export, "save", failing_save)
    with pytest.warns(CacheWarning, match="No space left on device.*continuing without caching"):
        module, status = ArtifactCache(tmp_path).get_or_build_program(
            cache_key("disk-full"), lambda: quantized_cnn, cnn_inputs
        )
    assert (module, status) == (quantized_cnn, "built")
    assert entries(tmp_path) == [] and tmp_dirs(tmp_path) == []


# -- switches ----------------------------------------------------------------------------------
def test_disabled_cache_always_builds_and_writes_nothing(tmp_path, quantized_cnn, cnn_inputs):
    root = tmp_path / "cache"
    cache = ArtifactCache(root, enabled=False)
    build = Builder(lambda: quantized_cnn)
    for _ in range(2):
        assert cache.get_or_build_program("k" * 64, build, cnn_inputs) == (quantized_cnn, "built")
    assert cache.get_or_build_record("k" * 64, "record", _tiny_record)[1] == "built"
    assert build.calls == 2
    assert not root.exists()


def test_clear_removes_entries_logs_and_tmp_but_keeps_the_ignore_files(tmp_path, quantized_cnn, cnn_inputs):
    cache = ArtifactCache(tmp_path)
    key = cache_key("program", "clear")
    cache.get_or_build_program(key, lambda: quantized_cnn, cnn_inputs)
    cache.get_or_build_record(cache_key("record", "clear"), "record", _tiny_record)
    (tmp_path / "tmp" / f"{key}.1.stale").mkdir()
    cache.clear()
    assert entries(tmp_path) == [] and tmp_dirs(tmp_path) == []
    assert cache.build_log() == []
    assert (tmp_path / ".gitignore").read_text() == "*\n" and (tmp_path / "CACHEDIR.TAG").exists()
    leftovers = {p.name for p in tmp_path.iterdir()}
    assert leftovers <= {".gitignore", "CACHEDIR.TAG", "locks", "tmp"}
    build = Builder(lambda: quantized_cnn)
    assert cache.get_or_build_program(key, build, cnn_inputs)[1] == "built" and build.calls == 1


def test_unusable_cache_dir_names_the_dir_and_the_options(tmp_path):
    root = tmp_path / "cache_is_a_file"
    root.write_text("not a directory")  # tests run as root: permissions would not stop us
    with pytest.raises(CacheError) as info:
        ArtifactCache(root)
    message = str(info.value)
    assert str(root) in message
    assert "--ovq-cache-dir" in message and "--ovq-no-cache" in message
    assert isinstance(info.value, OVQuantError)
    nested = root / "sub"
    with pytest.raises(CacheError, match="--ovq-no-cache"):
        ArtifactCache(nested)
    ArtifactCache(nested, enabled=False)  # a disabled cache never touches the directory


# -- records and OpenVINO IRs ------------------------------------------------------------------
def _tiny_record() -> dict[str, Any]:
    return {"graph": "0123abcd"}


def test_record_miss_then_hit_and_a_non_object_record_is_rebuilt(tmp_path):
    key = cache_key("record", "tiny")
    build = Builder(_tiny_record)
    assert ArtifactCache(tmp_path).get_or_build_record(key, "graph", build) == ({"graph": "0123abcd"}, "built")
    assert ArtifactCache(tmp_path).get_or_build_record(key, "graph", must_not_build) == ({"graph": "0123abcd"}, "hit")
    entry = tmp_path / key[:2] / key
    # a list where an object belongs, with hashes that match: unloadable, so rebuilt with a warning
    (entry / "record.json").write_text("[1]\n")
    meta = json.loads((entry / "meta.json").read_text())
    meta["files"]["record.json"] = hashlib.sha256(b"[1]\n").hexdigest()
    (entry / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(CacheWarning, match="could not be loaded.*not an object"):
        assert ArtifactCache(tmp_path).get_or_build_record(key, "graph", build)[1] == "rebuilt"
    assert build.calls == 2


def _ir_entry_functions() -> tuple[Callable, Callable]:
    """to_ir / from_ir for a value that is (ov.Model, record) itself."""
    return (lambda value: value), (lambda ir, record: (ir, record))


def test_ir_miss_then_hit_and_tampered_weights_rebuild(tmp_path, quantized_cnn, cnn_inputs):
    import openvino as ov

    key = cache_key("lowering", "cnn")
    to_ir, from_ir = _ir_entry_functions()
    build = Builder(lambda: (export_to_openvino(quantized_cnn, cnn_inputs), {"note": "cnn"}))
    (built, _), status = ArtifactCache(tmp_path).get_or_build_ir(key, build, to_ir, from_ir)
    assert (status, build.calls) == ("built", 1)
    (loaded, record), status = ArtifactCache(tmp_path).get_or_build_ir(key, must_not_build, to_ir, from_ir)
    assert status == "hit" and record == {"note": "cnn"}
    entry = tmp_path / key[:2] / key
    assert {p.name for p in entry.iterdir()} == {"model.xml", "model.bin", "record.json", "meta.json"}
    core = ov.Core()
    x = cnn_inputs[0].numpy()
    expected = core.compile_model(built, "CPU")(x)[0]
    torch.testing.assert_close(torch.from_numpy(core.compile_model(loaded, "CPU")(x)[0]), torch.from_numpy(expected))
    assert sum(op.get_type_name() == "FakeQuantize" for op in loaded.get_ordered_ops()) >= 4

    data = bytearray((entry / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (entry / "model.bin").write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match=f"{entry}.*modified model.bin"):
        assert ArtifactCache(tmp_path).get_or_build_ir(key, build, to_ir, from_ir)[1] == "rebuilt"
    assert build.calls == 2


def test_arrays_miss_then_hit_round_trip_dtypes_and_tampering_rebuilds(tmp_path):
    import numpy as np

    key = cache_key("fp32-outputs", "arrays")
    arrays = {"c0_0": np.arange(6, dtype=np.float32).reshape(2, 3), "c0_1": np.array([1, 2], dtype=np.int64)}
    build = Builder(lambda: (arrays, {"calls": 1}))
    to_arrays, from_arrays = (lambda value: value), (lambda stored, record: (stored, record))
    assert ArtifactCache(tmp_path).get_or_build_arrays(key, "fp32-outputs", build, to_arrays, from_arrays)[1] == "built"
    (loaded, record), status = ArtifactCache(tmp_path).get_or_build_arrays(
        key, "fp32-outputs", must_not_build, to_arrays, from_arrays
    )
    assert status == "hit" and record == {"calls": 1} and loaded.keys() == arrays.keys()
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array)
    entry = tmp_path / key[:2] / key
    data = bytearray((entry / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0x01
    (entry / "arrays.npz").write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match=f"{entry}.*modified arrays.npz"):
        assert ArtifactCache(tmp_path).get_or_build_arrays(key, "fp32-outputs", build, to_arrays, from_arrays)[1] == "rebuilt"
    assert build.calls == 2


def test_a_value_that_cannot_be_stored_is_returned_and_publishes_nothing(tmp_path, recwarn):
    cache = ArtifactCache(tmp_path)
    build = Builder(lambda: "not an IR")
    for _ in range(2):  # not stored: built again, silently
        assert cache.get_or_build_ir(cache_key("lowering", "x"), build, lambda value: None, must_not_build) == ("not an IR", "built")
    assert build.calls == 2
    assert entries(tmp_path) == [] and tmp_dirs(tmp_path) == []
    assert not [w for w in recwarn if issubclass(w.category, CacheWarning)]


# -- integration with the artifact store ----------------------------------------------------------
def _details(store: ArtifactStore, step: str) -> list[str]:
    return [r.detail for r in store.records if r.step == step]


def _artifacts(store: ArtifactStore, model: torch.nn.Module, inputs: tuple, calibration: list) -> ModelArtifacts:
    return ModelArtifacts(store, model, inputs, "small_cnn", calibration=lambda: calibration)


def test_store_builds_then_a_new_session_hits_and_lowers_to_int8(tmp_path, small_cnn, cnn_inputs, cnn_calibration):
    config = make_config(("test", {"lowering": "export"}))
    calibration = cnn_calibration[:8]
    cold = ArtifactStore(cache=ArtifactCache(tmp_path))
    artifacts = _artifacts(cold, small_cnn, cnn_inputs, calibration)
    built = artifacts.quantized(config)
    assert artifacts.quantized(config) is built  # the in-memory memo stays in front
    lowered_cold = artifacts.lowered(config, quantized=True)
    artifacts.lowered(config, quantized=False)
    details = {r.step: r.detail for r in cold.records}
    assert details["quantize"].endswith(", built"), details
    assert details["lower INT8"].endswith(", built") and details["lower FP32"].endswith(", built"), details
    kinds = sorted(e.kind for e in cold.cache.build_log())
    assert kinds == ["exported", "graph", "lowering", "lowering", "program"], kinds

    warm = ArtifactStore(cache=ArtifactCache(tmp_path))
    artifacts = _artifacts(warm, small_cnn, cnn_inputs, calibration)
    lowered_warm = artifacts.lowered(config, quantized=True)
    artifacts.lowered(config, quantized=False)
    details = {r.step: r.detail for r in warm.records}
    # neither exported nor quantized nor loaded: the lowerings come from their IRs
    assert sorted(details) == ["lower FP32", "lower INT8"], details
    assert details["lower INT8"].endswith("cache hit") and details["lower FP32"].endswith("cache hit"), details
    assert len(warm.cache.build_log()) == 5  # nothing was built
    assert lowered_warm.report.ok, lowered_warm.report.describe()
    assert lowered_warm.report.int8_layers == lowered_cold.report.int8_layers == 3
    assert REPLAY_NOTE in lowered_warm.report.describe()
    torch.testing.assert_close(lowered_warm(*cnn_inputs), lowered_cold(*cnn_inputs), rtol=0, atol=0)
    # the program is still there for a test that asks for it
    loaded = artifacts.quantized(config)
    assert _details(warm, "quantize")[0].endswith(", cache hit")
    with torch.no_grad():
        torch.testing.assert_close(loaded(*cnn_inputs), built(*cnn_inputs), rtol=0, atol=0)


def test_export_lowering_ir_is_cached_when_converted_so_a_compile_failure_does_not_convert_again(
    tmp_path, small_cnn, cnn_inputs, cnn_calibration, monkeypatch
):
    """Where the CPU plugin cannot compile an IR (OpenVINO 2026.4 on AMX/VNNI CPUs and the digits
    CNN), every run fails the same way; the conversion before it is done once."""
    import importlib

    import pytest_ovquant.artifacts as artifacts_module

    lower_module = importlib.import_module("pytest_ovquant.flow.lower")  # the package exports a function `lower`

    config = make_config(("test", {"lowering": "export"}))
    calibration = cnn_calibration[:8]
    real_compile = lower_module.compile_ir

    def no_suitable_implementation(ir: Any, config: Any, *, name: str, how: str, **kwargs: Any) -> Any:
        raise LoweringError(f"lowering {name} with {how} failed: RuntimeError: No suitable implementations")

    conversions = Builder(lambda: None)
    real_convert = artifacts_module.convert_export_lowering

    def counting_convert(*args: Any, **kwargs: Any) -> Any:
        conversions()
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(artifacts_module, "convert_export_lowering", counting_convert)
    monkeypatch.setattr(lower_module, "compile_ir", no_suitable_implementation)
    for run in range(2):
        store = ArtifactStore(cache=ArtifactCache(tmp_path))
        with pytest.raises(OVQuantError, match=r"lowering small_cnn INT8 with ov.convert_model\(torch.export.export.*No suitable"):
            _artifacts(store, small_cnn, cnn_inputs, calibration).lowered(config, quantized=True)
        assert conversions.calls == 1, f"run {run + 1} converted again"
    kinds = sorted(e.kind for e in ArtifactCache(tmp_path).build_log())
    assert kinds == ["exported", "graph", "lowering", "program"], kinds  # the IR entry, built once

    monkeypatch.setattr(lower_module, "compile_ir", real_compile)  # a CPU where it compiles
    store = ArtifactStore(cache=ArtifactCache(tmp_path))
    lowered = _artifacts(store, small_cnn, cnn_inputs, calibration).lowered(config, quantized=True)
    assert conversions.calls == 1 and _details(store, "lower INT8")[0].endswith("cache hit")
    assert lowered.report.ok and lowered.report.int8_layers == 3, lowered.report.describe()
    assert REPLAY_NOTE in lowered.report.describe()


def test_torch_compile_lowering_is_replayed_for_its_signature_and_real_otherwise(
    tmp_path, small_cnn, cnn_calibration
):
    config = make_config(("test", {"dynamic_batch": True}))  # so that other batch sizes can run
    cnn_inputs = (torch.cat([x for (x,) in cnn_calibration[:2]]),)
    calibration = cnn_calibration[:8]
    cold = ArtifactStore(cache=ArtifactCache(tmp_path))
    lowered_cold = _artifacts(cold, small_cnn, cnn_inputs, calibration).lowered(config, quantized=True)
    assert _details(cold, "lower INT8")[0].endswith(", built"), cold.records
    assert isinstance(lowered_cold.module, torch._dynamo.eval_frame.OptimizedModule)

    warm = ArtifactStore(cache=ArtifactCache(tmp_path))
    artifacts = _artifacts(warm, small_cnn, cnn_inputs, calibration)
    lowered = artifacts.lowered(config, quantized=True)
    assert [r.step for r in warm.records] == ["lower INT8"] and warm.records[0].detail.endswith("cache hit")
    assert isinstance(lowered.module, ReplayedTorchCompile)
    report = lowered.report
    assert (report.lowering, report.n_irs, report.weight_inputs) == ("torch.compile", 1, 0)
    assert report.ok and report.int8_layers == lowered_cold.report.int8_layers == 3, report.describe()
    torch.testing.assert_close(lowered(*cnn_inputs), lowered_cold(*cnn_inputs), rtol=0, atol=0)
    assert [r.step for r in warm.records] == ["lower INT8"]  # the example signature ran the IR only

    # another batch size: the IR was traced for batch 2, so a real torch.compile runs it
    other = (torch.cat([cnn_inputs[0], cnn_inputs[0]]),)
    torch.testing.assert_close(lowered(*other), lowered_cold(*other))
    # (the quantized program, loaded from the cache, is what torch.compile traces)
    assert [r.step for r in warm.records] == ["lower INT8", "quantize", "lower INT8 (torch.compile)"], warm.records
    assert warm.records[1].detail.endswith("cache hit")
    # a timed section gets that real lowering, never the replay
    timed = artifacts.lowered(config, quantized=True, timing=True)
    assert timed is lowered.module.real() and isinstance(timed.module, torch._dynamo.eval_frame.OptimizedModule)
    assert len(warm.records) == 3 and len(warm.cache.build_log()) == len(cold.cache.build_log())


def test_replay_record_refuses_a_lowering_with_ops_in_pytorch(tmp_path, small_cnn, cnn_inputs, cnn_calibration):
    config = make_config()
    lowered = _artifacts(ArtifactStore(), small_cnn, cnn_inputs, cnn_calibration[:8]).lowered(config, quantized=True)
    ir, record = replay_record(lowered, cnn_inputs)
    assert record["lowering"] == "torch.compile" and record["signature"] == "(1, 3, 32, 32):torch.float32"
    lowered.report.pytorch_ops.append("aten.i0.default")
    assert replay_record(lowered, cnn_inputs) == "1 op(s) run in PyTorch"
    lowered.report.pytorch_ops.clear()
    lowered.ir_records = lowered.ir_records * 2
    assert replay_record(lowered, cnn_inputs) == "2 OpenVINO IRs"


def test_config_calibration_and_weights_each_get_their_own_entry(tmp_path, small_cnn, cnn_inputs, cnn_calibration):
    base = make_config()
    variants = [
        (small_cnn, cnn_calibration[:8], base),
        (small_cnn, cnn_calibration[:8], make_config(("test", {"preset": "mixed"}))),
        (small_cnn, cnn_calibration[8:16], base),
        (seeded(SmallCNN(), seed=1), cnn_calibration[:8], base),
    ]
    store = ArtifactStore(cache=ArtifactCache(tmp_path))
    for model, calibration, config in variants:
        _artifacts(store, model, cnn_inputs, calibration).quantized(config)
    log = store.cache.build_log()
    programs = [e for e in log if e.kind == "program"]
    assert len(programs) == 4 and len({e.key for e in programs}) == 4
    # one graph record and one exported program per model (weights), whatever the config
    assert [e.kind for e in log].count("graph") == [e.kind for e in log].count("exported") == 2
    assert len(entries(tmp_path)) == 8
    # the same four again in a new session: all loaded
    warm = ArtifactStore(cache=ArtifactCache(tmp_path))
    for model, calibration, config in variants:
        _artifacts(warm, model, cnn_inputs, calibration).quantized(config)
    assert [d.rsplit(", ", 1)[1] for d in _details(warm, "quantize")] == ["cache hit"] * 4
    assert len(warm.cache.build_log()) == 8


def test_store_with_disabled_cache_or_none_builds_in_memory_only(tmp_path, small_cnn, cnn_inputs, cnn_calibration):
    for store in (ArtifactStore(), ArtifactStore(cache=ArtifactCache(tmp_path / "off", enabled=False))):
        _artifacts(store, small_cnn, cnn_inputs, cnn_calibration[:4]).quantized(make_config())
        assert _details(store, "quantize") == ["prepare_convert, 4 calibration item(s)"]
    assert not (tmp_path / "off").exists()


# -- across processes --------------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    import torch

    from pytest_ovquant.cache import ArtifactCache

    root, key, go, marker, mode = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
    example = (torch.randn(2, 4),)
    if mode == "kill-in-write":
        real_save = torch.export.save

        def slow_save(program, path):
            Path(path).write_bytes(b"half an archive")
            marker.write_text(str(os.getpid()))
            time.sleep(120)

        torch.export.save = slow_save

    def build():
        if mode == "kill-in-build":
            marker.write_text(str(os.getpid()))
            time.sleep(120)
        time.sleep(1.0)  # long enough for every worker to be waiting on the lock
        torch.manual_seed(0)
        return torch.export.export(torch.nn.Linear(4, 3).eval(), example).module()

    cache = ArtifactCache(root)
    while not go.exists():
        time.sleep(0.01)
    module, status = cache.get_or_build_program(key, build, example)
    out = module(torch.ones(2, 4))
    print(json.dumps({"pid": os.getpid(), "status": status, "sum": float(out.sum())}))
    """
)


def _start(tmp_path: Path, key: str, mode: str, name: str) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "cache"), key, str(tmp_path / "go"), str(tmp_path / name), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


FRESH_LOADER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import torch

    from pytest_ovquant.cache import ArtifactCache
    from pytest_ovquant.config import make_config
    from pytest_ovquant.flow import lower

    def must_not_build():
        raise AssertionError("built in the fresh process")

    root, key, inputs = Path(sys.argv[1]), sys.argv[2], (torch.load(sys.argv[3], weights_only=True),)
    module, status = ArtifactCache(root).get_or_build_program(key, must_not_build, inputs)
    report = lower(module, inputs, make_config(("t", {"lowering": "export"})), quantized=True).report
    print(json.dumps({"status": status, "ok": report.ok, "int8": report.int8_layers, "sum": float(module(*inputs).sum())}))
    """
)


def test_a_fresh_process_loads_a_quantized_program_and_lowers_it_to_int8(tmp_path, quantized_cnn, cnn_inputs):
    """A warm run is a new process: the quantized ops must be registered before torch.export.load."""
    key = cache_key("program", "fresh-process")
    ArtifactCache(tmp_path / "cache").get_or_build_program(key, lambda: quantized_cnn, cnn_inputs)
    torch.save(cnn_inputs[0], tmp_path / "inputs.pt")
    (tmp_path / "loader.py").write_text(FRESH_LOADER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "loader.py"), str(tmp_path / "cache"), key, str(tmp_path / "inputs.pt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["status"], result["ok"], result["int8"]) == ("hit", True, 3)
    with torch.no_grad():
        assert result["sum"] == pytest.approx(float(quantized_cnn(*cnn_inputs).sum()), abs=1e-6)


def test_concurrent_processes_build_each_key_exactly_once(tmp_path):
    key = cache_key("program", "concurrent")
    workers = [_start(tmp_path, key, "normal", f"marker{i}") for i in range(4)]
    time.sleep(0.5)
    (tmp_path / "go").touch()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["status"] for r in results) == ["built", "hit", "hit", "hit"]
    assert len({r["sum"] for r in results}) == 1  # every process got the same module
    log = ArtifactCache(tmp_path / "cache").build_log(key)
    assert len(log) == 1
    assert log[0].pid == next(r["pid"] for r in results if r["status"] == "built")
    assert tmp_dirs(tmp_path / "cache") == []


@pytest.mark.parametrize("mode", ["kill-in-build", "kill-in-write"])
def test_process_killed_midway_publishes_nothing_and_the_next_run_rebuilds(tmp_path, mode):
    key = cache_key("program", mode)
    (tmp_path / "go").touch()
    worker = _start(tmp_path, key, mode, "marker")
    marker = tmp_path / "marker"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert worker.poll() is None, worker.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the worker never started building"
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate(timeout=60)
    assert worker.returncode == -signal.SIGKILL

    root = tmp_path / "cache"
    assert entries(root) == []
    assert bool(tmp_dirs(root)) == (mode == "kill-in-write")  # the dead process's temp dir, if it got that far
    probe = filelock.FileLock(str(root / "locks" / f"{key}.lock"), timeout=0)
    probe.acquire()  # the OS released the dead process's flock
    probe.release()

    example = (torch.randn(2, 4),)
    build = Builder(lambda: torch.export.export(torch.nn.Linear(4, 3).eval(), example).module())
    _, status = ArtifactCache(root, lock_timeout=5).get_or_build_program(key, build, example)
    assert (status, build.calls) == ("built", 1)
    assert len(entries(root)) == 1 and tmp_dirs(root) == []
    # a build that finished before the kill is logged (it ran); only ours published an entry
    pids = [e.pid for e in ArtifactCache(root).build_log(key)]
    assert pids == ([worker.pid, os.getpid()] if mode == "kill-in-write" else [os.getpid()])
