"""The ``brats`` and ``msd_brain_tumour`` datasets, on tiny volumes written in the public layouts.

Every case is a 24 x 24 x 12 RAS volume with an ellipsoid "brain" and a tumour planted on three
axial slices around ``z0 = 4 + case``, drawn so that each foreground rule has a known area per
slice (BraTS labels: 1 core, 2 oedema, 4 enhancing):

    slice      z0 - 1    z0                          z0 + 1
    labels     2x2 of 2  4x4 of 2 around 2x2 of 4     3x3 of 4, one voxel 2
                         and one voxel of 1
    whole      4         16                          9
    core       0         5                           8
    enhancing  0         4                           8

The last case has no enhancing tumour (its 4s are 1s), so ``enhancing`` leaves it out.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from benchsuite.api import DataSpec, ImageMaskSet, PluginError
from benchsuite_plugins.datasets.brats import BratsParams, MSDBrainTumourParams, brats, msd_brain_tumour

SHAPE = (24, 24, 12)
N_CASES = 3
MODALITIES = ("flair", "t1", "t1ce", "t2")
BRATS_2020 = "MICCAI_BraTS2020_TrainingData"
RAS = np.eye(4)
# BraTS files are stored LPS: x and y run the other way.
LPS = np.array([[-1.0, 0, 0, SHAPE[0] - 1], [0, -1, 0, SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
# Foreground label sets in the BraTS numbering; MSD's are mapped by BRATS_TO_MSD.
RULES = {"whole_tumour": (1, 2, 4), "tumour_core": (1, 4), "enhancing": (4,)}
BRATS_TO_MSD = np.array([0, 2, 1, 0, 3])  # index: BraTS label -> MSD label (3 is unused in BraTS)


def z0(case: int) -> int:
    return 4 + case


def planted_labels(case: int) -> np.ndarray:
    """The BraTS label volume of one case, as in the module docstring."""
    labels = np.zeros(SHAPE, np.uint8)
    z = z0(case)
    labels[10:12, 14:16, z - 1] = 2
    labels[10:14, 14:18, z] = 2
    labels[11:13, 15:17, z] = 4
    labels[10, 14, z] = 1
    labels[10:13, 14:17, z + 1] = 4
    labels[12, 16, z + 1] = 2
    if case == N_CASES - 1:
        labels[labels == 4] = 1
    return labels


def planted_volumes(case: int) -> np.ndarray:
    """[4, X, Y, Z] float32: an ellipsoid brain with modality- and case-specific intensities, 0 outside."""
    x, y, z = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in SHAPE), indexing="ij")
    brain = (x / 11) ** 2 + (y / 11) ** 2 + (z / 6) ** 2 <= 1
    rng = np.random.default_rng(case)
    volumes = np.stack([(m + 1) * 100 * (1 + rng.random(SHAPE)) + 4 * x for m in range(len(MODALITIES))])
    return (volumes * brain).astype(np.float32)


def image_view(volume_slice: np.ndarray) -> torch.Tensor:
    """An [X, Y] RAS slice as the dataset shows it: rows anterior to posterior, columns left to right."""
    return torch.from_numpy(np.ascontiguousarray(np.flipud(volume_slice.T)))


def save(data: np.ndarray, path: Path, affine: np.ndarray = RAS) -> None:
    """Save ``data`` given in RAS order, stored with ``affine`` (RAS or LPS)."""
    if affine is LPS:
        data = data[::-1, ::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), path)


def write_brats(root: Path, names: list[str], affine: np.ndarray = RAS, extension: str = ".nii.gz") -> Path:
    """Case folders ``root/<case>/<case>_<modality>.nii.gz`` and ``_seg.nii.gz`` as distributed."""
    for case, name in enumerate(names):
        case_dir = root / name
        case_dir.mkdir(parents=True)
        for modality, volume in zip(MODALITIES, planted_volumes(case), strict=True):
            save(volume, case_dir / f"{name}_{modality}{extension}", affine)
        save(planted_labels(case), case_dir / f"{name}_seg{extension}", affine)
    return root


def brats2020_names(n: int = N_CASES) -> list[str]:
    return [f"BraTS20_Training_{i:03d}" for i in range(1, n + 1)]


def write_msd(root: Path) -> Path:
    """``root/Task01_BrainTumour`` as in the Decathlon's tar: 4D images, MSD labels, dataset.json."""
    task = root / "Task01_BrainTumour"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    training = []
    for case in range(N_CASES):
        name = f"BRATS_{case + 1:03d}.nii.gz"
        save(np.moveaxis(planted_volumes(case), 0, -1), task / "imagesTr" / name, LPS)
        save(BRATS_TO_MSD[planted_labels(case)].astype(np.uint8), task / "labelsTr" / name, LPS)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    metadata = {
        "name": "BRATS",
        "description": "Gliomas segmentation tumour and oedema in on brain images",
        "reference": "https://www.med.upenn.edu/sbia/brats2017.html",
        "licence": "CC-BY-SA 4.0",
        "release": "2.0 04/05/2018",
        "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": N_CASES,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (task / "dataset.json").write_text(json.dumps(metadata, indent=4))
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_brats(root / BRATS_2020, brats2020_names())
    write_msd(root / "msd")
    return root


def build(root: Path, size: int = SHAPE[0], **params: object) -> ImageMaskSet:
    return brats(BratsParams.model_validate({"path": BRATS_2020, **params}), DataSpec(size, root))


def build_msd(root: Path, size: int = SHAPE[0], **params: object) -> ImageMaskSet:
    return msd_brain_tumour(MSDBrainTumourParams.model_validate({"path": "msd", **params}), DataSpec(size, root))


def areas(dataset: ImageMaskSet) -> list[int]:
    return dataset.masks.sum(dim=(1, 2)).tolist()


def test_defaults_are_flair_largest_slice_whole_tumour() -> None:
    params = BratsParams(path="x")
    assert (params.modalities, params.slices, params.foreground, params.limit) == (("flair",), "largest", "whole_tumour", None)


def test_one_single_channel_float_slice_and_bool_mask_per_case(data_root: Path) -> None:
    dataset = build(data_root, size=16)
    assert dataset.images.shape == (N_CASES, 1, 16, 16) and dataset.images.dtype == torch.float32
    assert dataset.masks.shape == (N_CASES, 16, 16) and dataset.masks.dtype == torch.bool


def test_largest_takes_the_slice_with_the_most_tumour(data_root: Path) -> None:
    masks = build(data_root).masks
    for case in range(N_CASES):
        assert torch.equal(masks[case], image_view(planted_labels(case)[:, :, z0(case)] > 0))


def test_index_takes_that_slice_of_every_case(data_root: Path) -> None:
    # Slice 5 is z0 + 1, z0 and z0 - 1 of the three cases.
    assert areas(build(data_root, slices="index", slice_index=5)) == [9, 16, 4]


def test_index_keeps_a_slice_without_tumour(data_root: Path) -> None:
    assert areas(build(data_root, slices="index", slice_index=0)) == [0, 0, 0]


def test_index_beyond_the_volume_names_the_case_and_its_depth(data_root: Path) -> None:
    with pytest.raises(PluginError, match=r"BraTS20_Training_001.* 12 axial slices"):
        build(data_root, slices="index", slice_index=12)


def test_threshold_in_pixels_keeps_every_slice_at_or_above_it_in_order(data_root: Path) -> None:
    assert areas(build(data_root, slices="threshold", min_area=9)) == [16, 9] * N_CASES


def test_threshold_below_one_is_a_fraction_of_the_slice(data_root: Path) -> None:
    in_pixels = build(data_root, slices="threshold", min_area=9)
    as_fraction = build(data_root, slices="threshold", min_area=9 / (SHAPE[0] * SHAPE[1]))
    assert torch.equal(in_pixels.masks, as_fraction.masks)


@pytest.mark.parametrize("foreground", RULES)
def test_mask_is_the_foreground_rule_s_labels(data_root: Path, foreground: str) -> None:
    masks = build(data_root, slices="index", slice_index=z0(0), foreground=foreground).masks
    assert torch.equal(masks[0], image_view(np.isin(planted_labels(0)[:, :, z0(0)], RULES[foreground])))


def test_largest_follows_the_foreground_rule_and_skips_cases_without_it(data_root: Path) -> None:
    # The enhancing tumour is largest on z0 + 1, and the last case has none.
    assert areas(build(data_root, foreground="enhancing")) == [8, 8]


def test_no_case_with_the_foreground_is_an_error(tmp_path: Path) -> None:
    for case_dir in sorted(write_brats(tmp_path / BRATS_2020, brats2020_names()).iterdir())[:-1]:
        shutil.rmtree(case_dir)  # keep only the last case, which has no enhancing tumour
    with pytest.raises(PluginError, match=r"no case .* enhancing"):
        build(tmp_path, foreground="enhancing")


def test_modalities_become_channels_in_the_order_given(data_root: Path) -> None:
    both = build(data_root, modalities=["t2", "flair"]).images
    assert both.shape[1] == 2
    assert torch.equal(both[:, :1], build(data_root, modalities=["t2"]).images)
    assert torch.equal(both[:, 1:], build(data_root).images)


def test_brain_percentiles_1_and_99_map_to_0_and_1_and_background_stays_0(data_root: Path) -> None:
    image = build(data_root, slices="index", slice_index=5, modalities=["t1"]).images[0, 0]
    volume = planted_volumes(0)[MODALITIES.index("t1")]
    low, high = np.percentile(volume[volume > 0], [1, 99])
    expected = image_view(np.clip((volume[:, :, 5] - low) / (high - low), 0, 1)).float()
    torch.testing.assert_close(image, expected)
    assert image.min() == 0 and image.max() == 1 and image[0, 0] == 0


def test_normalisation_is_per_volume_so_a_rescaled_case_gives_the_same_image(tmp_path: Path, data_root: Path) -> None:
    case_dir = write_brats(tmp_path / BRATS_2020, brats2020_names(1)) / "BraTS20_Training_001"
    save(planted_volumes(0)[0] * 7.5, case_dir / "BraTS20_Training_001_flair.nii.gz")
    torch.testing.assert_close(build(tmp_path).images[0], build(data_root).images[0])


def test_volumes_stored_lps_give_the_same_slices_as_ras(tmp_path: Path, data_root: Path) -> None:
    write_brats(tmp_path / BRATS_2020, brats2020_names(), affine=LPS)
    lps, ras = build(tmp_path, modalities=list(MODALITIES)), build(data_root, modalities=list(MODALITIES))
    assert torch.equal(lps.masks, ras.masks)
    torch.testing.assert_close(lps.images, ras.images)


def test_masks_are_resized_by_area_coverage_of_at_least_half(data_root: Path) -> None:
    full, half = build(data_root).masks, build(data_root, size=SHAPE[0] // 2).masks
    coverage = torch.nn.functional.avg_pool2d(full.float().unsqueeze(1), 2)[:, 0]
    assert torch.equal(half, coverage >= 0.5)


def test_upsampled_images_stay_in_the_unit_range(data_root: Path) -> None:
    images = build(data_root, size=40, modalities=list(MODALITIES)).images
    assert images.shape[-2:] == (40, 40) and images.min() >= 0 and images.max() <= 1


def test_limit_takes_the_first_cases_in_sorted_order(data_root: Path) -> None:
    assert torch.equal(build(data_root, limit=2).images, build(data_root).images[:2])


def test_brats_2021_names_and_uncompressed_nii_are_read(tmp_path: Path, data_root: Path) -> None:
    write_brats(tmp_path / BRATS_2020, ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003"], extension=".nii")
    assert torch.equal(build(tmp_path).images, build(data_root).images)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=rf"{re.escape(str(tmp_path / BRATS_2020))} does not exist.*_flair\.nii\.gz"):
        build(tmp_path)


def test_a_folder_without_case_folders_is_an_error(tmp_path: Path) -> None:
    (tmp_path / BRATS_2020).mkdir()
    (tmp_path / BRATS_2020 / "name_mapping.csv").write_text("")
    with pytest.raises(PluginError, match="holds no case folders"):
        build(tmp_path)


def test_a_missing_modality_names_the_case_and_the_file(tmp_path: Path) -> None:
    write_brats(tmp_path / BRATS_2020, brats2020_names())
    (tmp_path / BRATS_2020 / "BraTS20_Training_002" / "BraTS20_Training_002_t1ce.nii.gz").unlink()
    with pytest.raises(PluginError, match=r"1 file\(s\) missing.*BraTS20_Training_002/BraTS20_Training_002_t1ce\.nii\.gz"):
        build(tmp_path, modalities=["flair", "t1ce"])


def test_a_missing_segmentation_names_the_case_and_the_file(tmp_path: Path) -> None:
    write_brats(tmp_path / BRATS_2020, brats2020_names())
    (tmp_path / BRATS_2020 / "BraTS20_Training_003" / "BraTS20_Training_003_seg.nii.gz").unlink()
    with pytest.raises(PluginError, match=r"BraTS20_Training_003/BraTS20_Training_003_seg\.nii\.gz"):
        build(tmp_path)


def test_an_unreadable_nifti_names_the_case_and_the_file(tmp_path: Path) -> None:
    write_brats(tmp_path / BRATS_2020, brats2020_names())
    (tmp_path / BRATS_2020 / "BraTS20_Training_001" / "BraTS20_Training_001_flair.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(PluginError, match=r"cannot read BraTS20_Training_001_flair\.nii\.gz of case BraTS20_Training_001"):
        build(tmp_path)


def test_labels_outside_the_brats_numbering_are_refused(tmp_path: Path) -> None:
    case_dir = write_brats(tmp_path / BRATS_2020, brats2020_names(1)) / "BraTS20_Training_001"
    save(np.where(planted_labels(0) == 4, 3, planted_labels(0)).astype(np.uint8), case_dir / "BraTS20_Training_001_seg.nii.gz")
    with pytest.raises(PluginError, match=r"BraTS20_Training_001 has segmentation labels \[0, 1, 2, 3\]"):
        build(tmp_path)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"slices": "index"}, "needs slice_index"),
        ({"slice_index": 3}, "slice_index is only used with slices: index"),
        ({"modalities": ["flair", "flair"]}, "must not repeat"),
        ({"modalities": ["dwi"]}, "flair"),
    ],
)
def test_inconsistent_params_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BratsParams.model_validate({"path": "x", **params})


