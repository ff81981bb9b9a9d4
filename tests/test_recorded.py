"""FP32 outputs recorded once and replayed (measure.recorded): the record, the replay, the cache entry.

Real parts: the evaluation is ``measure.evaluation.evaluate`` with real metrics on a seeded CNN, the
entries live in a real ``ArtifactCache`` on disk, and the keys come from a real ``ModelArtifacts``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from small_models import SmallCNN, image_batches, seeded

from pytest_ovquant.artifacts import ArtifactStore, ModelArtifacts
from pytest_ovquant.cache import ArtifactCache, CacheWarning, cache_key
from pytest_ovquant.measure.evaluation import evaluate
from pytest_ovquant.measure.metrics import resolve_metric
from pytest_ovquant.measure.recorded import (
    OutputRecorder,
    OutputReplayer,
    RecordedOutputsStore,
    ReplayMismatch,
    pack,
    unpack,
)


class Counting:
    """A model wrapper that counts its calls."""

    def __init__(self, model: Callable[..., Any]) -> None:
        self.model = model
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.model(*args)


class TwoHeads(torch.nn.Module):
    """Outputs with structure: a dict holding a tensor and a tuple of tensors."""

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return {"logits": x.sum(dim=(2, 3)), "extra": (x.mean(dim=1), x.amax(dim=(1, 2, 3)).long())}


def test_recorded_calls_pack_to_arrays_and_unpack_to_the_same_structure():
    recorder = OutputRecorder(TwoHeads())
    batches = [x for (x,) in image_batches(3)]
    returned = [recorder(x) for x in batches]
    arrays, record = pack(recorder)
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    assert len(record["calls"]) == 3 and record["calls"][0]["leaves"] == 3
    replayer = OutputReplayer(unpack(arrays, record))
    for x, expected in zip(batches, returned):
        got = replayer(x)
        assert set(got) == {"logits", "extra"} and isinstance(got["extra"], tuple)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    replayer.check_finished()


def test_a_recorded_output_is_a_copy_the_caller_cannot_change():
    recorder = OutputRecorder(lambda x: x * 2)
    out = recorder(torch.ones(1, 2))
    out.zero_()  # the caller writes into what it got
    arrays, record = pack(recorder)
    [(_, replayed)] = unpack(arrays, record)
    assert torch.equal(replayed, torch.full((1, 2), 2.0))


def test_the_replay_refuses_calls_that_differ_from_the_recorded_ones():
    recorder = OutputRecorder(lambda x: x + 1)
    recorder(torch.zeros(2, 3))
    recorder(torch.zeros(2, 3))
    calls = unpack(*pack(recorder))  # type: ignore[misc]
    replayer = OutputReplayer(calls)
    with pytest.raises(ReplayMismatch, match=r"call 1 has inputs \(4, 3\):torch.float32, recorded \(2, 3\):torch.float32"):
        replayer(torch.zeros(4, 3))
    replayer(torch.zeros(2, 3))
    with pytest.raises(ReplayMismatch, match="1 calls, but 2 were recorded"):
        replayer.check_finished()
    replayer(torch.zeros(2, 3))
    with pytest.raises(ReplayMismatch, match="call 3, but only 2 were recorded"):
        replayer(torch.zeros(2, 3))


@pytest.mark.parametrize(
    "model, reason",
    [
        (lambda x: (x, 3), "hold values that are not tensors"),
        (lambda x: x.to(torch.bfloat16), "dtype torch.bfloat16 has no numpy equivalent"),
    ],
)
def test_outputs_that_cannot_be_stored_say_why(model, reason):
    recorder = OutputRecorder(model)
    recorder(torch.ones(1, 4))
    assert reason in pack(recorder)


def test_outputs_beyond_the_size_limit_are_not_kept():
    recorder = OutputRecorder(lambda x: x, max_bytes=100)
    recorder(torch.ones(1, 16))  # 64 bytes
    assert len(recorder.calls) == 1
    out = recorder(torch.ones(1, 16))  # 128 in all: over the limit, nothing kept
    assert torch.equal(out, torch.ones(1, 16)) and recorder.calls == [] and recorder.count == 2
    assert "exceed" in pack(recorder)


# -- the cache entry, with a real evaluation ------------------------------------------------------
@pytest.fixture(scope="module")
def evaluation_setup():
    fp32 = seeded(SmallCNN())
    int8 = seeded(SmallCNN(), seed=1)  # a different model stands in for the INT8 one
    images = torch.cat([x for (x,) in image_batches(8, seed=5)])
    with torch.no_grad():
        labels = fp32(images).argmax(1)
    dataset = [(images[i : i + 4], labels[i : i + 4]) for i in range(0, 8, 4)]
    metrics = [resolve_metric("top1", "test"), resolve_metric("cosine", "test")]
    return fp32, int8, dataset, metrics


def _run(int8: Any, dataset: list, metrics: list) -> Callable[[Callable[..., Any]], dict]:
    return lambda fp32: evaluate(fp32, int8, dataset, metrics, batch_size=2)


def _same_results(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name].fp32, a[name].int8) == (b[name].fp32, b[name].int8)
        torch.testing.assert_close(a[name].int8_samples, b[name].int8_samples, rtol=0, atol=0)


def test_a_second_run_replays_the_fp32_outputs_without_calling_the_model(tmp_path, evaluation_setup):
    fp32, int8, dataset, metrics = evaluation_setup
    key = cache_key("fp32-outputs", "test")
    expected = _run(int8, dataset, metrics)(fp32)

    cold_model = Counting(fp32)
    cold = RecordedOutputsStore(ArtifactCache(tmp_path), key)
    _same_results(cold.evaluate(cold_model, _run(int8, dataset, metrics)), expected)
    assert (cold.status, cold_model.calls, cold.calls) == ("built", 4, 4)  # 8 samples in chunks of 2
    assert "run and recorded" in cold.describe()

    warm_model = Counting(fp32)
    warm = RecordedOutputsStore(ArtifactCache(tmp_path), key)
    _same_results(warm.evaluate(warm_model, _run(int8, dataset, metrics)), expected)
    assert (warm.status, warm_model.calls, warm.calls) == ("hit", 0, 4)
    assert warm.describe() == "FP32 outputs of 4 call(s) replayed from the cache"
    [built] = ArtifactCache(tmp_path).build_log()
    assert built.kind == "fp32-outputs"


def test_data_that_changed_under_the_same_key_runs_the_model_with_a_warning(tmp_path, evaluation_setup):
    fp32, int8, dataset, metrics = evaluation_setup
    key = cache_key("fp32-outputs", "changed")
    RecordedOutputsStore(ArtifactCache(tmp_path), key).evaluate(fp32, _run(int8, dataset, metrics))
    bigger = dataset + dataset[:1]  # as if a non-deterministic dataset yielded more this time
    model = Counting(fp32)
    store = RecordedOutputsStore(ArtifactCache(tmp_path), key)
    with pytest.warns(CacheWarning, match="do not match this evaluation.*only 4 were recorded.*same data on every run"):
        results = store.evaluate(model, _run(int8, bigger, metrics))
    assert store.status == "replay failed" and model.calls == 6
    _same_results(results, _run(int8, bigger, metrics)(fp32))


def test_a_tampered_entry_is_rebuilt_and_an_object_array_is_never_unpickled(tmp_path, evaluation_setup):
    import hashlib
    import json

    fp32, int8, dataset, metrics = evaluation_setup
    key = cache_key("fp32-outputs", "tampered")
    RecordedOutputsStore(ArtifactCache(tmp_path), key).evaluate(fp32, _run(int8, dataset, metrics))
    entry = tmp_path / key[:2] / key
    assert {p.name for p in entry.iterdir()} == {"arrays.npz", "record.json", "meta.json"}
    # an object array (which only pickle can load), with hashes that match: refused, rebuilt
    np.savez(entry / "arrays.npz", c0_0=np.array([{"x": 1}], dtype=object))
    meta = json.loads((entry / "meta.json").read_text())
    meta["files"]["arrays.npz"] = hashlib.sha256((entry / "arrays.npz").read_bytes()).hexdigest()
    (entry / "meta.json").write_text(json.dumps(meta))
    model = Counting(fp32)
    store = RecordedOutputsStore(ArtifactCache(tmp_path), key)
    with pytest.warns(CacheWarning, match="could not be loaded.*allow_pickle=False"):
        store.evaluate(model, _run(int8, dataset, metrics))
    assert store.status == "rebuilt" and model.calls == 4
    # flipped bytes: the hash says so
    data = bytearray((entry / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0x01
    (entry / "arrays.npz").write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="modified arrays.npz"):
        RecordedOutputsStore(ArtifactCache(tmp_path), key).evaluate(fp32, _run(int8, dataset, metrics))


# -- the key ------------------------------------------------------------------------------------
def _store_for(tmp_path, model: torch.nn.Module, dataset: Any, *, chunk: int = 2, machine: str = "m1", cache: bool = True):
    store = ArtifactStore(cache=ArtifactCache(tmp_path / "cache", enabled=cache))
    artifacts = ModelArtifacts(store, model, image_batches(1)[0], "cnn", calibration=lambda: [])
    return artifacts.fp32_outputs_store(dataset, chunk, machine)


def test_the_key_follows_model_inputs_chunk_and_machine_but_not_targets(tmp_path, evaluation_setup):
    fp32, _, dataset, _ = evaluation_setup
    key = _store_for(tmp_path, fp32, dataset).key
    relabelled = [(x, torch.zeros_like(y)) for x, y in dataset]
    assert _store_for(tmp_path, fp32, relabelled).key == key  # targets do not change the outputs
    assert _store_for(tmp_path, seeded(SmallCNN()), dataset).key == key  # same weights, another instance
    others = [
        _store_for(tmp_path, seeded(SmallCNN(), seed=3), dataset),
        _store_for(tmp_path, fp32, [(x + 1, y) for x, y in dataset]),
        _store_for(tmp_path, fp32, dataset, chunk=4),
        _store_for(tmp_path, fp32, dataset, machine="m2"),
    ]
    assert len({key, *(other.key for other in others)}) == 5


def test_no_store_without_the_cache_a_stable_definition_or_an_in_memory_dataset(tmp_path, evaluation_setup):
    fp32, _, dataset, _ = evaluation_setup
    assert _store_for(tmp_path, fp32, dataset, cache=False) is None
    assert _store_for(tmp_path, fp32, iter(dataset)) is None  # fingerprinting would consume it
    loader = torch.utils.data.DataLoader(dataset, batch_size=None)  # re-iterable, but read twice
    assert _store_for(tmp_path, fp32, loader) is None
    unstable = seeded(SmallCNN())
    unstable.helper = object()  # its repr names a memory address
    assert _store_for(tmp_path, unstable, dataset) is None
    assert _store_for(tmp_path, fp32, [42]) is None  # not (inputs, target) pairs: evaluate says so
