"""Datasets read from image and mask files on disk, paired by file name.

- ``image_mask_folder``: any folder (or glob pattern) of images with one of masks.
- ``lung_masks``: chest X-rays with lung masks, in the Montgomery, Shenzhen or a paired layout.
- ``kvasir_seg``: the Kvasir-SEG polyp images with their (JPEG) masks.

All three share one core: list the files, pair each image with its mask(s) by file name,
read them (PNG, JPEG, TIFF with Pillow; NIfTI with nibabel; DICOM with pydicom when it is
installed), and resize both to the suite's size. Rules common to all of them:

- Intensities: 8-bit images are divided by 255; anything else (16-bit PNG/TIFF, float TIFF,
  NIfTI, DICOM) has no fixed range (12-bit data in 16-bit files, Hounsfield units, MRI
  units), so each image is min-max scaled to [0, 1].
- Masks: a multi-channel mask is reduced to its brightest channel, binarised at its own
  resolution, resized like the image and thresholded again at half coverage, which keeps the
  boundary where the mask drew it whatever the scale factor.
- Images are stretched to a square, not padded: padding would add axis-aligned edges to
  every image, and the gradient-orientation histogram of the shortcut analysis would see them.
- A volume (3D NIfTI, multi-frame DICOM, multi-page TIFF) needs ``slice_index``; NIfTI is
  reoriented to RAS and shown axially as ``icbm152`` shows it: anterior up, the subject's
  right on the right.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from benchsuite.api import DatasetFactory, DataSpec, ImageMaskSet, Params, PluginError, Registry, hookimpl
from benchsuite_plugins.datasets._readers import Channels, image_tensor, read_slice

_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm")
# How many offending file names an error message lists before "and N more".
_SHOWN = 5

_LIMIT = Field(None, ge=1, description="Use at most this many images, the first in file-name order; default: all.")


class FolderParams(Params):
    """Parameters of ``image_mask_folder``."""

    images: str = Field(
        min_length=1,
        description="Folder of images under the data root (or absolute), or a glob pattern such as 'imgs/*.png'.",
    )
    masks: str = Field(
        min_length=1,
        description="Folder or glob pattern of masks. A file matched by both patterns counts as a mask, "
        "so one folder can hold both.",
    )
    mask_suffix: str = Field(
        "", description="A mask is named as its image plus this before the extension: '_mask' pairs x.png with x_mask.png."
    )
    channels: Channels = Field("grey", description="'grey' gives 1 channel (luma of colour images), 'rgb' gives 3.")
    mask_threshold: float = Field(
        0.5, ge=0, lt=1, description="Foreground where a mask exceeds this fraction of its own maximum; 0: any non-zero label."
    )
    slice_index: int | None = Field(
        None, ge=0, description="Which slice of volumes to use: axial slice of 3D NIfTI, frame of DICOM, page of TIFF."
    )
    limit: int | None = _LIMIT


class LungParams(Params):
    """Parameters of ``lung_masks``."""

    path: str = Field(min_length=1, description="Dataset root, under the data root or absolute.")
    layout: Literal["auto", "montgomery", "shenzhen", "paired"] = Field(
        "auto",
        description="montgomery: CXR_png/ + ManualMask/{leftMask,rightMask}/ (mask = union); shenzhen: CXR_png/ + "
        "mask/<name>_mask.png (images without a mask are skipped); paired: images/ + masks/; auto: whichever exists.",
    )
    limit: int | None = _LIMIT


class KvasirParams(Params):
    """Parameters of ``kvasir_seg``."""

    path: str = Field("Kvasir-SEG", min_length=1, description="Root with images/ and masks/, under the data root or absolute.")
    channels: Channels = Field("rgb", description="'rgb' gives 3 channels, 'grey' 1 (luma).")
    limit: int | None = _LIMIT


@dataclass(frozen=True)
class _Context:
    """Who is reading and what the files should look like: every error message names both."""

    dataset: str
    layout: str

    def error(self, problem: str) -> PluginError:
        return PluginError(f"{self.dataset}: {problem} Expected {self.layout}.")


@dataclass(frozen=True)
class _Files:
    """The supported files of one role (images, or one kind of mask), sorted, and where they were listed."""

    folder: Path
    paths: list[Path]

    def names(self, paths: Sequence[Path]) -> str:
        """The first few of ``paths`` relative to the folder, for an error message."""
        shown = ", ".join(str(p.relative_to(self.folder)) for p in paths[:_SHOWN])
        return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


@dataclass(frozen=True)
class _MaskRule:
    """Foreground where the mask exceeds ``level``, or ``level`` times its own maximum when ``relative``."""

    level: float
    relative: bool

    def apply(self, values: np.ndarray) -> np.ndarray:
        threshold = self.level * values.max() if self.relative else self.level
        return values > threshold


def _is_supported(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_EXTENSIONS)


def _list_files(spec: DataSpec, location: str, role: str, ctx: _Context) -> _Files:
    """The supported files in a folder, or matched by a glob pattern whose leading folders hold no wildcard."""
    parts = PurePath(location).parts
    split = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    folder = spec.resolve(Path(*parts[:split]))
    pattern = str(PurePath(*parts[split:])) if split < len(parts) else "*"
    if not folder.is_dir():
        raise ctx.error(f"the {role} folder {folder} does not exist.")
    matched = sorted(p for p in folder.glob(pattern) if p.is_file())
    files = _Files(folder, [p for p in matched if _is_supported(p)])
    if not files.paths:
        others = f"; the {len(matched)} files it has are of other types, e.g. {files.names(matched)}" if matched else ""
        raise ctx.error(f"no {role} files (PNG, JPEG, TIFF, NIfTI or DICOM .dcm) match '{pattern}' in {folder}{others}.")
    return files


def _key(path: Path) -> str:
    """The file name without its extension, '.nii.gz' counting as one."""
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def _by_key(files: _Files, role: str, ctx: _Context) -> dict[str, Path]:
    keyed: dict[str, Path] = {}
    for path in files.paths:
        if (other := keyed.setdefault(_key(path), path)) != path:
            raise ctx.error(
                f"two {role} files in {files.folder} have the same name apart from the extension, "
                f"{files.names([other, path])}, so pairing them by name is ambiguous; remove one."
            )
    return keyed


def _pair(
    images: _Files, masks: _Files, suffix: str, ctx: _Context, *, unmasked: Literal["error", "skip"] = "error"
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Pair images with masks named ``<image name><suffix>.<any extension>``.

    Returns the pairs in image order and the images left without a mask, which is an error
    unless ``unmasked="skip"``. A mask without an image is always an error: it means the
    naming rule is wrong, and skipping it would hide that.
    """
    image_keys = _by_key(images, "image", ctx)
    mask_keys = _by_key(masks, "mask", ctx)

    def owner(key: str) -> str | None:
        # key[:len - 0] is the whole key, so the empty suffix needs no special case.
        return key[: len(key) - len(suffix)] if key.endswith(suffix) and key != suffix else None

    by_image = {owner(k): p for k, p in mask_keys.items() if owner(k) in image_keys}
    orphan_masks = [p for k, p in mask_keys.items() if owner(k) not in image_keys]
    unpaired = [p for k, p in image_keys.items() if k not in by_image]
    if orphan_masks or (unpaired and unmasked == "error"):
        rule = f"its image's name plus '{suffix}' (x.png pairs with x{suffix}.png)" if suffix else "the same name as its image"
        problems = []
        if unpaired and unmasked == "error":
            problems.append(f"images without a mask ({len(unpaired)} of {len(image_keys)}): {images.names(unpaired)}")
        if orphan_masks:
            problems.append(f"masks without an image ({len(orphan_masks)} of {len(mask_keys)}): {masks.names(orphan_masks)}")
        raise ctx.error(
            f"{'; '.join(problems)}. Images in {images.folder} are paired with masks in {masks.folder} by file name, "
            f"the extension aside: a mask has {rule}."
        )
    return [(p, by_image[k]) for k, p in image_keys.items() if k in by_image], unpaired


