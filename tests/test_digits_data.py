"""The digits models' data (tests/models/digits.py) read without sklearn equals what sklearn gives."""

from __future__ import annotations

import json

import pytest
import torch

digits = pytest.importorskip("digits", reason="tests/models is put on sys.path by the root conftest.py")


def test_images_and_labels_are_sklearns():
    from sklearn.datasets import load_digits

    reference = load_digits()
    images, labels = digits._images_and_labels()
    assert torch.equal(images, torch.tensor(reference.images, dtype=torch.float32).unsqueeze(1) / 16.0)
    assert torch.equal(labels, torch.tensor(reference.target, dtype=torch.long))


def test_committed_split_is_sklearns_stratified_split():
    committed = json.loads(digits.SPLIT_FILE.read_text(encoding="utf-8"))
    assert committed == digits.sklearn_split()
    assert sorted(committed["train"] + committed["test"]) == list(range(1797))
    assert len(committed["test"]) == 450


def test_load_split_follows_the_committed_indices():
    images, labels = digits._images_and_labels()
    train_x, train_y, test_x, test_y = digits.load_split()
    split = json.loads(digits.SPLIT_FILE.read_text(encoding="utf-8"))
    assert torch.equal(train_x[:5], images[split["train"][:5]])
    assert torch.equal(test_y, labels[split["test"]])
    assert train_x.shape == (1347, 1, 8, 8) and test_x.shape == (450, 1, 8, 8)
