"""The dataset contract: what the suite asks of a dataset (:class:`DataSpec`) and what it returns (:class:`ImageMaskSet`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from benchsuite.api.errors import PluginError


@dataclass(frozen=True)
class DataSpec:
    """What the suite asks of every dataset: square images of ``size`` pixels.

    ``data_root`` is where users keep datasets on disk (``--data-root`` or the environment
    variable ``BENCHSUITE_DATA_ROOT``, else the working directory); a plugin resolves a relative
    folder parameter against it with :meth:`resolve`.
    """

    size: int
    data_root: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        # Made absolute once, here: a relative root resolved again by each plugin (or against
        # another working directory in a worker) would name another folder.
        object.__setattr__(self, "data_root", Path(self.data_root).expanduser().resolve())

    def resolve(self, folder: str | Path) -> Path:
        """``folder`` as an absolute path: relative folders are taken under ``data_root``."""
        path = Path(folder).expanduser()
        return path if path.is_absolute() else self.data_root / path


@dataclass(frozen=True)
class ImageMaskSet:
    """A dataset as tensors: ``images`` float [N, C, H, W] scaled to [0, 1], ``masks`` bool [N, H, W] or None.

    The mask marks the foreground that saliency is compared with; a dataset without masks (a
    classification set) leaves them None, and only metrics that read no masks score it
    (docs/design.md). Datasets return all their images; the core draws the fixed
    train/evaluation split. This is the dataset contract, checked here when the set is made, so
    a dataset that breaks it fails where it is built: at least one image, finite pixels in
    [0, 1], and, if there are masks, one per image of the same size.
    """

    images: Tensor
    masks: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise PluginError(f"images must have shape [N, C, H, W], got {tuple(self.images.shape)}")
        n, _, h, w = self.images.shape
        if self.masks is not None:
            if self.masks.ndim != 3 or self.masks.dtype != torch.bool:
                raise PluginError(f"masks must be a bool tensor [N, H, W], got {self.masks.dtype} {tuple(self.masks.shape)}")
            if tuple(self.masks.shape) != (n, h, w):
                raise PluginError(f"masks {tuple(self.masks.shape)} do not match images {tuple(self.images.shape)}")
        if n == 0:
            raise PluginError("the dataset has no images")
        if not self.images.is_floating_point():
            raise PluginError(f"images must be floating point, got {self.images.dtype}")
        finite = torch.isfinite(self.images).flatten(1).all(dim=1)
        if not finite.all():
            raise PluginError(f"{int((~finite).sum())} images hold NaN or infinite pixels; fix or drop them")
        low, high = float(self.images.min()), float(self.images.max())
        if low < 0 or high > 1:
            raise PluginError(f"images must be scaled to [0, 1], got values in [{low:g}, {high:g}]")

    def check_size(self, spec: DataSpec) -> None:
        """Raise :class:`PluginError` unless the images are ``spec.size`` pixels square, as the suite asks."""
        if tuple(self.images.shape[-2:]) != (spec.size, spec.size):
            raise PluginError(f"images are {tuple(self.images.shape[-2:])} pixels; the suite asks for {spec.size}x{spec.size}")

    def __len__(self) -> int:
        return self.images.shape[0]