def _read(path: Path, slice_index: int | None, ctx: _Context, *, mask: bool) -> np.ndarray:
    """A 2D slice of ``path`` as [H, W] or [H, W, channels], in the file's own value range."""
    try:
        return read_slice(path, slice_index, mask=mask)
    # The three readers raise a zoo of types for a truncated or foreign file; all mean the same.
    except Exception as error:
        raise ctx.error(f"cannot use {path}: {error}.") from error


def _load(
    pairs: Sequence[tuple[Path, Sequence[Path]]],
    spec: DataSpec,
    ctx: _Context,
    *,
    channels: Channels,
    rule: _MaskRule,
    slice_index: int | None = None,
) -> ImageMaskSet:
    """Read each image with the union of its masks and resize both to ``spec.size``."""
    images, masks = [], []
    for image_path, mask_paths in pairs:
        image = image_tensor(_read(image_path, slice_index, ctx, mask=False), channels)
        union = torch.zeros(image.shape[1:], dtype=torch.bool)
        for mask_path in mask_paths:
            values = _read(mask_path, slice_index, ctx, mask=True)
            if values.shape[:2] != tuple(image.shape[1:]):
                raise ctx.error(
                    f"image {image_path} is {image.shape[2]}x{image.shape[1]} pixels but its mask {mask_path} is "
                    f"{values.shape[1]}x{values.shape[0]}; an image and its mask must have the same size."
                )
            union |= torch.from_numpy(rule.apply(values.max(axis=2) if values.ndim == 3 else values))
        # One resize for image and mask: the mask's coverage is thresholded at one half below.
        stacked = torch.cat([image, union[None].float()])[None]
        resized = F.interpolate(stacked, size=(spec.size, spec.size), mode="bilinear", antialias=True, align_corners=False)[0]
        images.append(resized[:-1].clamp(0, 1))
        masks.append(resized[-1] > 0.5)
    return ImageMaskSet(images=torch.stack(images), masks=torch.stack(masks))


