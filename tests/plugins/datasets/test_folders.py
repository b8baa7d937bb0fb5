"""Datasets read from files: ``image_mask_folder``, ``lung_masks`` and ``kvasir_seg``.

Every fixture is a few 40x30 images written in tmp_path in the dataset's public layout, with a
known rectangle as the mask. At SIZE 20 the rectangle's rows 6:24 and columns 10:30 become
rows 4:16 and columns 5:15 exactly (scale factors 1.5 and 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from benchsuite.api import DataSpec, ImageMaskSet, PluginError
from benchsuite.engine.registry import default_registry
from benchsuite_plugins.datasets.folders import FolderParams, KvasirParams, LungParams, image_mask_folder, kvasir_seg, lung_masks

SIZE = 20
HEIGHT, WIDTH = 30, 40
RECT = np.s_[6:24, 10:30]


def expected(*regions: tuple[slice, slice]) -> torch.Tensor:
    """A bool mask [SIZE, SIZE] that is True on ``regions`` (default: the resized RECT)."""
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    for region in regions or (np.s_[4:16, 5:15],):
        mask[region] = True
    return mask


def rectangle(value: int = 255, region: tuple[slice, slice] = RECT, dtype: type = np.uint8) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype)
    mask[region] = value
    return mask


def picture(index: int) -> np.ndarray:
    """A grey uint8 image whose background level (40 + 20 * index) tells images apart."""
    image = np.full((HEIGHT, WIDTH), 40 + 20 * index, np.uint8)
    image[RECT] = 220
    return image


def save(path: Path, array: np.ndarray, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def write_pairs(root: Path, names: tuple[str, ...] = ("a", "b", "c"), mask_name: str = "{}.png") -> None:
    for index, name in enumerate(names):
        save(root / "images" / f"{name}.png", picture(index))
        save(root / "masks" / mask_name.format(name), rectangle())


def folder(root: Path, **params: object) -> ImageMaskSet:
    return image_mask_folder(FolderParams.model_validate(params), DataSpec(SIZE, root))


def lungs(root: Path, **params: object) -> ImageMaskSet:
    return lung_masks(LungParams.model_validate(params), DataSpec(SIZE, root))


def kvasir(root: Path, **params: object) -> ImageMaskSet:
    return kvasir_seg(KvasirParams.model_validate(params), DataSpec(SIZE, root))


def error(build: object, *args: object, **params: object) -> str:
    with pytest.raises(PluginError) as caught:
        build(*args, **params)  # type: ignore[operator]
    return str(caught.value)


# image_mask_folder: reading and resizing


def test_paired_png_folders_give_grey_float_images_and_bool_masks_at_the_suite_size(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    data = folder(tmp_path, images="images", masks="masks")
    assert data.images.shape == (3, 1, SIZE, SIZE) and data.images.dtype == torch.float32
    assert data.masks.shape == (3, SIZE, SIZE) and data.masks.dtype == torch.bool
    assert data.images.min() >= 0 and data.images.max() <= 1


def test_0_255_png_masks_become_the_drawn_rectangle(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    assert (folder(tmp_path, images="images", masks="masks").masks == expected()).all()


def test_0_1_masks_binarise_like_0_255_masks(tmp_path: Path) -> None:
    save(tmp_path / "images" / "a.png", picture(0))
    save(tmp_path / "masks" / "a.png", rectangle(value=1))
    assert torch.equal(folder(tmp_path, images="images", masks="masks").masks[0], expected())


def test_mask_threshold_zero_makes_every_non_zero_label_foreground(tmp_path: Path) -> None:
    labels = rectangle(value=1)
    labels[6:24, 20:30] = 2
    save(tmp_path / "images" / "a.png", picture(0))
    save(tmp_path / "masks" / "a.png", labels)
    assert torch.equal(folder(tmp_path, images="images", masks="masks", mask_threshold=0).masks[0], expected())
    assert torch.equal(folder(tmp_path, images="images", masks="masks").masks[0], expected(np.s_[4:16, 10:15]))


def test_8_bit_images_are_divided_by_255(tmp_path: Path) -> None:
    save(tmp_path / "images" / "a.png", np.full((HEIGHT, WIDTH), 51, np.uint8))
    save(tmp_path / "masks" / "a.png", rectangle())
    assert torch.allclose(folder(tmp_path, images="images", masks="masks").images, torch.tensor(0.2))


def test_16_bit_tiff_images_are_min_max_scaled_to_the_unit_range(tmp_path: Path) -> None:
    image = np.full((HEIGHT, WIDTH), 1000, np.uint16)
    image[RECT] = 3000
    save(tmp_path / "images" / "a.tif", image)
    save(tmp_path / "masks" / "a.tif", rectangle())
    pixels = folder(tmp_path, images="images", masks="masks").images[0, 0]
    assert pixels[0, 0] == 0 and pixels[10, 10] == 1


def test_rgb_channels_repeat_a_grey_image(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    images = folder(tmp_path, images="images", masks="masks", channels="rgb").images
    assert images.shape == (3, 3, SIZE, SIZE) and torch.equal(images[:, 0], images[:, 2])


def test_grey_channels_take_the_luma_of_a_colour_image(tmp_path: Path) -> None:
    red = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    red[..., 0] = 255
    save(tmp_path / "images" / "a.jpg", red, quality=100)
    save(tmp_path / "masks" / "a.png", rectangle())
    assert folder(tmp_path, images="images", masks="masks").images.mean().item() == pytest.approx(0.299, abs=0.01)


# image_mask_folder: pairing


def test_mask_suffix_pairs_x_png_with_x_mask_png(tmp_path: Path) -> None:
    write_pairs(tmp_path, mask_name="{}_mask.png")
    assert len(folder(tmp_path, images="images", masks="masks", mask_suffix="_mask")) == 3


def test_glob_patterns_select_only_the_matching_files(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    save(tmp_path / "images" / "preview.jpg", picture(0))
    assert len(folder(tmp_path, images="images/*.png", masks="masks/*.png")) == 3


def test_one_folder_can_hold_images_and_suffixed_masks(tmp_path: Path) -> None:
    for name in ("a", "b"):
        save(tmp_path / "all" / f"{name}.png", picture(0))
        save(tmp_path / "all" / f"{name}_mask.png", rectangle())
    data = folder(tmp_path, images="all", masks="all/*_mask.png", mask_suffix="_mask")
    assert len(data) == 2 and (data.masks == expected()).all()


def test_an_image_and_its_mask_may_have_different_formats(tmp_path: Path) -> None:
    save(tmp_path / "images" / "a.jpg", picture(0))
    save(tmp_path / "masks" / "a.tiff", rectangle())
    assert torch.equal(folder(tmp_path, images="images", masks="masks").masks[0], expected())


def test_limit_takes_the_first_images_in_file_name_order(tmp_path: Path) -> None:
    write_pairs(tmp_path, names=("c", "a", "b"))  # backgrounds: c 40, a 60, b 80
    corners = folder(tmp_path, images="images", masks="masks", limit=2).images[:, 0, 0, 0]
    assert corners.tolist() == pytest.approx([60 / 255, 80 / 255])


def test_absolute_folders_ignore_the_data_root(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    assert len(folder(tmp_path / "elsewhere", images=str(tmp_path / "images"), masks=str(tmp_path / "masks"))) == 3


# image_mask_folder: NIfTI and DICOM


def to_ras(display: np.ndarray) -> np.ndarray:
    """The RAS voxel array [X, Y] that is shown as ``display`` [H, W] (anterior up)."""
    return np.ascontiguousarray(display[::-1].T).astype(np.float32)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)


def test_2d_nifti_images_and_masks_read_anterior_up(tmp_path: Path) -> None:
    save_nifti(tmp_path / "images" / "a.nii.gz", to_ras(picture(0)))
    save_nifti(tmp_path / "masks" / "a.nii.gz", to_ras(rectangle(value=1)))
    data = folder(tmp_path, images="images", masks="masks")
    assert torch.equal(data.masks[0], expected()) and data.images[0, 0, 10, 10] == 1


def test_a_left_right_flipped_nifti_affine_reads_the_same_as_ras(tmp_path: Path) -> None:
    mask = rectangle(value=1, region=np.s_[6:24, 2:10])
    save_nifti(tmp_path / "images" / "a.nii", to_ras(picture(0))[::-1].copy(), np.diag([-1.0, 1, 1, 1]))
    save_nifti(tmp_path / "masks" / "a.nii", to_ras(mask)[::-1].copy(), np.diag([-1.0, 1, 1, 1]))
    assert torch.equal(folder(tmp_path, images="images", masks="masks").masks[0], expected(np.s_[4:16, 1:5]))


def test_slice_index_picks_one_axial_slice_of_a_3d_volume(tmp_path: Path) -> None:
    empty = np.zeros((WIDTH, HEIGHT), np.float32)
    save_nifti(tmp_path / "images" / "a.nii.gz", np.stack([empty, to_ras(picture(0)), empty], axis=2))
    save_nifti(tmp_path / "masks" / "a.nii.gz", np.stack([empty, to_ras(rectangle(value=1)), empty], axis=2))
    assert torch.equal(folder(tmp_path, images="images", masks="masks", slice_index=1).masks[0], expected())


def test_a_3d_volume_without_slice_index_is_an_error_that_gives_its_depth(tmp_path: Path) -> None:
    save_nifti(tmp_path / "images" / "a.nii.gz", np.zeros((WIDTH, HEIGHT, 5), np.float32))
    save_nifti(tmp_path / "masks" / "a.nii.gz", np.zeros((WIDTH, HEIGHT, 5), np.float32))
    message = error(folder, tmp_path, images="images", masks="masks")
    assert "a.nii.gz" in message and "5 axial slices" in message and "slice_index" in message


def test_a_slice_index_beyond_the_volume_is_an_error(tmp_path: Path) -> None:
    save_nifti(tmp_path / "images" / "a.nii.gz", np.zeros((WIDTH, HEIGHT, 5), np.float32))
    save_nifti(tmp_path / "masks" / "a.nii.gz", np.zeros((WIDTH, HEIGHT, 5), np.float32))
    assert "slice_index 7 is out of range" in error(folder, tmp_path, images="images", masks="masks", slice_index=7)


def save_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> None:
    pydicom = pytest.importorskip("pydicom")
    dataset = pydicom.Dataset()
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    dataset.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    dataset.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


def test_dicom_images_are_min_max_scaled(tmp_path: Path) -> None:
    image = np.full((HEIGHT, WIDTH), 100, np.uint16)
    image[RECT] = 4000
    save_dicom(tmp_path / "images" / "a.dcm", image)
    save(tmp_path / "masks" / "a.png", rectangle())
    data = folder(tmp_path, images="images", masks="masks")
    assert data.images[0, 0, 0, 0] == 0 and data.images[0, 0, 10, 10] == 1 and torch.equal(data.masks[0], expected())


def test_monochrome1_dicom_is_inverted_so_high_values_are_dark(tmp_path: Path) -> None:
    image = np.full((HEIGHT, WIDTH), 100, np.uint16)
    image[RECT] = 4000
    save_dicom(tmp_path / "images" / "a.dcm", image, photometric="MONOCHROME1")
    save(tmp_path / "masks" / "a.png", rectangle())
    pixels = folder(tmp_path, images="images", masks="masks").images[0, 0]
    assert pixels[0, 0] == 1 and pixels[10, 10] == 0


def test_dicom_without_pydicom_installed_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.dcm").write_bytes(b"\0" * 200)
    save(tmp_path / "masks" / "a.png", rectangle())
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` raise ImportError
    assert 'pip install -e ".[dicom]"' in error(folder, tmp_path, images="images", masks="masks")


# image_mask_folder: errors


def test_a_missing_image_folder_is_an_error_naming_it_and_the_data_root(tmp_path: Path) -> None:
    message = error(folder, tmp_path, images="nowhere", masks="masks")
    assert f"image folder {tmp_path / 'nowhere'} does not exist" in message and f"data root {tmp_path}" in message


def test_a_missing_mask_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    assert f"mask folder {tmp_path / 'labels'} does not exist" in error(folder, tmp_path, images="images", masks="labels")


def test_an_empty_folder_is_an_error_that_shows_the_unsupported_files_it_has(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    (tmp_path / "bmp").mkdir()
    (tmp_path / "bmp" / "a.bmp").write_bytes(b"BM")
    message = error(folder, tmp_path, images="bmp", masks="masks")
    assert "no image files" in message and str(tmp_path / "bmp") in message and "a.bmp" in message


def test_a_glob_matching_nothing_is_an_error_naming_the_pattern(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    assert "match '*.tif'" in error(folder, tmp_path, images="images/*.tif", masks="masks")


def test_half_matched_names_list_both_sides_and_the_naming_rule(tmp_path: Path) -> None:
    write_pairs(tmp_path, names=("a", "b"), mask_name="{}_mask.png")
    save(tmp_path / "images" / "c.png", picture(0))
    save(tmp_path / "masks" / "d_mask.png", rectangle())
    message = error(folder, tmp_path, images="images", masks="masks")
    assert "images without a mask (3 of 3): a.png, b.png, c.png" in message
    assert "masks without an image (3 of 3): a_mask.png, b_mask.png, d_mask.png" in message
    assert "the same name as its image" in message


def test_half_matched_names_with_a_suffix_name_only_the_unmatched_files(tmp_path: Path) -> None:
    write_pairs(tmp_path, names=("a", "b"), mask_name="{}_mask.png")
    save(tmp_path / "images" / "c.png", picture(0))
    message = error(folder, tmp_path, images="images", masks="masks", mask_suffix="_mask")
    assert "images without a mask (1 of 3): c.png" in message and "x.png pairs with x_mask.png" in message
    assert "without an image" not in message


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    (tmp_path / "images" / "b.png").write_bytes(b"not a png")
    assert f"cannot use {tmp_path / 'images' / 'b.png'}" in error(folder, tmp_path, images="images", masks="masks")


def test_an_image_and_mask_of_different_sizes_is_an_error(tmp_path: Path) -> None:
    save(tmp_path / "images" / "a.png", picture(0))
    save(tmp_path / "masks" / "a.png", np.zeros((15, 20), np.uint8))
    assert "is 40x30 pixels but its mask" in error(folder, tmp_path, images="images", masks="masks")


def test_two_images_differing_only_in_extension_are_an_error(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    save(tmp_path / "images" / "a.jpg", picture(0))
    assert "a.jpg, a.png" in error(folder, tmp_path, images="images", masks="masks")


def test_images_that_all_match_the_mask_pattern_are_an_error(tmp_path: Path) -> None:
    write_pairs(tmp_path)
    assert "no image is left" in error(folder, tmp_path, images="masks", masks="masks")


# lung_masks


# The left (columns 4:18) and right (22:36) lung rectangles of write_montgomery, resized.
BOTH_LUNGS = expected(np.s_[4:16, 2:9], np.s_[4:16, 11:18])


def write_montgomery(root: Path, n: int = 3) -> Path:
    for index in range(n):
        name = f"MCUCXR_{index:04d}_0.png"
        save(root / "CXR_png" / name, picture(index))
        save(root / "ManualMask" / "leftMask" / name, rectangle(region=np.s_[6:24, 4:18]))
        save(root / "ManualMask" / "rightMask" / name, rectangle(region=np.s_[6:24, 22:36]))
    return root


def write_shenzhen(root: Path, n: int = 4, masked: int = 3) -> Path:
    for index in range(n):
        save(root / "CXR_png" / f"CHNCXR_{index:04d}_0.png", picture(index))
        if index < masked:
            save(root / "mask" / f"CHNCXR_{index:04d}_0_mask.png", rectangle())
    return root


def test_montgomery_masks_are_the_union_of_left_and_right_lungs(tmp_path: Path) -> None:
    write_montgomery(tmp_path / "MontgomerySet")
    data = lungs(tmp_path, path="MontgomerySet", layout="montgomery")
    assert data.images.shape == (3, 1, SIZE, SIZE)
    assert (data.masks == BOTH_LUNGS).all()


def test_auto_layout_detects_montgomery(tmp_path: Path) -> None:
    write_montgomery(tmp_path / "MontgomerySet")
    assert (lungs(tmp_path, path="MontgomerySet").masks == BOTH_LUNGS).all()


def test_a_montgomery_image_without_its_right_mask_is_an_error(tmp_path: Path) -> None:
    root = write_montgomery(tmp_path / "MontgomerySet")
    (root / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png").unlink()
    message = error(lungs, tmp_path, path="MontgomerySet")
    assert "images without a mask (1 of 3): MCUCXR_0001_0.png" in message
    assert "rightMask" in message and "Montgomery layout" in message


def test_shenzhen_pairs_x_with_x_mask_and_skips_unmasked_images_with_a_counted_warning(tmp_path: Path) -> None:
    write_shenzhen(tmp_path / "Shenzhen")
    with pytest.warns(UserWarning, match="1 of 4 Shenzhen images .* are skipped, e.g. CHNCXR_0003_0.png"):
        data = lungs(tmp_path, path="Shenzhen")
    assert len(data) == 3 and (data.masks == expected()).all()


def test_shenzhen_with_no_masked_image_is_an_error(tmp_path: Path) -> None:
    root = write_shenzhen(tmp_path / "Shenzhen", masked=0)
    save(root / "mask" / "other_mask.png", rectangle())
    assert "masks without an image (1 of 1): other_mask.png" in error(lungs, tmp_path, path="Shenzhen", layout="shenzhen")


def test_auto_layout_detects_paired_folders_and_gives_grey_images(tmp_path: Path) -> None:
    write_pairs(tmp_path / "lungs")
    save(tmp_path / "lungs" / "images" / "d.png", np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    save(tmp_path / "lungs" / "masks" / "d.png", rectangle())
    assert lungs(tmp_path, path="lungs").images.shape == (4, 1, SIZE, SIZE)


def test_a_root_matching_no_lung_layout_is_an_error_listing_its_folders_and_the_layouts(tmp_path: Path) -> None:
    (tmp_path / "lungs" / "pictures").mkdir(parents=True)
    message = error(lungs, tmp_path, path="lungs")
    assert "matches no layout (its folders: pictures/)" in message
    assert all(layout in message for layout in ("Montgomery layout", "Shenzhen layout", "paired layout"))


def test_a_root_matching_two_lung_layouts_asks_for_one(tmp_path: Path) -> None:
    write_montgomery(tmp_path / "lungs")
    write_shenzhen(tmp_path / "lungs")
    assert "matches several layouts (montgomery, shenzhen)" in error(lungs, tmp_path, path="lungs")


def test_a_missing_lung_root_is_an_error_naming_it(tmp_path: Path) -> None:
    assert f"{tmp_path / 'nowhere'} does not exist" in error(lungs, tmp_path, path="nowhere")


def test_an_explicit_layout_with_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    write_shenzhen(tmp_path / "Shenzhen")
    message = error(lungs, tmp_path, path="Shenzhen", layout="montgomery")
    assert f"{tmp_path / 'Shenzhen' / 'ManualMask' / 'leftMask'} does not exist" in message


# kvasir_seg


def write_kvasir(root: Path, n: int = 3) -> Path:
    """RGB JPEG images and noisy JPEG masks: the mask's 0/255 levels carry +-40 of noise."""
    noise = np.random.default_rng(0)
    for index in range(n):
        name = f"cju{index}qkwl35piu0993l0dewei2.jpg"
        save(root / "images" / name, np.stack([picture(index)] * 3, axis=2), quality=90)
        noisy = rectangle().astype(int) + noise.integers(-40, 41, (HEIGHT, WIDTH))
        save(root / "masks" / name, noisy.clip(0, 255).astype(np.uint8), quality=60)
    return root


