"""Small real models for the plugin's own tests (seconds to export, quantize and compile)."""

from __future__ import annotations

import torch


class SmallCNN(torch.nn.Module):
    """conv-relu-conv-relu-pool-linear: the smallest model with the tutorial's layer kinds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3)
        self.conv2 = torch.nn.Conv2d(16, 32, 3)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class SmallMLP(torch.nn.Module):
    """linear-gelu-linear: a transformer-style block for preset=mixed / model_type=transformer."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(32, 64)
        self.down = torch.nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x)))


class DataDependentBranch(torch.nn.Module):
    """torch.export cannot trace a Python branch on tensor values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x + 1
        return x - 1


def seeded(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    return model.eval()


def image_batches(count: int, seed: int = 1, size: int = 32) -> list[tuple[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 3, size, size, generator=generator),) for _ in range(count)]


# Source text of the model that pytester-written user projects define in their conftest.py.
TINY_CNN_SOURCE = """
import pytest
import torch


class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3)
        self.conv2 = torch.nn.Conv2d(8, 16, 3)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))
"""


def tiny_input_fixtures(calibration_items: int) -> str:
    """Source of the user fixtures for TinyCNN-sized inputs: one 1x3x16x16 example input (seed 1)
    and ``calibration_items`` calibration images (seed 2)."""
    return f"""

@pytest.fixture(scope="session")
def ovq_example_inputs():
    return (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)),)


@pytest.fixture(scope="session")
def ovq_calibration_dataset():
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(1, 3, 16, 16, generator=g),) for _ in range({calibration_items})]
"""


def tiny_cnn_project(calibration_items: int, eval_fixture: str) -> str:
    """A user conftest.py: TinyCNN with seeded weights, 1x3x16x16 inputs, ``calibration_items``
    calibration images, and the ``ovq_eval_dataset`` fixture source given."""
    return TINY_CNN_SOURCE + f"""

@pytest.fixture(scope="session")
def ovq_model():
    torch.manual_seed(0)
    return TinyCNN().eval()
{tiny_input_fixtures(calibration_items)}
{eval_fixture}"""


# Four random images without targets: enough for the fidelity metrics (cosine, sqnr).
FIDELITY_EVAL_FIXTURE = """
@pytest.fixture(scope="session")
def ovq_eval_dataset():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(4, 3, 16, 16, generator=g), None)]
"""
