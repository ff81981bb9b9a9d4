"""Run the FP32 model and the INT8 module over the evaluation data and compute metrics per sample.

The dataset yields ``(inputs, target)`` batches (inputs: a tensor or a tuple of tensors with the
batch on dim 0). Each batch is fed in chunks of the example inputs' batch size, the shape the
lowered module was compiled for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch

from ..errors import OVQuantError
from .metrics import Metric, _logits

Progress = Callable[[int], None]  # called with the number of samples just done


@dataclass
class MetricResult:
    """One metric on one evaluation: aggregate values and the per-sample values behind them."""

    metric: Metric
    fp32: float | None
    int8: float
    fp32_samples: torch.Tensor | None = field(repr=False, default=None)
    int8_samples: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0))
    # samples whose outputs hold NaN/Inf: such a metric value (even a finite top-1) cannot be trusted
    int8_nonfinite: int = 0
    fp32_nonfinite: int = 0

    @property
    def drop(self) -> float | None:
        return self.metric.drop(self.fp32, self.int8)

    @property
    def samples(self) -> int:
        return int(self.int8_samples.numel())


class EvaluationError(OVQuantError, ValueError):
    """The evaluation data does not fit the model (names ovq_eval_dataset, the item and what is expected)."""


_DATASET = "ovq_eval_dataset"


def _nonfinite_rows(outputs: Any) -> torch.Tensor | None:
    """Per sample: do the outputs hold NaN/Inf? None when the outputs have no float tensor to look at."""
    try:
        tensor = _logits(outputs)
    except TypeError:
        return None
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.dim() == 0:
        return None
    return ~torch.isfinite(tensor.reshape(tensor.shape[0], -1)).all(dim=1)


def _run(model: Callable[..., Any], args: tuple[torch.Tensor, ...], which: str, index: int, batch_size: int) -> Any:
    try:
        return model(*args)
    except Exception as error:
        shapes = ", ".join(f"{list(a.shape)}" for a in args)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise EvaluationError(
            f"{_DATASET}: evaluation item {index}: the {which} fails on inputs of shape {shapes}: "
            f"{type(error).__name__}: {first}; the inputs must be shaped like ovq_example_inputs (they are fed in "
            f"chunks of {batch_size}, the example inputs' batch size)"
        ) from error


def _as_args(inputs: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
        return tuple(inputs)
    raise EvaluationError(
        f"{_DATASET}: evaluation inputs of type {type(inputs).__name__} are not a tensor or a tuple of tensors; "
        "ovq_eval_dataset must yield (inputs, target) pairs"
    )


def _split(item: Any, index: int) -> tuple[tuple[torch.Tensor, ...], Any]:
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise EvaluationError(
            f"{_DATASET}: evaluation item {index} is a {type(item).__name__}, not an (inputs, target) pair; "
            "make ovq_eval_dataset yield (inputs, target) (target may be None for fidelity metrics)"
        )
    args, target = _as_args(item[0]), item[1]
    if isinstance(target, (list, tuple)) and all(isinstance(t, (int, float)) for t in target):
        target = torch.as_tensor(target)
    if isinstance(target, torch.Tensor) and target.dim() > 0 and target.shape[0] != args[0].shape[0]:
        raise EvaluationError(
            f"{_DATASET}: evaluation item {index}: {target.shape[0]} targets for {args[0].shape[0]} input samples; "
            "yield one target per sample (targets batched like the inputs, on dim 0)"
        )
    return args, target


def _chunks(args: tuple[torch.Tensor, ...], target: Any, size: int) -> Iterable[tuple[tuple[torch.Tensor, ...], Any]]:
    total = args[0].shape[0]
    for start in range(0, total, size):
        stop = min(start + size, total)
        chunk_target = target[start:stop] if isinstance(target, torch.Tensor) and target.dim() > 0 else target
        yield tuple(a[start:stop] for a in args), chunk_target


def chunk_size(example_inputs: tuple[Any, ...]) -> int:
    """The batch the evaluation feeds: the example inputs' (what the lowered module was compiled for)."""
    return example_inputs[0].shape[0] if example_inputs and hasattr(example_inputs[0], "shape") else 1


def evaluate(
    fp32_model: Callable[..., Any],
    int8_model: Callable[..., Any],
    dataset: Iterable[Any],
    metrics: Sequence[Metric],
    *,
    batch_size: int = 1,
    progress: Progress | None = None,
) -> dict[str, MetricResult]:
    """Per-sample metric values for FP32 and INT8 on the same samples."""
    fp32_values: dict[str, list[torch.Tensor]] = {m.name: [] for m in metrics}
    int8_values: dict[str, list[torch.Tensor]] = {m.name: [] for m in metrics}
    nonfinite = {"int8": 0, "fp32": 0}
    seen = 0
    with torch.no_grad():
        for index, item in enumerate(dataset):
            args, target = _split(item, index)
            for chunk_args, chunk_target in _chunks(args, target, max(1, batch_size)):
                fp32_out = _run(fp32_model, chunk_args, "FP32 model", index, batch_size)
                int8_out = _run(int8_model, chunk_args, "INT8 module", index, batch_size)
                for which, out in (("int8", int8_out), ("fp32", fp32_out)):
                    rows = _nonfinite_rows(out)
                    nonfinite[which] += int(rows.sum()) if rows is not None else 0
                for metric in metrics:
                    try:
                        int8_values[metric.name].append(metric.per_sample(int8_out, chunk_target, fp32_out).reshape(-1))
                        if metric.kind == "task":
                            fp32_values[metric.name].append(
                                metric.per_sample(fp32_out, chunk_target, fp32_out).reshape(-1)
                            )
                    except (ValueError, TypeError, RuntimeError) as error:
                        raise EvaluationError(f"{_DATASET}: evaluation item {index}: {error}") from error
                done = chunk_args[0].shape[0]
                seen += done
                if progress is not None:
                    progress(done)
    close = getattr(progress, "close", None)
    if close is not None:
        close()
    if seen == 0:
        raise EvaluationError(f"{_DATASET} is empty: it must yield at least one (inputs, target) pair")
    results = {}
    for metric in metrics:
        int8_samples = torch.cat(int8_values[metric.name])
        fp32_samples = torch.cat(fp32_values[metric.name]) if metric.kind == "task" else None
        results[metric.name] = MetricResult(
            metric=metric,
            fp32=metric.reduce(fp32_samples) if fp32_samples is not None else metric.ideal,
            int8=metric.reduce(int8_samples),
            fp32_samples=fp32_samples,
            int8_samples=int8_samples,
            int8_nonfinite=nonfinite["int8"],
            fp32_nonfinite=nonfinite["fp32"],
        )
    return results


def count_samples(dataset: Iterable[Any]) -> int | None:
    """Number of samples when cheaply known (a sized dataset of tensors), for the progress bar."""
    if not hasattr(dataset, "__len__"):
        return None
    try:
        return sum(_as_args(item[0])[0].shape[0] for item in dataset)  # type: ignore[index]
    except Exception:
        return None
