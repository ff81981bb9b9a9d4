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
