"""Tests of the compatibility layer (``pytest_ovquant.compat``); pass on torch 2.9 and torch >= 2.10 stacks."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys
import uuid

import pytest
import torch

from pytest_ovquant import compat
from pytest_ovquant.errors import MissingDependencyError

MISSING = "ovq_no_such_package_for_tests"


def _clear_caches() -> None:
    compat.find_openvino_quantizer.cache_clear()
    compat.find_pt2e_functions.cache_clear()


@pytest.fixture
def fresh_lookup(monkeypatch):
    """Empty the lookup caches before and after; the patched locations are undone before the final clear."""
    _clear_caches()
    yield monkeypatch
    monkeypatch.undo()
    _clear_caches()


# -- OpenVINOQuantizer -----------------------------------------------------------------------


def test_find_openvino_quantizer():
    location = compat.find_openvino_quantizer()
    assert isinstance(location.cls, type)
    assert location.cls.__name__ == "OpenVINOQuantizer"
    assert location.module in [module for module, _ in compat.QUANTIZER_LOCATIONS]
    assert getattr(importlib.import_module(location.module), "OpenVINOQuantizer") is location.cls


def test_find_openvino_quantizer_is_cached():
    assert compat.find_openvino_quantizer() is compat.find_openvino_quantizer()


def test_openvino_quantizer_is_a_torch_quantizer():
    cls = compat.find_openvino_quantizer().cls
    base_names = {base.__name__ for base in cls.__mro__}
    assert "Quantizer" in base_names


def test_later_quantizer_location_is_used_when_first_is_missing(fresh_lookup):
    real = compat.QUANTIZER_LOCATIONS
    fresh_lookup.setattr(compat, "QUANTIZER_LOCATIONS", ((MISSING + ".fx", "OpenVINOQuantizer"), *real))
    location = compat.find_openvino_quantizer()
    assert location.module != MISSING + ".fx"
    assert location.module in [module for module, _ in real]
    assert location.cls.__name__ == "OpenVINOQuantizer"


def test_module_without_the_class_is_skipped(fresh_lookup):
    fresh_lookup.setattr(compat, "QUANTIZER_LOCATIONS", (("json", "OpenVINOQuantizer"),))
    with pytest.raises(MissingDependencyError):
        compat.find_openvino_quantizer()


def test_broken_optional_package_does_not_hide_the_others(fresh_lookup, tmp_path):
    name = f"ovq_broken_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('broken optional package')\n")
    fresh_lookup.syspath_prepend(str(tmp_path))
    real = compat.QUANTIZER_LOCATIONS
    fresh_lookup.setattr(compat, "QUANTIZER_LOCATIONS", ((name, "OpenVINOQuantizer"), *real))
    location = compat.find_openvino_quantizer()
    assert location.module in [module for module, _ in real]
    assert name not in sys.modules


def test_missing_quantizer_names_the_packages(fresh_lookup):
    fresh_lookup.setattr(
        compat,
        "QUANTIZER_LOCATIONS",
        ((MISSING + ".a", "OpenVINOQuantizer"), (MISSING + ".b", "OpenVINOQuantizer")),
    )
    with pytest.raises(MissingDependencyError) as info:
        compat.find_openvino_quantizer()
    assert isinstance(info.value, ImportError)
    message = str(info.value)
    assert "nncf" in message
    assert "executorch" in message
    assert MISSING + ".a" in message and MISSING + ".b" in message


def test_cache_is_cleared_after_the_missing_test():
    # runs after test_missing_quantizer_names_the_packages: the failure must not have stuck
    location = compat.find_openvino_quantizer()
    assert location.cls.__name__ == "OpenVINOQuantizer"
    assert not location.module.startswith(MISSING)


# -- prepare_pt2e / convert_pt2e -------------------------------------------------------------


def test_find_pt2e_functions():
    functions = compat.find_pt2e_functions()
    assert callable(functions.prepare_pt2e)
    assert callable(functions.convert_pt2e)
    assert functions.module in compat.PT2E_LOCATIONS
    module = importlib.import_module(functions.module)
    assert module.prepare_pt2e is functions.prepare_pt2e
    assert module.convert_pt2e is functions.convert_pt2e
    if compat.torch_version() >= (2, 10):
        assert functions.module.startswith("torchao.")
        assert functions.prepare_pt2e.__module__.startswith("torchao.")
    else:
        assert functions.module.startswith("torch.ao.")
        assert functions.prepare_pt2e.__module__.startswith("torch.ao.")


def test_missing_pt2e_names_torchao(fresh_lookup):
    fresh_lookup.setattr(compat, "PT2E_LOCATIONS", (MISSING + ".quantize_pt2e",))
    with pytest.raises(MissingDependencyError) as info:
        compat.find_pt2e_functions()
    message = str(info.value)
    assert "torchao" in message
    assert "torch.ao" in message
    assert MISSING + ".quantize_pt2e" in message


def test_find_nncf_quantize_pt2e():
    quantize_pt2e = compat.find_nncf_quantize_pt2e()
    assert callable(quantize_pt2e)
    assert quantize_pt2e.__name__ == "quantize_pt2e"


def test_missing_nncf_quantize_pt2e_names_nncf(monkeypatch):
    # a None entry in sys.modules makes importing that module raise ImportError
    monkeypatch.setitem(sys.modules, "nncf.experimental.torch.fx", None)
    with pytest.raises(MissingDependencyError) as info:
        compat.find_nncf_quantize_pt2e()
    assert "nncf" in str(info.value)


# -- versions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.14.1+cu130", (2, 14, 1)),
        ("2.9.1", (2, 9, 1)),
        ("2.9.1+cu128", (2, 9, 1)),
        ("2026.4.1", (2026, 4, 1)),
        ("2.14.1+cpu", (2, 14, 1)),
        ("2.13", (2, 13)),
        ("0.18.0", (0, 18, 0)),
        ("10", (10,)),
        ("", ()),
        ("abc", ()),
        ("3.1.0.dev0+abc", (3, 1, 0)),
        ("2.10.0rc1", (2, 10, 0)),
    ],
)
def test_parse_version(text, expected):
    assert compat.parse_version(text) == expected


def test_parse_version_orders_releases():
    assert compat.parse_version("2.14.1+cu130") > compat.parse_version("2.13.0")
    assert compat.parse_version("2.9.1") < compat.parse_version("2.10.0")
    assert compat.parse_version("2.10.0") >= (2, 10)


def test_torch_version_matches_installed_torch():
    version = compat.torch_version()
    assert version == compat.parse_version(str(torch.__version__))
    assert ".".join(map(str, version[:2])) == ".".join(str(torch.__version__).split(".")[:2])


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.9.1+cu128", False),
        ("2.10.0", False),
        ("2.12.9", False),
        ("2.13.0", True),
        ("2.13.0.dev20260101+cpu", True),
        ("2.14.1+cu130", True),
        ("3.0.0", True),
    ],
)
def test_needs_own_compile_backend(monkeypatch, version, expected):
    monkeypatch.setattr(torch, "__version__", version)
    assert compat.needs_own_compile_backend() is expected


def test_needs_own_compile_backend_on_installed_torch():
    major_minor = tuple(int(p) for p in str(torch.__version__).split("+")[0].split(".")[:2])
    assert compat.needs_own_compile_backend() is (major_minor >= (2, 13))


def test_stack_versions():
    versions = compat.stack_versions()
    for name in ("torch", "nncf", "openvino", "python"):
        assert versions[name] is not None, name
        assert isinstance(versions[name], str)
    for name in ("torch", "nncf", "openvino"):
        assert versions[name] == importlib.metadata.version(name)
    assert compat.parse_version(versions["torch"]) == compat.parse_version(str(torch.__version__))
    import nncf

    assert compat.parse_version(versions["nncf"]) == compat.parse_version(nncf.__version__)
    assert versions["python"] == platform.python_version()
    assert versions["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")


def test_stack_versions_optional_packages():
    versions = compat.stack_versions()
    assert set(compat.STACK_PACKAGES) | {"python"} == set(versions)
    for name in compat.STACK_PACKAGES:
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        assert versions[name] == installed, name


def test_package_version_of_missing_package():
    assert compat.package_version(MISSING) is None
    assert compat.package_version("pytest") == importlib.metadata.version("pytest")
