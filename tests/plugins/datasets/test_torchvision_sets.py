"""``torchvision``: torchvision's datasets read from small copies of their real on-disk formats.

Every fixture writes, under tmp_path, the files torchvision's class reads (CIFAR's pickled
batches, MNIST's idx files, SVHN's .mat, the folders with split and label files of EuroSAT,
Caltech-101, Flowers-102 and Food-101, a Tiny ImageNet class-folder tree). Image ``i`` is
``picture(i)``: its top half one colour that tells the images apart, its bottom half black, so a
read that swaps axes, channels or images fails. Nothing is downloaded: ``download=False``.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from benchsuite.api import DataSpec, PluginError
from benchsuite.results.cube import open_cube
from benchsuite.testing import check_dataset
from benchsuite_plugins.datasets.torchvision_sets import TorchvisionParams, read
from tests.conftest import stored_keys
from tests.core.test_cli import benchsuite, flat

# Distinct colours for up to 8 images, with a step of 30 between values so JPEG's error (a few
# levels on a flat 8x8 block) cannot make one image look like another.
COLOURS = [(30 * i + 15, 240 - 30 * i, (90 * i) % 240 + 10) for i in range(8)]
JPEG_TOLERANCE = 4 / 255


def picture(index: int, side: int, grey: bool = False) -> np.ndarray:
    """[side, side, 3] (or [side, side] when ``grey``) uint8: the top half a colour of COLOURS, the bottom half black."""
    image = np.zeros((side, side, 3), np.uint8)
    image[: side // 2] = COLOURS[index % len(COLOURS)]  # distinct for up to 8 images, enough for the checks that read them
    return image[..., 0] if grey else image


def expected(index: int, side: int, grey: bool = False) -> torch.Tensor:
    """``picture(index)`` as benchsuite holds it: [C, H, W] float in [0, 1]."""
    values = torch.from_numpy(picture(index, side, grey)).float() / 255
    return values[None] if grey else values.permute(2, 0, 1)


def save_jpeg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=100, subsampling=0)  # 4:4:4: no colour bleeding across the halves


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accept files whatever their MD5: torchvision checks CIFAR's, SVHN's and Flowers-102's against the published
    files, which a fixture cannot match. (test_a_copy_with_other_content_is_refused shows the check is on otherwise.)"""

    def exists(fpath: str, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    for module in ("cifar", "svhn", "flowers102"):
        monkeypatch.setattr(f"torchvision.datasets.{module}.check_integrity", exists)


def write_cifar(root: Path, labels_by_file: dict[str, list[int]]) -> None:
    """cifar-10-batches-py/: each batch a pickled dict of data [N, 3072] (R, G, B planes, row-major) and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    first = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = labels_by_file.get(name, [])
        data = np.zeros((len(labels), 3072), np.uint8)
        for i in range(len(labels)):
            data[i] = picture(first + i, 32).transpose(2, 0, 1).reshape(-1)
        first += len(labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)


def write_idx(folder: Path, prefix: str, labels: list[int], first: int) -> None:
    """MNIST's idx files as torchvision reads them (gunzipped): big-endian magic, sizes, then uint8 values."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.stack([picture(first + i, 28, grey=True) for i in range(len(labels))])
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, len(labels), 28, 28) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels)) + bytes(labels))


def spec(root: Path, size: int) -> DataSpec:
    return DataSpec(size=size, data_root=root)


def check(read_set, indices: list[int], labels: list[int], side: int, *, grey: bool = False, tolerance: float = 1e-6) -> None:
    """The set holds picture(i) for i in ``indices``, in that order, with ``labels``."""
    assert read_set.labels.tolist() == labels
    assert read_set.images.shape == (len(indices), 1 if grey else 3, side, side)
    for image, index in zip(read_set.images, indices, strict=True):
        torch.testing.assert_close(image, expected(index, side, grey), atol=tolerance, rtol=0)


def test_cifar10_reads_the_pickled_batches(tmp_path: Path, no_md5: None) -> None:
    write_cifar(tmp_path, {"data_batch_1": [3, 5], "data_batch_2": [1], "test_batch": [9, 0]})
    train = read(TorchvisionParams(name="CIFAR10"), spec(tmp_path, 32))
    check(train, [2, 0, 1], [1, 3, 5], 32)  # one image of each class in turn; class order breaks the tie
    assert train.classes[3] == "cat"
    check(read(TorchvisionParams(name="CIFAR10", split="test"), spec(tmp_path, 32)), [4, 3], [0, 9], 32)


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_mnist_and_fashion_mnist_read_the_idx_files(tmp_path: Path, name: str) -> None:
    write_idx(tmp_path / "data" / name / "raw", "train", [7, 2, 7], first=0)
    write_idx(tmp_path / "data" / name / "raw", "t10k", [4], first=3)
    train = read(TorchvisionParams(name=name, root="data"), spec(tmp_path, 28))
    check(train, [1, 0, 2], [2, 7, 7], 28, grey=True)
    check(read(TorchvisionParams(name=name, root="data", split="test"), spec(tmp_path, 28)), [3], [4], 28, grey=True)
    assert train.classes[7] == ("7 - seven" if name == "MNIST" else "Sneaker")


