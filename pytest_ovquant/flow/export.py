"""Step 1: capture the FX graph with ``torch.export`` (the tutorial's ``export(...).module()``)."""

from __future__ import annotations

import inspect
import os
import re
import traceback
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
    data_dependent = "data-dependent" in text.lower() or "GuardOnDataDependentSymNode" in type(error).__name__
    if data_dependent:
        hints.append(
            "the model branches on tensor values (a Python `if` on a tensor cannot be captured in one graph); "
            "rewrite the branch with torch.cond or torch.where"
            + ("" if strict else " (non-strict export, strict_export=False, is already in use)")
        )
    if "Constraints violated" in text or "specialized" in text:
        hints.append(
            "a dimension marked dynamic was specialized; drop dynamic_batch=True (dynamic shapes) or fix the "
            "model's shape logic"
        )
    if strict and not data_dependent:  # non-strict export cannot branch on values either
        hints.append("strict export (TorchDynamo) is on: try @pytest.mark.ovq_quantize(strict_export=False)")
    return ("\nhint: " + "; ".join(hints)) if hints else ""


# 'File "<path>", line <n>, in <function>' followed by the source line, as torch quotes user code
_USER_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>[^\s,]+)(?:, code: (?P<code>[^\n]+)|\n(?P<next>[^\n]*))')
_TORCH_DIR = os.path.dirname(torch.__file__)


def _construct(error: BaseException, model: torch.nn.Module) -> str | None:
    """Where in the user's code export failed ('conftest.py:16 in forward: if x.sum() > 0:'), if known.

    torch quotes the user frame in its message (strict and non-strict alike); failing that, the
    traceback's last frame in the model's own source file.
    """
    found = None
    for match in _USER_FRAME.finditer(str(error)):
        if os.path.abspath(match.group("file")).startswith(_TORCH_DIR + os.sep):
            continue
        code = (match.group("code") or match.group("next") or "").strip()
        found = f"{match.group('file')}:{match.group('line')} in {match.group('func')}" + (f": {code}" if code else "")
    if found is not None:
        return found
    try:
        source = inspect.getsourcefile(type(model))
    except TypeError:
        return None
    frames = [f for f in traceback.extract_tb(error.__traceback__) if source and f.filename == source]
    if not frames:
        return None
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno} in {frame.name}" + (f": {frame.line.strip()}" if frame.line else "")


def _describe_inputs(example_inputs: Sequence[Any]) -> str:
    parts = [
        f"Tensor{list(t.shape)} {str(t.dtype).replace('torch.', '')}" if isinstance(t, torch.Tensor) else type(t).__name__
        for t in example_inputs
    ]
    return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"


def _check_inputs_fit(model: torch.nn.Module, example_inputs: tuple[Any, ...], label: str) -> None:
    """Run the FP32 model once on the example inputs, so a mismatch is named as one (not as an export failure)."""
    fix = (
        "make the ovq_example_inputs fixture return a tuple of the model's forward() arguments, shaped as the "
        "model expects"
    )
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(*example_inputs)
        except TypeError as error:
            raise ExportError(
                f"ovq_example_inputs {_describe_inputs(example_inputs)} do not match {label}.forward{signature}: "
                f"{error}; {fix}"
            ) from None
    try:
        with torch.no_grad():
            model(*example_inputs)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(
            f"{label} does not run on its ovq_example_inputs {_describe_inputs(example_inputs)}: "
            f"{type(error).__name__}: {first}; {fix}"
        ) from error


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
    return export_program(
        model, example_inputs, name=name, dynamic_shapes=dynamic_shapes, dynamic_batch=dynamic_batch, strict=strict
    ).module()


def export_program(
    model: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    name: str | None = None,
    dynamic_shapes: Any = None,
    dynamic_batch: bool = False,
    strict: bool = False,
) -> torch.export.ExportedProgram:
    """``export_model``'s ``ExportedProgram`` itself (what the artifact cache saves)."""
    label = name or type(model).__name__
    if not isinstance(example_inputs, tuple):
        raise ExportError(
            f"example inputs of {label} must be a tuple of model inputs, got {type(example_inputs).__name__}; "
            "return (tensor,) from the ovq_example_inputs fixture"
        )
    if dynamic_batch and dynamic_shapes is None:
        dynamic_shapes = batch_dynamic_shapes(example_inputs)
    model = model.eval()
    _check_inputs_fit(model, example_inputs, label)
    try:
        with torch.no_grad():
            program = torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes, strict=strict)
    except Exception as error:  # torch raises many unrelated types here; keep its reason
        # torch's own explanation: its first paragraph (the rest is debugging advice, kept in the chained error)
        paragraph = str(error).strip().split("\n\n")[0]
        reason = "\n".join(paragraph.splitlines()[:_REASON_LINES])
        construct = _construct(error, model)
        where = f"\nat {construct}" if construct else ""
        raise ExportError(
            f"torch.export could not capture {label}: {type(error).__name__}: {reason}{where}{_hint(error, strict)}"
        ) from error
    return program
