"""Step 2: quantize the exported graph with ``OpenVINOQuantizer``.

Two methods, as in the tutorial: ``prepare_pt2e`` -> calibrate -> ``convert_pt2e(fold_quantize=False)``,
or NNCF's ``quantize_pt2e`` (SmoothQuant, bias correction, subset size).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, Iterable

import torch

from .. import compat
from ..config import QuantizeConfig
from ..errors import QuantizeError


def build_quantizer(config: QuantizeConfig) -> Any:
    """An ``OpenVINOQuantizer`` carrying the config's preset/model_type/ignored_scope/target_device."""
    location = compat.find_openvino_quantizer()
    kwargs = config.quantizer_kwargs()
    try:
        return location.cls(**kwargs)
    except TypeError as error:
        raise QuantizeError(
            f"{location.module}.OpenVINOQuantizer does not accept {sorted(kwargs)}: {error}. "
            "This looks like an executorch/nncf release with another constructor; pin nncf<=3.1."
        ) from error


def as_model_args(item: Any, index: int | None = None) -> tuple[Any, ...]:
    """A calibration item -> positional model arguments."""
    if isinstance(item, torch.Tensor):
        return (item,)
    if isinstance(item, (tuple, list)) and item and all(isinstance(t, torch.Tensor) for t in item):
        return tuple(item)
    what = type(item).__name__
    if isinstance(item, (tuple, list)):
        what += " of " + (", ".join(type(t).__name__ for t in item[:4]) + ("..." if len(item) > 4 else "") or "nothing")
    raise QuantizeError(
        f"calibration item of type {what}{'' if index is None else f' (item {index})'} is not a tensor or a tuple "
        "of tensors; "
        "make ovq_calibration_dataset yield model inputs (tensor or tuple of tensors), "
        "or an nncf.Dataset with a transform_fn that returns them"
    )


def calibration_items(dataset: Any, limit: int) -> list[tuple[Any, ...]]:
    """Up to ``limit`` model-argument tuples from an nncf.Dataset or any iterable of inputs."""
    if hasattr(dataset, "get_inference_data"):  # nncf.Dataset: its transform_fn yields model inputs
        source: Iterable[Any] = dataset.get_inference_data()
    else:
        source = dataset
    try:
        iterator = iter(source)
    except TypeError as error:
        raise QuantizeError(
            f"calibration dataset {type(dataset).__name__} is not iterable ({error}); the ovq_calibration_dataset "
            "fixture must return an iterable of model inputs (e.g. a list of tuples of tensors) or an nncf.Dataset"
        ) from error
    items = [as_model_args(item, index) for index, item in enumerate(itertools.islice(iterator, limit))]
    if not items:
        raise QuantizeError(
            "calibration dataset is empty; the ovq_calibration_dataset fixture must yield at least one input"
        )
    return items


def quantize(
    exported: torch.fx.GraphModule,
    config: QuantizeConfig,
    calibration_dataset: Any,
    *,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.fx.GraphModule:
    """Quantize an exported graph; returns the converted graph with quantize/dequantize pairs."""
    label = name or "model"
    # prepare_pt2e annotates the graph in place; the exported model is shared between configs.
    exported = copy.deepcopy(exported)
    quantizer = build_quantizer(config)
    items = calibration_items(calibration_dataset, config.subset_size)
    try:
        if config.method == "quantize_pt2e":
            import nncf

            quantize_pt2e = compat.find_nncf_quantize_pt2e()
            return quantize_pt2e(
                exported,
                quantizer,
                nncf.Dataset(items, lambda args: args),
                subset_size=config.subset_size,
                fast_bias_correction=config.fast_bias_correction,
                smooth_quant=config.smooth_quant,
                fold_quantize=False,
            )
        pt2e = compat.find_pt2e_functions()
        prepared = pt2e.prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            for index, args in enumerate(items):
                try:
                    prepared(*args)
                except Exception as error:
                    shapes = ", ".join(str(list(a.shape)) for a in args)
                    raise QuantizeError(
                        f"calibrating {label} failed on ovq_calibration_dataset item {index} (shapes {shapes}): "
                        f"{type(error).__name__}: {error}; calibration items must be shaped like ovq_example_inputs"
                        + (" (with dynamic_batch=True the batch size may differ)" if not config.dynamic_batch else "")
                    ) from error
                if progress is not None:
                    progress(index + 1, len(items))
        return pt2e.convert_pt2e(prepared, fold_quantize=False)
    except QuantizeError:
        raise
    except Exception as error:
        raise QuantizeError(
            f"quantizing {label} with {config.method} failed: {type(error).__name__}: {error}"
        ) from error
