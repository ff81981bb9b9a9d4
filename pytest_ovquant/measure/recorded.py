"""The FP32 model's outputs over the evaluation data, recorded once and replayed on later runs.

Why: every accuracy gate runs the FP32 model over the whole evaluation set, on every run, though
those outputs only change with the model, the data, the stack or the machine (NNCF's conformance
suite likewise keeps FP32 figures instead of re-running FP32). The artifact cache keeps them under
a key made of exactly those (``ModelArtifacts.fp32_outputs_key``); the INT8 side is always run.

``OutputRecorder`` wraps the FP32 model during an evaluation and keeps what each call returned;
``pack`` turns that into arrays plus a JSON record (numpy ``.npz``, loaded with
``allow_pickle=False``: nothing is unpickled); ``OutputReplayer`` answers the same calls from the
record, in order, and refuses a call whose inputs are not shaped like the recorded one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten, treespec_dumps, treespec_loads

from ..fingerprint import inputs_signature
from .evaluation import EvaluationError

if TYPE_CHECKING:
    from ..cache import ArtifactCache

R = TypeVar("R")

# Outputs beyond this are not kept (nor stored): a large evaluation set is cheaper to re-run than to hold.
MAX_RECORDED_BYTES = 512 * 1024 * 1024


class ReplayMismatch(Exception):
    """A replayed call does not match the recorded one (the evaluation data changed under the key)."""


class OutputRecorder:
    """Calls ``model`` and keeps (input signature, output leaves, output structure) of every call."""

    def __init__(self, model: Callable[..., Any], max_bytes: int = MAX_RECORDED_BYTES) -> None:
        self.model = model
        self.max_bytes = max_bytes
        self.calls: list[tuple[str, list[torch.Tensor], Any]] = []
        self.unstorable: str | None = None  # why the outputs cannot be stored, once known
        self.count = 0  # calls made, recorded or not
        self._bytes = 0

    def __call__(self, *args: Any) -> Any:
        outputs = self.model(*args)
        self.count += 1
        if self.unstorable is None:
            self._record(args, outputs)
        return outputs

    def _record(self, args: tuple[Any, ...], outputs: Any) -> None:
        leaves, spec = tree_flatten(outputs)
        if not all(isinstance(leaf, torch.Tensor) for leaf in leaves):
            self._give_up("its outputs hold values that are not tensors")
            return
        self._bytes += sum(leaf.numel() * leaf.element_size() for leaf in leaves)
        if self._bytes > self.max_bytes:
            self._give_up(f"its outputs exceed {self.max_bytes // 2**20} MiB")
            return
        # a copy: the caller may reuse or modify the tensors it got back
        self.calls.append((inputs_signature(args), [leaf.detach().cpu().clone() for leaf in leaves], spec))

    def _give_up(self, reason: str) -> None:
        self.unstorable = reason
        self.calls = []


def pack(recorder: OutputRecorder) -> tuple[dict[str, np.ndarray], dict[str, Any]] | str:
    """(arrays, record) to store for what ``recorder`` saw, or why it cannot be stored."""
    if recorder.unstorable is not None:
        return recorder.unstorable
    if not recorder.calls:
        return "nothing was recorded"
    arrays: dict[str, np.ndarray] = {}
    calls = []
    for index, (signature, leaves, spec) in enumerate(recorder.calls):
        try:
            spec_text = treespec_dumps(spec)
        except Exception as error:  # an output type pytree cannot serialize
            return f"its output structure cannot be saved ({type(error).__name__})"
        for position, leaf in enumerate(leaves):
            try:
                arrays[f"c{index}_{position}"] = leaf.numpy()
            except TypeError:  # a dtype numpy lacks (bfloat16)
                return f"its outputs' dtype {leaf.dtype} has no numpy equivalent"
        calls.append({"signature": signature, "leaves": len(leaves), "spec": spec_text})
    return arrays, {"calls": calls}


def unpack(arrays: dict[str, np.ndarray], record: dict[str, Any]) -> list[tuple[str, Any]]:
    """The recorded calls: (input signature, outputs as the model returned them)."""
    calls = []
    for index, call in enumerate(record["calls"]):
        leaves = [torch.from_numpy(arrays[f"c{index}_{position}"]) for position in range(int(call["leaves"]))]
        calls.append((str(call["signature"]), tree_unflatten(leaves, treespec_loads(call["spec"]))))
    return calls


class OutputReplayer:
    """Answers the calls of an evaluation with the recorded outputs, in order."""

    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls
        self.position = 0

    def __call__(self, *args: Any) -> Any:
        if self.position >= len(self.calls):
            raise ReplayMismatch(f"call {self.position + 1}, but only {len(self.calls)} were recorded")
        signature, outputs = self.calls[self.position]
        if inputs_signature(args) != signature:
            raise ReplayMismatch(f"call {self.position + 1} has inputs {inputs_signature(args)}, recorded {signature}")
        self.position += 1
        return outputs

    def check_finished(self) -> None:
        """Every recorded call was replayed (else the evaluation data changed under the same key)."""
        if self.position != len(self.calls):
            raise ReplayMismatch(f"{self.position} calls, but {len(self.calls)} were recorded")


@dataclass
class RecordedOutputsStore:
    """The artifact-cache entry that holds one FP32 model's outputs over one evaluation set."""

    cache: "ArtifactCache"
    key: str
    status: str | None = None  # after ``evaluate``: "hit", "built", "rebuilt" or "replay failed"
    not_stored: str | None = None  # after a build: why the outputs could not be stored
    calls: int = 0  # FP32 calls recorded or replayed
    seconds: float = 0.0  # the whole evaluation's

    def describe(self) -> str:
        """What the last ``evaluate`` did with the FP32 side, for a progress line."""
        what = {"hit": "replayed from the cache", "built": "run and recorded", "rebuilt": "run and recorded (bad cache entry)"}
        text = f"FP32 outputs of {self.calls} call(s) {what.get(self.status or '', self.status or 'not run')}"
        return f"{text}, not cached: {self.not_stored}" if self.not_stored else text

    def evaluate(self, fp32_model: Callable[..., Any], run: Callable[[Callable[..., Any]], R]) -> R:
        """``run(fp32)`` where ``fp32`` answers from the stored outputs, or runs ``fp32_model`` and records them.

        ``run`` is one whole evaluation (it calls ``fp32`` once per chunk, in order). On a cache hit
        the FP32 model is not called at all; if the stored calls do not match the evaluation's
        (its data changed under the same key: a dataset that is not deterministic), the evaluation
        is run again with the model itself, with a warning.
        """
        start = time.perf_counter()
        try:
            return self._evaluate(fp32_model, run)
        finally:
            self.seconds = time.perf_counter() - start

    def _evaluate(self, fp32_model: Callable[..., Any], run: Callable[[Callable[..., Any]], R]) -> R:
        def record() -> tuple[R | None, Any]:
            recorder = OutputRecorder(fp32_model)
            return run(recorder), recorder

        def to_arrays(value: tuple[R | None, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
            packed = pack(value[1])
            if isinstance(packed, str):
                self.not_stored = packed
                return None
            return packed

        # built: (the evaluation's result, its recorder); loaded: (None, the recorded calls)
        (result, recorded), self.status = self.cache.get_or_build_arrays(
            self.key, "fp32-outputs", record, to_arrays, lambda arrays, stored: (None, unpack(arrays, stored))
        )
        if result is not None:
            self.calls = recorded.count
            return result
        replayer = OutputReplayer(recorded)
        self.calls = len(recorded)
        try:
            result = run(replayer)
            replayer.check_finished()
        except (EvaluationError, ReplayMismatch) as error:
            mismatch = error if isinstance(error, ReplayMismatch) else error.__cause__
            if not isinstance(mismatch, ReplayMismatch):
                raise
            self.status = "replay failed"
            self.cache.warn(
                f"pytest-ovquant cache: the stored FP32 outputs (key {self.key}) do not match this evaluation "
                f"({mismatch}): does ovq_eval_dataset yield the same data on every run? Running the FP32 model instead"
            )
            return run(fp32_model)
        return result


__all__ = [
    "MAX_RECORDED_BYTES",
    "OutputRecorder",
    "OutputReplayer",
    "RecordedOutputsStore",
    "ReplayMismatch",
    "pack",
    "unpack",
]