def test_svhn_reads_the_mat_file_and_its_label_10_is_the_digit_0(tmp_path: Path, no_md5: None) -> None:
    images = np.stack([picture(i, 32) for i in range(3)], axis=-1)  # [32, 32, 3, N], as the .mat holds them
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": images, "y": np.array([[10], [3], [10]], np.uint8)})
    check(read(TorchvisionParams(name="SVHN", split="test"), spec(tmp_path, 32)), [0, 1, 2], [0, 3, 0], 32)


def test_eurosat_reads_its_class_folders(tmp_path: Path) -> None:
    for index, (name, label) in enumerate([("Forest", "Forest_1"), ("River", "River_1"), ("Forest", "Forest_2")]):
        save_jpeg(tmp_path / "eurosat" / "2750" / name / f"{label}.jpg", picture(index, 64))
    eurosat = read(TorchvisionParams(name="EuroSAT"), spec(tmp_path, 64))
    assert eurosat.classes == ("Forest", "River")
    check(eurosat, [0, 1, 2], [0, 1, 0], 64, tolerance=JPEG_TOLERANCE)


def test_caltech101_reads_its_categories_without_the_background_class(tmp_path: Path) -> None:
    objects = tmp_path / "caltech101" / "101_ObjectCategories"
    save_jpeg(objects / "BACKGROUND_Google" / "image_0001.jpg", picture(7, 32))
    save_jpeg(objects / "accordion" / "image_0001.jpg", picture(0, 32))
    save_jpeg(objects / "accordion" / "image_0002.jpg", picture(1, 32))
    # Some Caltech-101 images are greyscale; rgb repeats their one channel.
    save_jpeg(objects / "yin_yang" / "image_0001.jpg", picture(2, 32)[..., 0])
    caltech = read(TorchvisionParams(name="Caltech101"), spec(tmp_path, 32))
    assert caltech.classes == ("accordion", "yin_yang")
    assert caltech.labels.tolist() == [0, 1, 0]
    torch.testing.assert_close(caltech.images[1], expected(2, 32)[:1].expand(3, -1, -1), atol=JPEG_TOLERANCE, rtol=0)
    torch.testing.assert_close(caltech.images[2], expected(1, 32), atol=JPEG_TOLERANCE, rtol=0)


def test_flowers102_reads_the_split_and_label_files(tmp_path: Path, no_md5: None) -> None:
    folder = tmp_path / "flowers-102"
    for index in range(5):
        save_jpeg(folder / "jpg" / f"image_{index + 1:05d}.jpg", picture(index, 32))
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array([[1, 2, 2, 102, 1]])})  # 1-based, per image id
    scipy.io.savemat(folder / "setid.mat", {"trnid": np.array([[4, 2]]), "valid": np.array([[5, 1]]), "tstid": np.array([[3]])})
    train = read(TorchvisionParams(name="Flowers102"), spec(tmp_path, 32))
    check(train, [1, 3], [1, 101], 32, tolerance=JPEG_TOLERANCE)
    assert train.classes[101] == "blackberry lily"
    val = read(TorchvisionParams(name="Flowers102", split="val"), spec(tmp_path, 32))
    check(val, [4, 0], [0, 0], 32, tolerance=JPEG_TOLERANCE)


def test_food101_reads_the_meta_json(tmp_path: Path) -> None:
    folder = tmp_path / "food-101"
    for index, name in enumerate(["apple_pie/1", "apple_pie/2", "waffles/3"]):
        save_jpeg(folder / "images" / f"{name}.jpg", picture(index, 32))
    (folder / "meta").mkdir()
    (folder / "meta" / "train.json").write_text(json.dumps({"apple_pie": ["apple_pie/2"], "waffles": ["waffles/3"]}))
    (folder / "meta" / "test.json").write_text(json.dumps({"apple_pie": ["apple_pie/1"], "waffles": []}))
    train = read(TorchvisionParams(name="Food101"), spec(tmp_path, 32))
    assert train.classes == ("apple_pie", "waffles")
    check(train, [1, 2], [0, 1], 32, tolerance=JPEG_TOLERANCE)
    check(read(TorchvisionParams(name="Food101", split="test"), spec(tmp_path, 32)), [0], [0], 32, tolerance=JPEG_TOLERANCE)


