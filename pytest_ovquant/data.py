"""Users' own data: calibration and evaluation sets from an image folder (``--ovq-data-dir``).

Layout: torchvision's ``ImageFolder`` (``DIR/<class>/<image>``). When ``DIR`` has a
``calibration/`` (or ``train/``) and a ``val/`` (or ``eval/``) subfolder, each is an ImageFolder of
its own and they are used for calibration and evaluation; otherwise ``DIR`` serves both. Images get
the standard ImageNet preprocessing unless a transform is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, MissingDependencyError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CALIBRATION_DIRS = ("calibration", "calib", "train")
EVAL_DIRS = ("val", "eval", "validation")


def imagenet_transform(resize: int = 256, crop: int = 224) -> Callable[[Any], Any]:
    """Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet mean/std)."""
    transforms = _torchvision().transforms
    return transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _torchvision() -> Any:
    try:
        import torchvision
    except ImportError as error:
        raise MissingDependencyError(
            "--ovq-data-dir reads images with torchvision, which is not installed: pip install torchvision"
        ) from error
    return torchvision


def split_dirs(root: Path) -> tuple[Path, Path]:
    """(calibration folder, evaluation folder) under ``root``."""
    if not root.is_dir():
        raise ConfigError(f"--ovq-data-dir {root}: not a directory (expected an ImageFolder: DIR/<class>/<image>)")
    calibration = next((root / d for d in CALIBRATION_DIRS if (root / d).is_dir()), None)
    evaluation = next((root / d for d in EVAL_DIRS if (root / d).is_dir()), None)
    if calibration is not None and evaluation is not None:
        return calibration, evaluation
    return root, root


def _folder(path: Path, transform: Callable[[Any], Any] | None) -> Any:
    try:
        return _torchvision().datasets.ImageFolder(str(path), transform=transform or imagenet_transform())
    except (FileNotFoundError, RuntimeError) as error:  # torchvision's "Found no valid file" etc.
        raise ConfigError(f"--ovq-data-dir: {path} is not a usable ImageFolder: {error}") from error


def calibration_set(root: Path, limit: int, transform: Callable[[Any], Any] | None = None) -> list[tuple[Any]]:
    """Up to ``limit`` images as single-image model inputs ``(tensor[1, 3, H, W],)``."""
    folder = _folder(split_dirs(root)[0], transform)
    return [(folder[i][0].unsqueeze(0),) for i in range(min(limit, len(folder)))]


def eval_set(root: Path, batch_size: int = 32, transform: Callable[[Any], Any] | None = None) -> list[tuple[Any, Any]]:
    """``(images[B, 3, H, W], labels[B])`` batches, labels being ImageFolder's class indices."""
    import torch

    folder = _folder(split_dirs(root)[1], transform)
    batches = []
    for start in range(0, len(folder), batch_size):
        items = [folder[i] for i in range(start, min(start + batch_size, len(folder)))]
        batches.append((torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])))
    return batches
