"""Tiny versions of the protocol suites, end to end on fixture data in the public layouts.

The suites' structure (datasets, methods, metrics, folder names) is taken from the shipped YAML;
only the sizes shrink, and ResNet weights are random because tests never download.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from PIL import Image

from benchsuite.engine.registry import default_registry
from benchsuite.engine.runner import run_cells
from benchsuite.engine.suite import load_suite
from benchsuite.results.cube import open_cube
from tests.conftest import ROOT

CASES = 8


def picture(i: int, shape: tuple[int, int], rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright ellipse whose position depends on ``i``, and the ellipse's mask."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    mask = ((rows - shape[0] / 2) / (shape[0] / 4)) ** 2 + ((cols - shape[1] * (0.3 + 0.05 * i)) / (shape[1] / 5)) ** 2 < 1
    image = np.random.default_rng(i).integers(0, 80, shape) + 150 * mask
    image = np.stack([image, image // 2, image // 3], axis=-1) if rgb else image
    return image.astype(np.uint8), (255 * mask).astype(np.uint8)


def write_brats(root: Path) -> None:
    """BraTS 2020 case folders: four modalities and a segmentation with labels 1, 2 and 4."""
    for i in range(CASES):
        case = root / f"BraTS20_Training_{i + 1:03d}"
        case.mkdir(parents=True)
        x, y, z = np.mgrid[:20, :20, :10]
        tumour = (x - 6 - i) ** 2 + (y - 10) ** 2 + (z - 5) ** 2 < 12
        labels = np.where(tumour, np.where(x < 7 + i, 4, 2), 0).astype(np.uint8)
        brain = np.random.default_rng(i).uniform(100, 200, x.shape) * ((x - 10) ** 2 + (y - 10) ** 2 < 80)
        for modality in ("flair", "t1", "t1ce", "t2"):
            nib.save(
                nib.Nifti1Image((brain + 300 * tumour).astype(np.float32), np.eye(4)), case / f"{case.name}_{modality}.nii.gz"
            )
        nib.save(nib.Nifti1Image(labels, np.eye(4)), case / f"{case.name}_seg.nii.gz")


def write_montgomery(root: Path) -> None:
    for folder in ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask"):
        (root / folder).mkdir(parents=True)
    for i in range(CASES):
        image, mask = picture(i, (40, 32))
        name = f"MCUCXR_{i:04d}_0.png"
        Image.fromarray(image).save(root / "CXR_png" / name)
        left = mask.copy()
        left[:, 16:] = 0
        Image.fromarray(left).save(root / "ManualMask/leftMask" / name)
        Image.fromarray(mask - left).save(root / "ManualMask/rightMask" / name)


def write_kvasir(root: Path) -> None:
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for i in range(CASES):
        image, mask = picture(i, (36, 40), rgb=True)
        Image.fromarray(image).save(root / "images" / f"cju{i:04d}.jpg")
        Image.fromarray(mask).save(root / "masks" / f"cju{i:04d}.jpg")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_brats(root / "BraTS2020" / "MICCAI_BraTS2020_TrainingData")
    write_montgomery(root / "MontgomerySet")
    write_kvasir(root / "Kvasir-SEG")
    return root


def shrink(suite_file: str, tmp_path: Path, encoders: dict) -> Path:
    suite = yaml.safe_load((ROOT / "suites" / suite_file).read_text())
    suite["data"] = {"size": 16, "eval_images": 3, "examples": 1}
    suite["theta"] = [0, 90]
    suite["seeds"] = [0, 1]
    for method in suite["methods"].values():
        method["params"].update(epochs=1, batch_size=4, proj_hidden_dim=16, proj_dim=8)
        if method["plugin"] == "moco_v2":
            method["params"]["queue_size"] = 16
    suite["encoders"] = encoders
    if suite["saliency"]["plugin"] == "smoothgrad":
        suite["saliency"]["params"]["samples"] = 2
    path = tmp_path / suite_file
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def run(path: Path, tmp_path: Path):
    summary = run_cells(load_suite(path, default_registry()), default_registry(), tmp_path / "runs", progress=False)
    return open_cube(summary.run_dir)


def test_tiny_paper_protocol_runs_on_brats_montgomery_and_kvasir_layouts(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHSUITE_DATA_ROOT", str(data_root))
    path = shrink("paper-2407.05218.yaml", tmp_path, {"resnet50": {"plugin": "resnet50", "params": {"weights": "none"}}})
    cube = run(path, tmp_path)
    assert list(cube["dataset"].values) == ["brats", "lung", "kvasir"]
    assert dict(cube["dice"].sizes) == {"dataset": 3, "theta": 2, "seed": 2, "method": 1, "encoder": 1, "image": 3}
    assert np.isfinite(cube["final_loss"].values).all()
    # At theta = 0 the two views are identical, so saliency (and Dice) is undefined, not noise.
    assert np.isnan(cube["dice"].sel(theta=0.0).values).all()


def test_tiny_fingerprint_protocol_scores_the_pair_probe_for_both_methods(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHSUITE_DATA_ROOT", str(data_root))
    path = shrink("fingerprint.yaml", tmp_path, {"small_cnn": {"plugin": "small_cnn", "params": {"width": 4}}})
    cube = run(path, tmp_path)
    assert list(cube["method"].values) == ["simclr", "moco_v2"]
    probe = cube["pair_probe"].values
    assert probe.shape == (3, 2, 2, 2, 1) and ((probe >= 0) & (probe <= 1)).all()


def test_missing_data_root_stops_with_the_layout_it_expected(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHSUITE_DATA_ROOT", str(tmp_path / "nowhere"))
    path = shrink("paper-2407.05218.yaml", tmp_path, {"cnn": "small_cnn"})
    from benchsuite.results.errors import DataError

    with pytest.raises(DataError, match="nowhere") as err:  # bad input, before any cell trains
        run(path, tmp_path)
    # Every missing dataset is named at once, not only the first.
    assert str(err.value).startswith("3 of the 3 datasets cannot serve the study: dataset 'brats'")
    assert "dataset 'lung' (plugin 'lung_masks') cannot be built" in str(err.value) and "Kvasir-SEG layout" in str(err.value)
