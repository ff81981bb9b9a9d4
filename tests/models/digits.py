"""A small CNN trained on scikit-learn's digits (1,797 labelled 8x8 images that ship with sklearn).

Real trained weights for the accuracy gates, with no download. ``python tests/models/digits.py`` retrains
and rewrites the committed checkpoint; training is deterministic (seeded, one thread) and takes
seconds on a CPU.
"""

from __future__ import annotations

import functools

from pathlib import Path
from typing import Callable, TypeVar

import torch

CHECKPOINT = Path(__file__).with_name("digits_cnn.pt")
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


@functools.lru_cache(maxsize=None)
def load_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y): images scaled to [0, 1], shape (N, 1, 8, 8); a fixed split.

    Computed once per process (callers slice it, never write into it).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        list(range(len(labels))), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=digits.target
    )
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


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
    trained = train()
    torch.save(trained.state_dict(), CHECKPOINT)
    _, _, test_x, test_y = load_split()
    print(f"wrote {CHECKPOINT} ({CHECKPOINT.stat().st_size} bytes); held-out top-1 {accuracy(trained, test_x, test_y):.4f}")
