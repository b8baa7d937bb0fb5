"""Classification datasets read by torchvision from its own files under the data root; never downloaded.

``{plugin: torchvision, params: {name: CIFAR10}}`` builds torchvision's class of that name with
``root`` (under the data root; by default the data root itself) and ``download=False``, and
takes its images. ``name: ImageFolder`` reads any class-folder tree ``root/<class>/<image>``
(Tiny ImageNet's ``train/``, Stanford Dogs, PlantVillage, iNaturalist) by torchvision's own
rules. Each dataset's layout and source: docs/datasets.md.

These datasets have class labels but no masks, so the sets they give carry none (see
docs/design.md for what a suite may then measure). The labels choose the images: a class
subset, and a ``limit`` taken from the classes in turn, so that a few images still cover them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.datasets
from pydantic import Field, model_validator
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from benchsuite.api import DatasetFactory, DataSpec, ImageMaskSet, Params, PluginError, Registry, hookimpl

Name = Literal["CIFAR10", "MNIST", "FashionMNIST", "SVHN", "EuroSAT", "Caltech101", "Flowers102", "Food101", "ImageFolder"]
Channels = Literal["grey", "rgb"]
# How many class names an error message lists before "and N more".
_SHOWN = 12


def _train_flag(split: str | None) -> dict[str, Any]:
    return {"train": split == "train", "download": False}


def _split_name(split: str | None) -> dict[str, Any]:
    return {"split": split, "download": False}


def _no_split(split: str | None) -> dict[str, Any]:
    return {"download": False}


@dataclass(frozen=True)
class _Source:
    """How to build one of torchvision's classes, where its labels are, and what it expects on disk."""

    splits: tuple[str, ...]  # the values of `split`, the default first; () for a dataset without splits
    arguments: Callable[[str | None], dict[str, Any]]  # the class's keyword arguments besides root, for a split
    labels: str  # the attribute holding every image's class index
    classes: str | None  # the attribute holding the class names; None: the digits 0 to 9
    channels: Channels  # what the images are, the default of `channels`
    layout: str  # the files under root, for the error when they are missing; {split} is the split


_SOURCES: dict[str, _Source] = {
    "CIFAR10": _Source(
        ("train", "test"),
        _train_flag,
        "targets",
        "classes",
        "rgb",
        "cifar-10-batches-py/ holding data_batch_1 to data_batch_5, test_batch and batches.meta, unpacked from "
        "cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html); torchvision checks each file's MD5",
    ),
    "MNIST": _Source(
        ("train", "test"),
        _train_flag,
        "targets",
        "classes",
        "grey",
        "MNIST/raw/ holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte, the four .gz files of https://yann.lecun.com/exdb/mnist/ gunzipped",
    ),
    "FashionMNIST": _Source(
        ("train", "test"),
        _train_flag,
        "targets",
        "classes",
        "grey",
        "FashionMNIST/raw/ holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte, the four .gz files of https://github.com/zalandoresearch/fashion-mnist gunzipped",
    ),
    "SVHN": _Source(
        ("train", "test", "extra"),
        _split_name,
        "labels",
        None,
        "rgb",
        "{split}_32x32.mat, the cropped digits (format 2) of http://ufldl.stanford.edu/housenumbers/; torchvision checks its MD5",
    ),
    "EuroSAT": _Source(
        (),
        _no_split,
        "targets",
        "classes",
        "rgb",
        "eurosat/2750/<class>/<image>.jpg, the RGB EuroSAT.zip of https://github.com/phelber/EuroSAT unpacked as 2750/",
    ),
    "Caltech101": _Source(
        (),
        lambda split: {"target_type": "category", "download": False},
        "y",
        "categories",
        "rgb",
        "caltech101/101_ObjectCategories/<class>/image_0001.jpg and on, unpacked from 101_ObjectCategories.tar.gz "
        "(https://data.caltech.edu/records/mzrjq-6wc02)",
    ),
    "Flowers102": _Source(
        ("train", "val", "test"),
        _split_name,
        "_labels",
        "classes",
        "rgb",
        "flowers-102/jpg/image_00001.jpg and on (102flowers.tgz unpacked) with flowers-102/imagelabels.mat and "
        "flowers-102/setid.mat (https://www.robots.ox.ac.uk/~vgg/data/flowers/102/); torchvision checks the .mat files' MD5",
    ),
    "Food101": _Source(
        ("train", "test"),
        _split_name,
        "_labels",
        "classes",
        "rgb",
        "food-101/images/<class>/<id>.jpg with food-101/meta/train.json and test.json, unpacked from food-101.tar.gz "
        "(https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/)",
    ),
    "ImageFolder": _Source(
        (),
        lambda split: {},  # ImageFolder only reads what is there: it has nothing to download
        "targets",
        "classes",
        "rgb",
        "one folder per class holding its images, at any depth below it: <class>/<image>.jpg",
    ),
}


