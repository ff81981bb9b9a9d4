"""Accuracy metrics, computed per sample so that a drop can get a paired confidence interval.

Two kinds:
- *task* metrics compare a model's outputs with the dataset's targets (top-1, top-k); they are
  computed for FP32 and for INT8 on the same samples, and the drop is FP32 - INT8;
- *fidelity* metrics compare INT8 outputs with FP32 outputs (cosine, SQNR, max abs error); the
  FP32 value is the metric's ideal (cosine 1, max error 0) where one exists.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import ConfigError

SQNR_CEILING_DB = 200.0
PerSample = Callable[[torch.Tensor, Any, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class Metric:
    """A named metric: ``per_sample(outputs, targets, fp32_outputs) -> tensor[batch]``."""

    name: str
    kind: str  # "task" | "fidelity"
    higher_is_better: bool
    per_sample: PerSample
    aggregate: str = "mean"  # "mean" | "max" | "min"
    ideal: float | None = None  # the FP32 value of a fidelity metric

    def reduce(self, values: torch.Tensor) -> float:
        if values.numel() == 0:
            raise ValueError(f"metric {self.name}: no samples")
        values = values.double()
        if self.aggregate == "max":
            return float(values.max())
        if self.aggregate == "min":
            return float(values.min())
        return float(values.mean())

    def drop(self, fp32: float | None, int8: float) -> float | None:
        """How much worse INT8 is than FP32 (positive = worse), in the metric's own units."""
        if fp32 is None or math.isinf(fp32):
            return None
        return fp32 - int8 if self.higher_is_better else int8 - fp32


def _logits(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs
    for attr in ("logits", "last_hidden_state"):
        if hasattr(outputs, attr):
            return getattr(outputs, attr)
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    if isinstance(outputs, dict) and outputs:
        return next(iter(outputs.values()))
    raise TypeError(f"cannot take a tensor from model outputs of type {type(outputs).__name__}")


def _targets(targets: Any, batch: int, metric: str) -> torch.Tensor:
    if targets is None:
        raise ValueError(f"metric {metric} needs targets; ovq_eval_dataset must yield (inputs, target) pairs")
    try:
        tensor = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"metric {metric}: targets of type {type(targets).__name__} are not class indices ({error}); "
            "yield a tensor of integer class indices, one per sample"
        ) from None
    flat = tensor.reshape(-1)
    if flat.numel() != batch:
        raise ValueError(
            f"metric {metric}: {flat.numel()} targets for a batch of {batch} outputs (targets of shape "
            f"{list(tensor.shape)}; {metric} needs one class index per sample, not one-hot or per-position labels)"
        )
    if flat.is_floating_point():
        if not bool(torch.all(flat == flat.round())):
            raise ValueError(
                f"metric {metric}: targets must be integer class indices, got {flat.tolist()[:8]}"
                + ("..." if flat.numel() > 8 else "")
            )
    return flat.long()


def topk(k: int) -> Metric:
    def per_sample(outputs: Any, targets: Any, fp32: Any) -> torch.Tensor:
        logits = _logits(outputs)
        logits = logits.reshape(logits.shape[0], -1)
        if logits.shape[1] < k:
            raise ValueError(f"metric top{k}: outputs have only {logits.shape[1]} classes")
        labels = _targets(targets, logits.shape[0], f"top{k}")
        outside = (labels < 0) | (labels >= logits.shape[1])
        if bool(outside.any()):
            raise ValueError(
                f"metric top{k}: target class index {int(labels[outside][0])} is out of range for outputs with "
                f"{logits.shape[1]} classes (valid: 0..{logits.shape[1] - 1})"
            )
        hits = logits.topk(k, dim=1).indices.eq(labels[:, None]).any(dim=1)
        return hits.double()

    return Metric(f"top{k}", "task", True, per_sample)


def _flat_pair(outputs: Any, fp32: Any, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    if fp32 is None:
        raise ValueError(f"metric {metric} compares with FP32 outputs, none given")
    a = _logits(outputs).double()
    b = _logits(fp32).double()
    if a.shape != b.shape:
        raise ValueError(f"metric {metric}: INT8 output shape {tuple(a.shape)} != FP32 {tuple(b.shape)}")
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)


def _cosine(outputs: Any, targets: Any, fp32: Any) -> torch.Tensor:
    a, b = _flat_pair(outputs, fp32, "cosine")
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    return torch.where((a == b).all(dim=1), torch.ones_like(cosine), cosine)  # 0 == 0 is a perfect match


def _sqnr(outputs: Any, targets: Any, fp32: Any) -> torch.Tensor:
    a, b = _flat_pair(outputs, fp32, "sqnr")
    signal = b.pow(2).sum(dim=1)
    noise = (a - b).pow(2).sum(dim=1)
    sqnr = 10 * torch.log10(signal.clamp_min(1e-30) / noise.clamp_min(1e-30))
    # identical outputs (no noise) get the ceiling, not -inf/inf, so references stay finite
    return torch.where(noise == 0, torch.full_like(sqnr, SQNR_CEILING_DB), sqnr.clamp(max=SQNR_CEILING_DB))


def _max_abs(outputs: Any, targets: Any, fp32: Any) -> torch.Tensor:
    a, b = _flat_pair(outputs, fp32, "max_abs_error")
    return (a - b).abs().max(dim=1).values


BUILTIN: dict[str, Metric] = {
    "top1": topk(1),
    "top5": topk(5),
    "cosine": Metric("cosine", "fidelity", True, _cosine, ideal=1.0),
    "sqnr": Metric("sqnr", "fidelity", True, _sqnr, ideal=None),
    "max_abs_error": Metric("max_abs_error", "fidelity", False, _max_abs, aggregate="max", ideal=0.0),
}
_TOPK = re.compile(r"^top(\d+)$")


def resolve_metric(spec: Any, source: str) -> Metric:
    """A built-in name ("top1", "top5", "topK", "cosine", "sqnr", "max_abs_error"), a Metric, or a callable.

    A plain callable ``fn(outputs, targets) -> per-sample tensor or float`` is a task metric
    (higher is better) named after the function.
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        if spec in BUILTIN:
            return BUILTIN[spec]
        match = _TOPK.match(spec)
        if match and int(match.group(1)) >= 1:
            return topk(int(match.group(1)))
        raise ConfigError(
            f"{source}: unknown metric {spec!r}; built-in: {', '.join(BUILTIN)} (or topK), or pass a callable"
        )
    if callable(spec):
        name = getattr(spec, "__name__", type(spec).__name__)

        def per_sample(outputs: Any, targets: Any, fp32: Any) -> torch.Tensor:
            value = torch.as_tensor(spec(outputs, targets), dtype=torch.float64).reshape(-1)
            batch = _logits(outputs).shape[0]
            if value.numel() == 1 and batch > 1:
                # one number for the chunk: weigh it by the chunk's samples so chunking does not matter
                value = value.expand(batch)
            return value

        return Metric(name, "task", True, per_sample)
    raise ConfigError(f"{source}: metric={spec!r} must be a metric name or a callable")
