"""Content fingerprints: a model's identity (graph class + weights), inputs and calibration data.

Used as keys so that one (model, config) is built once per session, whatever the test asking.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any, Iterable

import torch

_DIGEST_SIZE = 16


def _update_with_tensor(digest: "hashlib._Hash", tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    # view as bytes: works for every dtype, including bfloat16 that numpy lacks
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def tensors_fingerprint(values: Iterable[Any]) -> str:
    """Hash of tensors (dtype, shape, content) and of any other values' repr."""
    digest = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    for value in values:
        if isinstance(value, torch.Tensor):
            _update_with_tensor(digest, value)
        elif isinstance(value, (tuple, list)):
            digest.update(b"(")
            digest.update(tensors_fingerprint(value).encode())
            digest.update(b")")
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def inputs_signature(example_inputs: tuple[Any, ...]) -> str:
    """Shapes and dtypes only: what export/compile specialise on."""
    parts = [
        f"{tuple(t.shape)}:{t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__ for t in example_inputs
    ]
    return ",".join(parts)


class ModelFingerprints:
    """Memoised ``model -> fingerprint`` (hashing weights costs ~0.1 s per 50 MB)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[weakref.ref, str]] = {}

    def __call__(self, model: torch.nn.Module) -> str:
        known = self._known.get(id(model))
        if known is not None and known[0]() is model:
            return known[1]
        digest = hashlib.blake2b(digest_size=_DIGEST_SIZE)
        digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            _update_with_tensor(digest, tensor)
        value = digest.hexdigest()
        self._known[id(model)] = (weakref.ref(model), value)
        return value
