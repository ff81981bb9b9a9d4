"""A small CNN trained on scikit-learn's digits (1,797 labelled 8x8 images that ship with sklearn).

Real trained weights for the accuracy gates, with no download. ``python tests/models/digits.py``
rewrites the committed split (digits_split.json), retrains and rewrites the committed checkpoint;
training is deterministic (seeded, one thread) and takes seconds on a CPU.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, TypeVar

import torch

CHECKPOINT = Path(__file__).with_name("digits_cnn.pt")
SPLIT_FILE = Path(__file__).with_name("digits_split.json")  # written by sklearn_split() (see __main__)
SPLIT_SEED = 0
TRAIN_SEED = 0
TEST_FRACTION = 0.25
EPOCHS = 30

M = TypeVar("M", bound=torch.nn.Module)


class DigitsCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = torch.nn.Linear(32 * 4 * 4, 64)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def _images_and_labels() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 images scaled to [0, 1], shape (N, 1, 8, 8), and their labels.

    Read from the CSV scikit-learn ships (what ``sklearn.datasets.load_digits`` reads) without
    importing sklearn: that import (scipy with it) takes over a second, more than the whole warm
    model suite spends on the digits models. tests/test_digits_data.py checks both agree.
    """
    import gzip
    import importlib.util

    import numpy

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scikit-learn is not installed: its digits data set is the digits models' data")
    csv = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(csv, "rt") as handle:
        table = numpy.loadtxt(handle, delimiter=",", dtype=numpy.float32)
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 8, 8).copy()) / 16.0
    return images, torch.from_numpy(table[:, -1].astype(numpy.int64))


def sklearn_split() -> dict[str, list[int]]:
    """The fixed split, computed: ``train_test_split`` stratified, seed ``SPLIT_SEED`` (what SPLIT_FILE holds)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    train, test = train_test_split(
        list(range(len(labels))), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return {"train": [int(i) for i in train], "test": [int(i) for i in test]}


@functools.lru_cache(maxsize=None)
def load_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y): images scaled to [0, 1], shape (N, 1, 8, 8); a fixed split.

    The split's indices (in sklearn's order: calibration takes the first training images) are
    committed in SPLIT_FILE. Computed once per process (callers slice it, never write into it).
    """
    images, labels = _images_and_labels()
    split = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))
    train, test = torch.tensor(split["train"]), torch.tensor(split["test"])
    return images[train], labels[train], images[test], labels[test]


def fit(make_model: Callable[[], M], epochs: int, seed: int = TRAIN_SEED) -> M:
    """Train ``make_model()`` on the training split: Adam, batches of 64, deterministic (seeded, one thread)."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reductions in a fixed order: the same weights on every machine
    try:
        train_x, train_y, _, _ = load_split()
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(train_y), generator=generator)
            for start in range(0, len(order), 64):
                batch = order[start : start + 64]
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def train() -> DigitsCNN:
    return fit(DigitsCNN, EPOCHS)


def load_trained() -> DigitsCNN:
    """The committed checkpoint (plain tensors, loaded with weights_only=True: nothing is unpickled)."""
    model = DigitsCNN()
    model.load_state_dict(torch.load(CHECKPOINT, weights_only=True))
    return model.eval()


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).double().mean().item()


if __name__ == "__main__":
    SPLIT_FILE.write_text(json.dumps(sklearn_split()) + "\n", encoding="utf-8")
    load_split.cache_clear()
    trained = train()
    torch.save(trained.state_dict(), CHECKPOINT)
    _, _, test_x, test_y = load_split()
    print(f"wrote {CHECKPOINT} ({CHECKPOINT.stat().st_size} bytes); held-out top-1 {accuracy(trained, test_x, test_y):.4f}")
