"""Content fingerprints: a model's identity (graph class + weights), inputs and calibration data.

Used as keys so that one (model, config) is built once per session, whatever the test asking.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import types
import weakref
from pathlib import Path
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


# -- a model's definition: what decides its exported graph besides the state_dict ---------------
_WALKED_ATTRIBUTES = frozenset({"_parameters", "_modules"})  # parameters: state_dict; modules: walked
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size, torch.memory_format)
_MAX_DEPTH = 6


class _Unstable(Exception):
    """An attribute with no identity that survives the process (e.g. an object without a stable repr)."""


_TORCH_DIR = str(Path(torch.__file__).parent)


def _source_file(obj: Any) -> str | None:
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:  # builtins and C extensions
        return None
    return path if path and not path.startswith(_TORCH_DIR) else None  # torch: its version is in every key


class _DefinitionHasher:
    def __init__(self) -> None:
        self.digest = hashlib.blake2b(digest_size=_DIGEST_SIZE)
        self.files: set[str] = set()
        self._stack: list[int] = []

    def code(self, obj: Any) -> str:
        """Classes and functions by qualified name; their source file is hashed at the end."""
        source = _source_file(obj)
        if source:
            self.files.add(source)
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"

    def token(self, value: Any, depth: int = 0) -> str:
        if depth > _MAX_DEPTH or id(value) in self._stack:
            raise _Unstable(type(value).__name__)
        if isinstance(value, _PLAIN_TYPES) or isinstance(value, enum.Enum):
            return repr(value)
        if isinstance(value, torch.Tensor):
            return f"tensor:{tensors_fingerprint([value])}"
        if isinstance(value, torch.nn.Module):  # a module kept outside _modules: its class only
            return f"module:{self.code(type(value))}"
        if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
            return self.code(value)
        self._stack.append(id(value))
        try:
            if isinstance(value, types.MethodType):
                return f"method:{self.token(value.__self__, depth + 1)}.{value.__func__.__qualname__}"
            if isinstance(value, functools.partial):
                return f"partial({self.token(value.func, depth + 1)},{self.token(value.args, depth + 1)},{self.token(value.keywords, depth + 1)})"
            if isinstance(value, (tuple, list)):
                return f"{type(value).__name__}({','.join(self.token(v, depth + 1) for v in value)})"
            if isinstance(value, (set, frozenset)):
                return f"set({','.join(sorted(self.token(v, depth + 1) for v in value))})"
            if isinstance(value, dict):
                return "{" + ",".join(f"{self.token(k, depth + 1)}:{self.token(v, depth + 1)}" for k, v in value.items()) + "}"
            if hasattr(value, "__dict__"):  # a plain object (e.g. a transformers config): its class and fields
                fields = ",".join(f"{k}={self.token(v, depth + 1)}" for k, v in sorted(vars(value).items()))
                return f"{self.code(type(value))}({fields})"
        finally:
            self._stack.pop()
        raise _Unstable(type(value).__name__)

    def module(self, name: str, module: torch.nn.Module) -> None:
        self.digest.update(f"\0{name}\0{self.code(type(module))}".encode())
        for klass in type(module).__mro__:
            self.code(klass)
        for key, value in sorted(vars(module).items()):
            if key in _WALKED_ATTRIBUTES:
                continue
            self.digest.update(f"\0{key}={self.token(value)}".encode())

    def hexdigest(self) -> str:
        for path in sorted(self.files):
            self.digest.update(f"\0{path}\0".encode())
            try:
                self.digest.update(hashlib.blake2b(Path(path).read_bytes(), digest_size=_DIGEST_SIZE).digest())
            except OSError:
                raise _Unstable(path) from None
        return self.digest.hexdigest()


def definition_fingerprint(model: torch.nn.Module) -> str | None:
    """Hash of what, besides ``state_dict``, decides the graph ``torch.export`` makes of ``model``.

    Every submodule's class, every attribute (flags like ``training`` and ``eps``, non-persistent
    buffers, hooks, config objects), and the content of the source file of every class and
    function involved outside torch (torch and the other stack packages are keyed by version).
    None when an attribute has no identity that survives the process: such a model is exported
    every run. Not seen: code the model calls in *other* files of the user's project (or a
    package's without a version change); ``--ovq-clear-cache`` after editing those.
    """
    hasher = _DefinitionHasher()
    try:
        for name, module in model.named_modules(remove_duplicate=False):
            hasher.module(name, module)
        return hasher.hexdigest()
    except _Unstable:
        return None
