"""Users' own data: calibration and evaluation sets built from an image folder.

Two user projects (written with pytester, run in a subprocess), on generated image folders in the
torchvision ``ImageFolder`` layout (root/<class>/*.png), both with the standard ImageNet preprocessing:

- a conftest that builds ``ovq_calibration_dataset`` and ``ovq_eval_dataset`` itself, reading the
  folder from the ``OVQ_DATA_DIR`` environment variable (written before the plugin had an option
  for it; any user can do the same with their own loader);
- a conftest that returns the plugin's ``ovq_image_folder_calibration`` / ``ovq_image_folder_eval``
  fixtures, the folder given with ``--ovq-data-dir`` (calibration/ and val/ subfolders).

The images are a few small PNGs of random pixels, dark ones in class_a and bright ones in class_b.
The user's model is a tiny CNN whose weights make it a brightness classifier, so its FP32 top-1 on
the folder is 1.0: the labels ImageFolder derives from the folder names reach the top-1 gate, and a
preprocessing mistake (no Normalize, wrong channel order) shows as a wrong top-1.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("torchvision", reason="torchvision is not installed (pip install -e '.[models]')")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (it comes with torchvision)")

IMAGES_PER_CLASS = 4
# class -> range of pixel values: class_a dark, class_b bright
CLASSES = {"class_a": (0, 100), "class_b": (155, 256)}

# The user's model (in both projects' conftest.py).
TINY_CNN = textwrap.dedent(
    '''
    import pytest
    import torch


    class TinyCNN(torch.nn.Module):
        """conv-relu-pool-linear with weights that classify by brightness (class_a dark, class_b bright)."""

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 2)
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                noise = 0.01 * torch.randn(self.conv.weight.shape, generator=generator)
                sign = torch.tensor([1.0] * 4 + [-1.0] * 4).view(8, 1, 1, 1)
                self.conv.weight.copy_(sign / 27 + noise)  # channels 0-3: bright, 4-7: dark
                self.conv.bias.zero_()
                self.fc.weight.copy_(torch.tensor([[0.0] * 4 + [1.0] * 4, [1.0] * 4 + [0.0] * 4]))
                self.fc.bias.zero_()

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))
    '''
)

USER_CONFTEST = TINY_CNN + textwrap.dedent(
    '''
    import os
    from pathlib import Path

    from torchvision import datasets, transforms

    IMAGENET_MEAN = (0.485, 0.456, 0.406)
    IMAGENET_STD = (0.229, 0.224, 0.225)


    def imagenet_transform(resize=256, crop=224):
        """The standard ImageNet evaluation preprocessing (as the plugin's pytest_ovquant.data.imagenet_transform)."""
        return transforms.Compose(
            [
                transforms.Resize(resize),
                transforms.CenterCrop(crop),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )


    # Small crops keep this example fast; the standard pipeline is imagenet_transform().
    FAST = {"resize": 36, "crop": 32}


    def data_dir():
        """The user's image folder, from an environment variable (the plugin's own way: --ovq-data-dir
        with the ovq_image_folder_* fixtures, the second project in this file)."""
        value = os.environ.get("OVQ_DATA_DIR")
        if not value:
            pytest.fail("set OVQ_DATA_DIR to an image folder laid out as root/<class>/<image>", pytrace=False)
        return Path(value)


    @pytest.fixture(scope="session")
    def image_folder():
        return datasets.ImageFolder(data_dir(), transform=imagenet_transform(**FAST))


    @pytest.fixture(scope="session")
    def ovq_model():
        return TinyCNN().eval()


    @pytest.fixture(scope="session")
    def ovq_example_inputs(image_folder):
        return (image_folder[0][0].unsqueeze(0),)


    @pytest.fixture(scope="session")
    def ovq_calibration_dataset(image_folder):
        # calibrate on the even-numbered images, evaluate on the others
        return [(image_folder[i][0].unsqueeze(0),) for i in range(0, len(image_folder), 2)]


    @pytest.fixture(scope="session")
    def ovq_eval_dataset(image_folder):
        pairs = [image_folder[i] for i in range(1, len(image_folder), 2)]
        images = torch.stack([image for image, _ in pairs])
        labels = torch.tensor([label for _, label in pairs])
        return [(images, labels)]
    '''
)

USER_TESTS = textwrap.dedent(
    '''
    import pytest
    import torch

    from conftest import IMAGENET_MEAN, IMAGENET_STD, data_dir, imagenet_transform


    @pytest.mark.ovq_accuracy(metric="top1", max_drop=0.0)
    @pytest.mark.ovq_accuracy(metric="cosine", min_value=0.99)
    def test_int8_on_my_images():
        """The gates run on the folder's images and labels."""


    def test_datasets_come_from_the_folder(image_folder, ovq_calibration_dataset, ovq_eval_dataset):
        assert image_folder.classes == ["class_a", "class_b"]
        assert len(ovq_calibration_dataset) == len(image_folder) // 2
        assert all(x.shape == (1, 3, 32, 32) for (x,) in ovq_calibration_dataset)
        (images, labels), = ovq_eval_dataset
        assert images.shape == (len(image_folder) // 2, 3, 32, 32)
        assert sorted(set(labels.tolist())) == [0, 1]
        # normalised with ImageNet statistics: dark images below the mean, bright ones above
        means = images.mean(dim=(1, 2, 3))
        assert (means[labels == 0] < -1).all() and (means[labels == 1] > 0.5).all()


    def test_default_transform_is_the_imagenet_one():
        steps = imagenet_transform().transforms
        assert [type(step).__name__ for step in steps] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
        assert steps[0].size == 256 and tuple(steps[1].size) == (224, 224)
        assert tuple(steps[3].mean) == IMAGENET_MEAN and tuple(steps[3].std) == IMAGENET_STD
        from torchvision import datasets

        image, _ = datasets.ImageFolder(data_dir(), transform=imagenet_transform())[0]
        assert image.shape == (3, 224, 224)
    '''
)


def make_image_folder(root: Path, seed: int = 0) -> Path:
    """root/class_a/*.png (dark) and root/class_b/*.png (bright): small RGB images of random pixels."""
    generator = np.random.default_rng(seed)
    for name, (low, high) in CLASSES.items():
        (root / name).mkdir(parents=True)
        for index in range(IMAGES_PER_CLASS):
            pixels = generator.integers(low, high, size=(40, 48, 3), dtype=np.uint8)  # not square: Resize sees it
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")
    return root


# The plugin's way: --ovq-data-dir DIR and its ovq_image_folder_* fixtures (standard 224 crops).
OPTION_CONFTEST = TINY_CNN + textwrap.dedent(
    '''

    @pytest.fixture(scope="session")
    def ovq_model():
        return TinyCNN().eval()


    @pytest.fixture(scope="session")
    def ovq_example_inputs(ovq_image_folder_calibration):
        return ovq_image_folder_calibration[0]


    @pytest.fixture(scope="session")
    def ovq_calibration_dataset(ovq_image_folder_calibration):
        return ovq_image_folder_calibration


    @pytest.fixture(scope="session")
    def ovq_eval_dataset(ovq_image_folder_eval):
        return ovq_image_folder_eval
    '''
)

OPTION_TESTS = textwrap.dedent(
    '''
    import pytest


    @pytest.mark.ovq_accuracy(metric="top1", max_drop=0.0)
    @pytest.mark.ovq_accuracy(metric="cosine", min_value=0.99)
    def test_int8_on_my_images():
        """The gates run on the val/ images and labels."""


    def test_datasets_come_from_the_folder(ovq_calibration_dataset, ovq_eval_dataset):
        assert all(x.shape == (1, 3, 224, 224) for (x,) in ovq_calibration_dataset)
        assert len(ovq_calibration_dataset) == {calibration}
        images = [x for x, _ in ovq_eval_dataset]
        labels = [int(label) for _, y in ovq_eval_dataset for label in y]
        assert sum(len(x) for x in images) == {evaluation} and sorted(set(labels)) == [0, 1]
    '''
)


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TESTS)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:logging", *args, timeout=600)


def test_make_image_folder(tmp_path):
    root = make_image_folder(tmp_path / "images")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert len(files) == IMAGES_PER_CLASS * len(CLASSES) and files[0] == "class_a/000.png"
    with Image.open(root / files[0]) as image:
        assert image.mode == "RGB" and image.size == (48, 40)


def test_calibration_and_evaluation_from_an_image_folder(user_project, tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "images")
    monkeypatch.setenv("OVQ_DATA_DIR", str(root))
    # --ovq-regen-all: this new project records its references (the bounds in the markers still apply)
    result = run(user_project, "--ovq-regen-all")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "calibrating on the example inputs only" not in out  # the folder's images calibrated it
    reference = yaml.safe_load((user_project.path / "reference_metrics/test_user.yaml").read_text())
    metrics = reference["tests"]["test_int8_on_my_images"]["metrics"]
    # the brightness classifier gets every evaluated image right in FP32 and in INT8
    assert metrics["top1"]["fp32"] == 1.0 and metrics["top1"]["int8"] == 1.0
    assert metrics["cosine"]["int8"] >= 0.99


def test_without_the_data_dir_the_user_is_told_what_to_set(user_project, monkeypatch):
    monkeypatch.delenv("OVQ_DATA_DIR", raising=False)
    result = run(user_project, "-k", "datasets")
    result.assert_outcomes(errors=1, deselected=2)
    result.stdout.fnmatch_lines(["*set OVQ_DATA_DIR to an image folder*"])


def test_the_plugins_data_dir_option(pytester, tmp_path):
    """--ovq-data-dir DIR with DIR/calibration and DIR/val: the plugin's fixtures feed the gates."""
    root = tmp_path / "images"
    make_image_folder(root / "calibration", seed=1)
    make_image_folder(root / "val", seed=2)
    pytester.makeconftest(OPTION_CONFTEST)
    total = IMAGES_PER_CLASS * len(CLASSES)
    pytester.makepyfile(test_user=OPTION_TESTS.format(calibration=total, evaluation=total))
    result = run(pytester, "--ovq-regen-all", f"--ovq-data-dir={root}")
    result.assert_outcomes(passed=2)
    metrics = yaml.safe_load((pytester.path / "reference_metrics/test_user.yaml").read_text())["tests"][
        "test_int8_on_my_images"
    ]["metrics"]
    assert metrics["top1"]["fp32"] == 1.0 and metrics["top1"]["int8"] == 1.0
    assert metrics["cosine"]["int8"] >= 0.99


def test_the_user_transform_is_the_plugins(user_project):
    """The hand-written pipeline of the env-var project is the one the plugin's fixtures use."""
    import importlib.util

    from pytest_ovquant import data

    spec = importlib.util.spec_from_file_location("user_conftest", user_project.path / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ours, theirs = module.imagenet_transform().transforms, data.imagenet_transform().transforms
    assert [repr(step) for step in ours] == [repr(step) for step in theirs]
