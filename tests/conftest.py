import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from small_models import SmallCNN, image_batches, seeded  # noqa: E402


@pytest.fixture(scope="session")
def small_cnn():
    return seeded(SmallCNN())


@pytest.fixture(scope="session")
def cnn_inputs():
    return image_batches(1, seed=42)[0]


@pytest.fixture(scope="session")
def cnn_calibration():
    return image_batches(16)


@pytest.fixture(scope="session")
def _stack_imported() -> None:
    """Import nncf, torchao and OpenVINO's torch integration (as the plugin's header does)."""
    from pytest_ovquant import report

    report.header_line()


@pytest.fixture
def pytester(_stack_imported: None, pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester, with the stack imported before any in-process run.

    pytester snapshots ``sys.modules`` and drops what an in-process run imported; nncf and torch
    register metatypes and TORCH_LIBRARY namespaces at import, so a later re-import in this process
    fails ("PTInputNoopMetatype is already registered", "Only a single TORCH_LIBRARY ..."). Imported
    first, they are in every snapshot and never dropped. (Only here: the model suite in a warm run
    quantizes nothing, and importing the quantizer stack costs it ~3 s.)
    """
    return pytester
