"""The repository's own model suite: the models `make demo` quantizes, lowers and checks.

Models come with weights from a fixed seed (torchvision's pretrained weights cannot be downloaded
here); the fixtures follow the plugin's contract (ovq_model / ovq_example_inputs /
ovq_calibration_dataset), exactly as a user's conftest would.
"""

from __future__ import annotations

import pytest
import torch

IMAGE_SHAPE = (1, 3, 224, 224)
CALIBRATION_ITEMS = 8


def _torchvision_model(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


ZOO = {
    "resnet18": _torchvision_model,
    "mobilenet_v3_small": _torchvision_model,
}


@pytest.fixture(scope="session", params=sorted(ZOO))
def ovq_model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return ZOO[request.param](request.param)


@pytest.fixture(scope="session")
def ovq_example_inputs() -> tuple[torch.Tensor]:
    return (torch.randn(*IMAGE_SHAPE, generator=torch.Generator().manual_seed(1)),)


@pytest.fixture(scope="session")
def ovq_calibration_dataset() -> list[tuple[torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    return [(torch.randn(*IMAGE_SHAPE, generator=generator),) for _ in range(CALIBRATION_ITEMS)]
