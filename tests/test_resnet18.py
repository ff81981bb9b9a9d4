"""The issue's acceptance case: a quantized torchvision resnet18 runs its convolutions in int8
through torch.compile (and through the export lowering) on the installed stack."""

from __future__ import annotations

import pytest
import torch
import torchvision

from pytest_ovquant.config import make_config
from pytest_ovquant.flow import export_model, lower, quantize


@pytest.fixture(scope="module")
def quantized_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    example = (torch.randn(1, 3, 224, 224),)
    generator = torch.Generator().manual_seed(1)
    calibration = [(torch.randn(1, 3, 224, 224, generator=generator),) for _ in range(4)]
    return quantize(export_model(model, example, name="resnet18"), make_config(), calibration), example


@pytest.mark.parametrize("lowering", ["torch.compile", "export"])
def test_resnet18_convolutions_run_int8(quantized_resnet18, lowering):
    quantized, example = quantized_resnet18
    report = lower(quantized, example, make_config(("test", {"lowering": lowering})), quantized=True).report
    assert report.ok, report.describe()
    convolutions = report.precision_counts()["Convolution"]
    assert set(convolutions) <= {"u8", "i8"}, report.describe()
    assert sum(convolutions.values()) == 20
    assert report.int8_layers == 21  # 20 convolutions + the classifier