def test_kvasir_gives_rgb_images_from_the_default_folder_under_the_data_root(tmp_path: Path) -> None:
    write_kvasir(tmp_path / "Kvasir-SEG")
    assert kvasir(tmp_path).images.shape == (3, 3, SIZE, SIZE)


def test_kvasir_noisy_jpeg_masks_are_binarised_at_128_to_the_drawn_rectangle(tmp_path: Path) -> None:
    write_kvasir(tmp_path / "Kvasir-SEG")
    assert (kvasir(tmp_path).masks == expected()).all()


def test_kvasir_grey_channels_give_one_channel(tmp_path: Path) -> None:
    write_kvasir(tmp_path / "polyps")
    assert kvasir(tmp_path, path="polyps", channels="grey").images.shape == (3, 1, SIZE, SIZE)


def test_kvasir_without_masks_names_the_folder_and_the_layout(tmp_path: Path) -> None:
    save(tmp_path / "Kvasir-SEG" / "images" / "a.jpg", picture(0))
    message = error(kvasir, tmp_path)
    assert f"mask folder {tmp_path / 'Kvasir-SEG' / 'masks'} does not exist" in message and "Kvasir-SEG layout" in message


def test_the_three_datasets_are_registered_through_the_entry_points() -> None:
    registry = default_registry()
    for name, params in (("image_mask_folder", FolderParams), ("lung_masks", LungParams), ("kvasir_seg", KvasirParams)):
        assert registry.get("datasets", name).params is params