def test_image_folder_reads_tiny_imagenets_train_tree(tmp_path: Path) -> None:
    """Tiny ImageNet's train/<wnid>/images/<wnid>_<i>.JPEG beside <wnid>_boxes.txt: the images at any depth, the text skipped."""
    for index, (wnid, number) in enumerate([("n01443537", 0), ("n01443537", 1), ("n01629819", 0)]):
        save_jpeg(tmp_path / "tiny-imagenet-200" / "train" / wnid / "images" / f"{wnid}_{number}.JPEG", picture(index, 64))
        (tmp_path / "tiny-imagenet-200" / "train" / wnid / f"{wnid}_boxes.txt").write_text("boxes\n")
    tiny = read(TorchvisionParams(name="ImageFolder", root="tiny-imagenet-200/train"), spec(tmp_path, 64))
    assert tiny.classes == ("n01443537", "n01629819")
    check(tiny, [0, 2, 1], [0, 1, 0], 64, tolerance=JPEG_TOLERANCE)


def test_images_are_resized_and_converted(tmp_path: Path) -> None:
    for index in range(2):
        save_jpeg(tmp_path / "dogs" / "n02085620-Chihuahua" / f"{index}.jpg", picture(index, 64))
    grey = read(TorchvisionParams(name="ImageFolder", root="dogs", channels="grey"), spec(tmp_path, 16))
    assert grey.images.shape == (2, 1, 16, 16)
    luma = 0.299 * COLOURS[1][0] + 0.587 * COLOURS[1][1] + 0.114 * COLOURS[1][2]
    assert abs(float(grey.images[1, 0, 2, 8]) - luma / 255) < JPEG_TOLERANCE
    assert float(grey.images[1, 0, 13, 8]) < JPEG_TOLERANCE


def test_classes_and_limit_choose_the_images(tmp_path: Path) -> None:
    write_idx(tmp_path / "MNIST" / "raw", "train", [1, 1, 1, 2, 3, 3], first=0)
    write_idx(tmp_path / "MNIST" / "raw", "t10k", [0], first=6)
    s = spec(tmp_path, 28)
    # In turn from each class: the first 1, 2 and 3, then the second 1 and 3, then the third 1.
    assert read(TorchvisionParams(name="MNIST", limit=4), s).labels.tolist() == [1, 2, 3, 1]
    kept = read(TorchvisionParams(name="MNIST", classes=["3 - three", "1 - one"], limit=3), s)
    check(kept, [0, 4, 1], [1, 3, 1], 28, grey=True)
    with pytest.raises(PluginError, match=r"MNIST \(train\) in .* has no class 'seven'; its classes are 0 - zero, 1 - one"):
        read(TorchvisionParams(name="MNIST", classes=["seven"]), s)
    with pytest.raises(PluginError, match="has no images of the classes 9 - nine"):
        read(TorchvisionParams(name="MNIST", classes=["9 - nine"]), s)


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("CIFAR10", "cifar-10-batches-py/ holding data_batch_1"),
        ("MNIST", "MNIST/raw/ holding train-images-idx3-ubyte"),
        ("SVHN", "train_32x32.mat"),
        ("EuroSAT", "eurosat/2750/<class>/<image>.jpg"),
        ("Caltech101", "caltech101/101_ObjectCategories/<class>/image_0001.jpg"),
        ("Flowers102", "flowers-102/jpg/image_00001.jpg"),
        ("Food101", "food-101/images/<class>/<id>.jpg"),
    ],
)
def test_a_missing_dataset_says_where_to_put_which_files(tmp_path: Path, name: str, layout: str) -> None:
    with pytest.raises(PluginError) as caught:
        read(TorchvisionParams(name=name), spec(tmp_path, 32))
    message = str(caught.value)
    assert f"cannot read {name}" in message and f"Expected under {tmp_path}: {layout}" in message
    assert "never downloads" in message and "download=True" not in message
    # Caltech101 makes its (empty) folder whatever happens; no file may appear, let alone a download.
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


def test_a_missing_class_folder_tree_says_so(tmp_path: Path) -> None:
    (tmp_path / "dogs").mkdir()
    with pytest.raises(
        PluginError, match=r"cannot read ImageFolder in .*dogs: Couldn't find any class folder.*one folder per class"
    ):
        read(TorchvisionParams(name="ImageFolder", root="dogs"), spec(tmp_path, 32))


def test_a_copy_with_other_content_is_refused(tmp_path: Path) -> None:
    """Without the no_md5 fixture torchvision checks CIFAR's files against the published MD5s."""
    write_cifar(tmp_path, {"data_batch_1": [3]})
    with pytest.raises(PluginError, match=r"CIFAR10 .* its files are missing or damaged"):
        read(TorchvisionParams(name="CIFAR10"), spec(tmp_path, 32))


