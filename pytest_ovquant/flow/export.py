"""Step 1: capture the FX graph with ``torch.export`` (the tutorial's ``export(...).module()``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import ExportError

# Lines of torch's own explanation kept in our message; the rest is torch's debugging advice.
_REASON_LINES = 12


def batch_dynamic_shapes(example_inputs: Sequence[Any]) -> tuple[Any, ...]:
    """``dynamic_shapes`` marking dim 0 of every tensor input as dynamic (``Dim.AUTO``)."""
    from torch.export import Dim

    return tuple({0: Dim.AUTO} if isinstance(t, torch.Tensor) and t.dim() > 0 else None for t in example_inputs)


def _hint(error: BaseException, strict: bool) -> str:
    text = str(error)
    hints = []
    if "data-dependent" in text or "GuardOnDataDependentSymNode" in type(error).__name__ + text:
        hints.append("the model branches on tensor values; rewrite the branch with torch.cond or torch.where")
    if "Constraints violated" in text or "specialized" in text:
        hints.append("a dimension marked dynamic was specialized; drop dynamic_batch or fix the model's shape logic")
    if strict:
        hints.append("strict export (TorchDynamo) is on: try strict_export=False")
    return ("; hint: " + "; ".join(hints)) if hints else ""


def export_model(
    model: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    name: str | None = None,
    dynamic_shapes: Any = None,
    dynamic_batch: bool = False,
    strict: bool = False,
) -> torch.fx.GraphModule:
    """Export ``model`` in eval mode and return ``ExportedProgram.module()``.

    Raises ``ExportError`` naming the model and giving torch's reason.
    """
    label = name or type(model).__name__
    if not isinstance(example_inputs, tuple):
        raise ExportError(
            f"example inputs of {label} must be a tuple of model inputs, got {type(example_inputs).__name__}; "
            "return (tensor,) from the ovq_example_inputs fixture"
        )
    if dynamic_batch and dynamic_shapes is None:
        dynamic_shapes = batch_dynamic_shapes(example_inputs)
    model = model.eval()
    try:
        with torch.no_grad():
            program = torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes, strict=strict)
    except Exception as error:  # torch raises many unrelated types here; keep its reason
        reason = "\n".join(str(error).strip().splitlines()[:_REASON_LINES])
        raise ExportError(
            f"torch.export could not capture {label}: {type(error).__name__}: {reason}{_hint(error, strict)}"
        ) from error
    return program.module()