class TorchvisionParams(Params):
    """Parameters of ``torchvision``."""

    name: Name = Field(
        description="torchvision's dataset class; ImageFolder reads any tree root/<class>/<image> by torchvision's rules."
    )
    root: str = Field(
        "",
        description="The folder given to the class as root, under the data root or absolute; default: the data root "
        "itself. For ImageFolder (required): the folder holding the class folders.",
    )
    split: str | None = Field(
        None,
        description="train (the default) or test for CIFAR10, MNIST, FashionMNIST and Food101; train, test or extra for "
        "SVHN; train, val or test for Flowers102. EuroSAT, Caltech101 and ImageFolder have none.",
    )
    classes: list[str] | None = Field(
        None,
        min_length=1,
        description="Keep only these classes, by torchvision's names (CIFAR10's 'cat', MNIST's '7 - seven', SVHN's "
        "'0' to '9', ImageFolder's folder names); default: all.",
    )
    limit: int | None = Field(
        None,
        ge=1,
        description="Use at most this many images, taken from the classes in turn (the first image of every class, "
        "then the second, ...); default: all.",
    )
    channels: Channels | None = Field(
        None, description="'grey' gives 1 channel (luma), 'rgb' 3; default: grey for MNIST and FashionMNIST, rgb otherwise."
    )

    @model_validator(mode="after")
    def _split_exists(self) -> TorchvisionParams:
        splits = _SOURCES[self.name].splits
        if self.split is not None and self.split not in splits:
            held = f"the splits {', '.join(splits)}" if splits else "no splits (remove split)"
            raise ValueError(f"{self.name} has {held}, not '{self.split}'")
        if self.name == "ImageFolder" and not self.root:
            raise ValueError("ImageFolder needs root: the folder, under the data root, that holds one folder per class")
        return self


@dataclass(frozen=True)
class Labelled:
    """Images [N, C, size, size] in [0, 1], each one's class index [N], and the dataset's class names."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _chosen(labels: Tensor, classes: tuple[str, ...], params: TorchvisionParams, where: str) -> list[int]:
    """The indices of the images to use: of the wanted classes, taken from the classes in turn, at most ``limit``."""
    if params.classes is None:
        wanted = set(range(len(classes)))
    else:
        unknown = [name for name in params.classes if name not in classes]
        if unknown:
            raise PluginError(
                f"torchvision: {where} has no class {', '.join(map(repr, unknown))}; its classes are {_shown(classes)}."
            )
        wanted = {classes.index(name) for name in params.classes}
    kept = [i for i, label in enumerate(labels.tolist()) if label in wanted]
    if not kept:
        raise PluginError(f"torchvision: {where} has no images of the classes {_shown(params.classes or classes)}.")
    # Sorting by (rank within its class, class) deals the images out one class after another.
    seen: Counter[int] = Counter()
    ranked = []
    for index in kept:
        label = int(labels[index])
        ranked.append((seen[label], label, index))
        seen[label] += 1
    return [index for _, _, index in sorted(ranked)][: params.limit]


def read(params: TorchvisionParams, spec: DataSpec) -> Labelled:
    """The chosen images of the dataset, resized to ``spec.size`` square, with their labels."""
    source = _SOURCES[params.name]
    root = spec.resolve(params.root)
    split = params.split or (source.splits[0] if source.splits else None)
    where = f"{params.name}" + (f" ({split})" if split else "") + f" in {root}"
    try:
        dataset = getattr(torchvision.datasets, params.name)(str(root), **source.arguments(split))
    # torchvision says "not found or corrupted" with a RuntimeError that suggests download=True; any
    # other error (a missing folder, a class folder without images, a damaged file) says what it is.
    except Exception as error:
        problem = "its files are missing or damaged." if type(error) is RuntimeError else str(error)
        raise PluginError(
            f"torchvision: cannot read {where}: {problem} Expected under {root}: {source.layout.format(split=split)}. "
            f"benchsuite never downloads: put the files there, or set root (relative to the data root {spec.data_root})."
        ) from error
    classes = tuple(map(str, getattr(dataset, source.classes))) if source.classes else tuple(map(str, range(10)))
    labels = torch.as_tensor(np.asarray(getattr(dataset, source.labels)), dtype=torch.long)
    chosen = _chosen(labels, classes, params, where)
    mode = "L" if (params.channels or source.channels) == "grey" else "RGB"
    images = []
    for index in chosen:
        try:
            image, _ = dataset[index]
        except Exception as error:  # a truncated or foreign image file: the reader's own type
            raise PluginError(f"torchvision: cannot read image {index} of {where}: {error}") from error
        pixels = pil_to_tensor(image.convert(mode)).float()[None] / 255
        # Stretched to a square, not padded, as every dataset is (see folders.py).
        resized = F.interpolate(pixels, size=(spec.size, spec.size), mode="bilinear", antialias=True, align_corners=False)
        images.append(resized[0].clamp(0, 1))
    return Labelled(torch.stack(images), labels[chosen], classes)


def torchvision_dataset(params: TorchvisionParams, spec: DataSpec) -> ImageMaskSet:
    """The images of a torchvision dataset; it has no masks."""
    return ImageMaskSet(images=read(params, spec).images, masks=None)


torchvision_dataset.has_masks = False  # type: ignore[attr-defined]  # said before loading: `benchsuite validate` refuses mask metrics


@hookimpl
def benchsuite_register_datasets(registry: Registry[DatasetFactory]) -> None:
    """Register ``torchvision``."""
    registry.add(
        "torchvision",
        torchvision_dataset,
        params=TorchvisionParams,
        description="torchvision's CIFAR10, MNIST, FashionMNIST, SVHN, EuroSAT, Caltech101, Flowers102, Food101 or any "
        "ImageFolder, read from disk, never downloaded; no masks.",
    )
