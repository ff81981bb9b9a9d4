"""A small GELU MLP trained on scikit-learn's digits: the model for the preset / ignored_scope tests.

GELU's output dips below zero (down to about -0.17), so the layers after it see activations that
are mostly positive with a small negative tail: the case where OpenVINOQuantizer's presets differ
(``performance``: symmetric activation quantization; ``mixed``: asymmetric activations).

Real trained weights with no download, as tests/models/digits.py (same data split).
``python tests/models/digits_gelu.py`` retrains and rewrites the committed checkpoint; training is
deterministic (seeded, one thread) and takes a few seconds on a CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import digits  # noqa: E402  (the same split as the digits CNN)

CHECKPOINT = Path(__file__).with_name("digits_gelu_mlp.pt")
TRAIN_SEED = 0
EPOCHS = 40


class DigitsGeluMLP(torch.nn.Module):
    """64 -> 128 -> 64 -> 10, GELU between the linear layers (a transformer-style feed-forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.fc2 = torch.nn.Linear(128, 64)
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.gelu(self.fc1(torch.flatten(x, 1)))
        x = torch.nn.functional.gelu(self.fc2(x))
        return self.head(x)


def train() -> DigitsGeluMLP:
    return digits.fit(DigitsGeluMLP, EPOCHS, seed=TRAIN_SEED)


def load_trained() -> DigitsGeluMLP:
    """The committed checkpoint (plain tensors, loaded with weights_only=True: nothing is unpickled)."""
    model = DigitsGeluMLP()
    model.load_state_dict(torch.load(CHECKPOINT, weights_only=True))
    return model.eval()


if __name__ == "__main__":
    trained = train()
    torch.save(trained.state_dict(), CHECKPOINT)
    _, _, test_x, test_y = digits.load_split()
    print(
        f"wrote {CHECKPOINT} ({CHECKPOINT.stat().st_size} bytes); "
        f"held-out top-1 {digits.accuracy(trained, test_x, test_y):.4f}"
    )