def image_mask_folder(params: FolderParams, spec: DataSpec) -> ImageMaskSet:
    """Images with masks from any two folders or glob patterns, paired by file name."""
    ctx = _Context(
        "image_mask_folder",
        f"images in '{params.images}' and masks in '{params.masks}', folders or glob patterns under the data root "
        f"{spec.data_root}",
    )
    listed = _list_files(spec, params.images, "image", ctx)
    masks = _list_files(spec, params.masks, "mask", ctx)
    taken = set(masks.paths)
    images = _Files(listed.folder, [p for p in listed.paths if p not in taken])
    if not images.paths:
        raise ctx.error(f"every file of '{params.images}' also matches '{params.masks}': all count as masks, no image is left.")
    pairs, _ = _pair(images, masks, params.mask_suffix, ctx)
    rule = _MaskRule(params.mask_threshold, relative=True)
    singles = [(image, (mask,)) for image, mask in pairs[: params.limit]]
    return _load(singles, spec, ctx, channels=params.channels, rule=rule, slice_index=params.slice_index)


# Each lung layout's folders under the root, and the sentence that describes it in errors.
_LUNG_LAYOUTS = {
    "montgomery": (
        ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask"),
        "the Montgomery layout: CXR_png/*.png with masks of the same names in ManualMask/leftMask/ and rightMask/",
    ),
    "shenzhen": (("CXR_png", "mask"), "the Shenzhen layout: CXR_png/*.png with masks mask/<image name>_mask.png"),
    "paired": (("images", "masks"), "the paired layout: images/ and masks/ holding files of the same names"),
}


def _lung_layout(root: Path, layout: str) -> str:
    if layout != "auto":
        return layout
    every = "; ".join(description for _, description in _LUNG_LAYOUTS.values())
    if not root.is_dir():
        raise PluginError(f"lung_masks: the dataset folder {root} does not exist. Expected one of {every}.")
    found = [name for name, (folders, _) in _LUNG_LAYOUTS.items() if all((root / f).is_dir() for f in folders)]
    if len(found) != 1:
        present = ", ".join(sorted(p.name + "/" for p in root.iterdir() if p.is_dir())) or "none"
        problem = f"matches several layouts ({', '.join(found)})" if found else f"matches no layout (its folders: {present})"
        raise PluginError(f"lung_masks: {root} {problem}. Set layout: montgomery, shenzhen or paired. Expected one of {every}.")
    return found[0]


