"""The file readers of ``folders.py``: one 2D slice of a PNG, JPEG, TIFF, NIfTI or DICOM file, and
its pixels as an image tensor, by the intensity and orientation rules of that module's docstring.

A helper module, not an entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import torch
from PIL import Image
from torch import Tensor

# ITU-R 601-2 luma weights, as Pillow's "L" conversion uses.
_LUMA = (0.299, 0.587, 0.114)

Channels = Literal["grey", "rgb"]


def read_slice(path: Path, slice_index: int | None, *, mask: bool) -> np.ndarray:
    """A 2D slice of ``path`` as [H, W] or [H, W, channels], in the file's own value range.

    ``mask`` reads label values as they are (palette indices, MONOCHROME1 not inverted).
    """
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _read_nifti(path, slice_index)
    if name.endswith(".dcm"):
        return _read_dicom(path, slice_index, mask=mask)
    return _read_pillow(path, slice_index, mask=mask)


def _slice_position(depth: int, slice_index: int | None, unit: str) -> int:
    if slice_index is None:
        if depth > 1:
            raise ValueError(f"it holds {depth} {unit}; set slice_index to one of 0..{depth - 1}")
        return 0
    if slice_index >= depth:
        raise ValueError(f"slice_index {slice_index} is out of range: it holds {depth} {unit} (0..{depth - 1})")
    return slice_index


def _read_nifti(path: Path, slice_index: int | None) -> np.ndarray:
    image = nib.load(path)
    data = image.get_fdata(dtype=np.float32)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise ValueError(f"its data has shape {data.shape}; only 2D images and 3D volumes are supported")
    data = data.reshape((*data.shape[:2], -1))
    ras = nib.orientations.apply_orientation(data, nib.orientations.io_orientation(image.affine))
    axial = ras[:, :, _slice_position(ras.shape[2], slice_index, "axial slices")]
    # Rows run along Y and columns along X; flipping Y puts anterior (high Y) at row 0.
    return np.ascontiguousarray(axial.T[::-1])


def _read_dicom(path: Path, slice_index: int | None, *, mask: bool) -> np.ndarray:
    try:
        import pydicom  # optional: only DICOM folders need it
    except ImportError:
        raise ValueError(
            'reading DICOM needs pydicom, which is not installed: pip install -e ".[dicom]" in the benchsuite checkout'
        ) from None
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    frames = pixels if int(dataset.get("NumberOfFrames", 1) or 1) > 1 else pixels[None]
    frame = frames[_slice_position(len(frames), slice_index, "frames")].astype(np.float32)
    # Images are min-max scaled later, so the linear rescale slope and intercept cannot matter,
    # but MONOCHROME1 stores dark as high and must be turned round. Mask values are labels.
    return -frame if dataset.get("PhotometricInterpretation") == "MONOCHROME1" and not mask else frame


def _read_pillow(path: Path, slice_index: int | None, *, mask: bool) -> np.ndarray:
    with Image.open(path) as image:
        image.seek(_slice_position(getattr(image, "n_frames", 1), slice_index, "pages"))
        # Palette indices are labels in a mask but colours in an image; other modes become one
        # grey or three colour channels, dropping alpha.
        if image.mode in ("L", "I", "F", "RGB") or image.mode.startswith("I;16") or (mask and image.mode == "P"):
            return np.asarray(image)
        return np.asarray(image.convert("L" if image.mode in ("1", "LA", "La") else "RGB"))


def image_tensor(values: np.ndarray, channels: Channels) -> Tensor:
    """[C, H, W] float32 in [0, 1] with 1 ('grey') or 3 ('rgb') channels."""
    pixels = values.astype(np.float32)
    if values.dtype == np.uint8:
        pixels /= 255
    else:
        low, high = pixels.min(), pixels.max()
        pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    image = torch.from_numpy(pixels)
    image = image[None] if image.ndim == 2 else image[..., :3].permute(2, 0, 1)
    if channels == "grey" and len(image) == 3:
        return torch.einsum("c,chw->hw", torch.tensor(_LUMA), image)[None]
    return image.expand(3, -1, -1) if channels == "rgb" and len(image) == 1 else image