def test_params_refuse_a_split_the_dataset_lacks_and_image_folder_without_root() -> None:
    with pytest.raises(ValueError, match="SVHN has the splits train, test, extra, not 'val'"):
        TorchvisionParams(name="SVHN", split="val")
    with pytest.raises(ValueError, match=r"EuroSAT has no splits \(remove split\), not 'train'"):
        TorchvisionParams(name="EuroSAT", split="train")
    with pytest.raises(ValueError, match="ImageFolder needs root"):
        TorchvisionParams(name="ImageFolder")


def test_gzip_is_not_needed_for_mnist(tmp_path: Path) -> None:
    """torchvision reads MNIST's idx files unpacked; the .gz files alone are not found (the message says gunzipped)."""
    write_idx(tmp_path / "MNIST" / "raw", "train", [1], first=0)
    write_idx(tmp_path / "MNIST" / "raw", "t10k", [1], first=1)
    for path in (tmp_path / "MNIST" / "raw").iterdir():
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    with pytest.raises(PluginError, match="gunzipped"):
        read(TorchvisionParams(name="MNIST"), spec(tmp_path, 28))


MASKLESS = """\
name: maskless
data: {{size: 16, eval_images: 6, examples: 2}}
datasets:
  digits: {{plugin: torchvision, params: {{name: MNIST}}}}
  shapes: {{plugin: symmetric_shapes, params: {{k: 4, n_images: 12}}}}
theta: [0, 90]
seeds: [0]
methods: {{simclr: {{plugin: simclr, params: {{epochs: 1, batch_size: 8}}}}}}
encoders: {{cnn: {{plugin: small_cnn, params: {{width: 4}}}}}}
saliency: {{plugin: vanilla_grad}}
metrics: [{metrics}]
"""


def maskless_suite(tmp_path: Path, metrics: str) -> None:
    """A suite on an MNIST fixture (16 training images) beside a dataset with masks, run from tmp_path as the data root."""
    write_idx(tmp_path / "MNIST" / "raw", "train", [i % 10 for i in range(16)], first=0)
    write_idx(tmp_path / "MNIST" / "raw", "t10k", [0], first=0)
    (tmp_path / "maskless.yaml").write_text(MASKLESS.format(metrics=metrics))


def test_the_set_has_no_masks_and_passes_the_dataset_contract(tmp_path: Path) -> None:
    write_idx(tmp_path / "MNIST" / "raw", "train", [3, 1, 4], first=0)
    write_idx(tmp_path / "MNIST" / "raw", "t10k", [1], first=3)
    built = check_dataset("torchvision", {"name": "MNIST"}, size=16, data_root=tmp_path)
    assert built.masks is None and built.images.shape == (3, 1, 16, 16)


def test_a_metric_that_reads_masks_is_refused_for_a_dataset_without_them(tmp_path: Path) -> None:
    maskless_suite(tmp_path, "pair_probe, dice, auroc")
    for command in (["validate", "maskless.yaml"], ["validate", "maskless.yaml", "--data"], ["run", "maskless.yaml"]):
        done = benchsuite(*command, "--no-progress", cwd=tmp_path)
        message = flat(done.stderr)
        assert done.returncode == 2, done.stderr
        assert (
            "metrics 'dice' (dice) and 'auroc' (auroc) read masks, but dataset 'digits' (plugin 'torchvision') has none"
            in message
        )
        assert "pair_probe" in message and "Traceback" not in done.stderr
    assert not stored_keys(tmp_path / "runs" / "maskless")


def test_validate_refuses_a_mask_metric_from_what_the_plugin_declares_without_reading_the_data(tmp_path: Path) -> None:
    (tmp_path / "maskless.yaml").write_text(MASKLESS.format(metrics="dice"))  # no MNIST files under the data root
    done = benchsuite("validate", "maskless.yaml", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "metric 'dice' (dice) reads masks, but dataset 'digits' (plugin 'torchvision') has none" in flat(done.stderr)


def test_a_run_with_mask_free_metrics_completes_on_a_dataset_without_masks(tmp_path: Path) -> None:
    metrics = "pair_probe, final_loss, heldout_infonce, embedding_norm, norm_ood_auroc, embedding_std, effective_rank"
    maskless_suite(tmp_path, metrics)
    done = benchsuite("run", "maskless.yaml", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cube = open_cube(tmp_path / "runs" / "maskless")
    for name in ("pair_probe", "final_loss", "norm_ood_auroc", "effective_rank"):
        assert np.isfinite(cube[name].sel(dataset="digits").values).all(), name
    assert np.isfinite(cube["embedding_norm"].sel(dataset="digits").values).all()
    assert not cube["example_mask"].sel(dataset="digits").values.any(), "a dataset without masks has no outline to draw"