def lung_masks(params: LungParams, spec: DataSpec) -> ImageMaskSet:
    """Chest X-rays with lung masks (Montgomery, Shenzhen, or paired folders); grey images."""
    root = spec.resolve(params.path)
    layout = _lung_layout(root, params.layout)
    folders, description = _LUNG_LAYOUTS[layout]
    ctx = _Context("lung_masks", f"{description}, under {root}")
    images = _list_files(spec, str(root / folders[0]), "image", ctx)
    mask_sets = [_list_files(spec, str(root / folder), "mask", ctx) for folder in folders[1:]]
    if layout == "shenzhen":
        # The public Shenzhen masks cover only part of the 662 images: skipping the rest is the
        # documented layout, not a naming mistake, but the user should know how many it left out.
        pairs, skipped = _pair(images, mask_sets[0], "_mask", ctx, unmasked="skip")
        if not pairs:
            raise ctx.error(f"none of the {len(images.paths)} images in {images.folder} has a mask in {mask_sets[0].folder}.")
        if skipped:
            warnings.warn(
                f"lung_masks: {len(skipped)} of {len(images.paths)} Shenzhen images in {images.folder} have no mask "
                f"<name>_mask.png in {mask_sets[0].folder} and are skipped, e.g. {images.names(skipped)}.",
                stacklevel=2,
            )
        grouped = [(image, (mask,)) for image, mask in pairs]
    else:
        # Montgomery has a left and a right mask per image, both required; the mask is their union.
        per_source = [dict(_pair(images, masks, "", ctx)[0]) for masks in mask_sets]
        grouped = [(image, tuple(source[image] for source in per_source)) for image in images.paths]
    # Lung masks are 0/255 in the public sets; half the maximum also serves 0/1 masks.
    return _load(grouped[: params.limit], spec, ctx, channels="grey", rule=_MaskRule(0.5, relative=True))


def kvasir_seg(params: KvasirParams, spec: DataSpec) -> ImageMaskSet:
    """Kvasir-SEG polyps: images/ and masks/ of the same names; RGB by default."""
    root = spec.resolve(params.path)
    ctx = _Context("kvasir_seg", f"the Kvasir-SEG layout under {root}: images/*.jpg with masks/*.jpg of the same names")
    images = _list_files(spec, str(root / "images"), "image", ctx)
    masks = _list_files(spec, str(root / "masks"), "mask", ctx)
    pairs, _ = _pair(images, masks, "", ctx)
    # The masks are JPEGs, so their 0/255 values come back blurred and noisy: a fixed level of
    # 128 on the brightest channel, at full resolution before resizing, is the usual binarisation.
    rule = _MaskRule(127.5, relative=False)
    return _load([(i, (m,)) for i, m in pairs[: params.limit]], spec, ctx, channels=params.channels, rule=rule)


@hookimpl
def benchsuite_register_datasets(registry: Registry[DatasetFactory]) -> None:
    """Register ``image_mask_folder``, ``lung_masks`` and ``kvasir_seg``."""
    registry.add(
        "image_mask_folder",
        image_mask_folder,
        params=FolderParams,
        description="Any folder of images with a folder of masks, paired by file name (PNG, JPEG, TIFF, NIfTI, DICOM).",
    )
    registry.add(
        "lung_masks",
        lung_masks,
        params=LungParams,
        description="Chest X-rays with lung masks: Montgomery (left + right), Shenzhen or paired folders; grey.",
    )
    registry.add(
        "kvasir_seg",
        kvasir_seg,
        params=KvasirParams,
        description="Kvasir-SEG colonoscopy polyps with their masks (binarised at 128); RGB.",
    )