@pytest.mark.parametrize("foreground", RULES)
def test_msd_gives_the_brats_slices_of_the_same_volumes(data_root: Path, foreground: str) -> None:
    # Same volumes, 4D and LPS, MSD label numbers: the label tables and channel order must undo that.
    options = {"modalities": ["t2", "flair", "t1ce"], "slices": "threshold", "min_area": 4, "foreground": foreground}
    msd, reference = build_msd(data_root, **options), build(data_root, **options)
    assert torch.equal(msd.masks, reference.masks)
    torch.testing.assert_close(msd.images, reference.images)


def test_msd_limit_takes_the_first_cases_by_file_name(data_root: Path) -> None:
    assert areas(build_msd(data_root, limit=1, slices="index", slice_index=5)) == [9]


def test_missing_msd_data_says_where_to_put_it_and_that_download_would_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"(?s)Task01_BrainTumour does not exist.*imagesTr.*labelsTr.*download: true"):
        build_msd(tmp_path)


def test_msd_download_uses_data_already_there_without_the_network(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("msd_brain_tumour tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert len(build_msd(data_root, download=True)) == N_CASES


def test_msd_files_listed_but_missing_are_named(tmp_path: Path) -> None:
    write_msd(tmp_path / "msd")
    (tmp_path / "msd" / "Task01_BrainTumour" / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with pytest.raises(PluginError, match=r"1 file\(s\) listed .* missing: .*labelsTr/BRATS_002\.nii\.gz"):
        build_msd(tmp_path)


def test_both_datasets_are_registered() -> None:
    from benchsuite.engine.registry import default_registry

    registry = default_registry()
    assert registry.get("datasets", "brats").params is BratsParams
    assert registry.get("datasets", "msd_brain_tumour").params is MSDBrainTumourParams


def test_msd_without_monai_installed_names_the_extra(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "monai.apps", None)  # makes `from monai.apps import ...` raise ImportError
    with pytest.raises(PluginError, match=r'pip install -e "\.\[msd\]"'):
        build_msd(data_root)
