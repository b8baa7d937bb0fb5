"""Data is checked before anything trains, and the dataset cache rebuilds whatever has changed under it."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchsuite.engine import cache, data
from benchsuite.engine.data import DataWarning, check_datasets, load_dataset
from benchsuite.engine.grid import Component, expand
from benchsuite.engine.preflight import preflight
from benchsuite.engine.registry import default_registry
from benchsuite.engine.suite import load_suite
from benchsuite.results.errors import DataError, SuiteError
from benchsuite.testing import check_dataset
from tests.conftest import stored_keys
from tests.core.test_cli import benchsuite, flat

SUITE = """\
name: checks
data: {{size: 16, eval_images: {eval_images}}}
datasets:
  shapes: {{plugin: symmetric_shapes, params: {{k: 4, n_images: 20}}}}
  second: {second}
theta: [90]
seeds: [0]
methods: {{moco: {{plugin: moco_v2, params: {{epochs: 1, batch_size: 8, queue_size: 16}}}}}}
encoders: {{cnn: {{plugin: small_cnn, params: {{width: 4}}}}}}
saliency: {{plugin: smoothgrad, params: {{samples: 2}}}}
metrics: [dice]
"""

BLANK_MASKS = """
import torch
from benchsuite.api import ImageMaskSet, Params, hookimpl

class Blank(Params):
    empty: int = 0  # the first `empty` of the 12 images have an empty mask

def blank_masks(params, spec):
    images = torch.rand(12, 1, spec.size, spec.size, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(12, spec.size, spec.size, dtype=torch.bool)
    masks[params.empty :, 4:10, 4:10] = True
    return ImageMaskSet(images, masks)

@hookimpl
def benchsuite_register_datasets(registry):
    registry.add("blank_masks", blank_masks, params=Blank)
"""


def suite(tmp_path: Path, second: str, eval_images: int = 10) -> Path:
    path = tmp_path / "checks.yaml"
    path.write_text(SUITE.format(second=second, eval_images=eval_images))
    return path


def checked(path: Path):
    registry = default_registry()
    return check_datasets(expand(load_suite(path, registry)), registry)


def test_every_empty_evaluation_mask_is_a_data_error_naming_the_dataset(tmp_path, plugin_path, fresh_registry):
    plugin_path("bs-blank", {"bs_blank": BLANK_MASKS}, {"blank": "bs_blank"})
    path = suite(tmp_path, "{plugin: blank_masks, params: {empty: 12}}")
    with pytest.raises(
        DataError, match=r"dataset 'second' \(plugin 'blank_masks'\): every one of its 10 evaluation masks is empty"
    ):
        checked(path)


def test_some_empty_evaluation_masks_are_a_counted_warning(tmp_path, plugin_path, fresh_registry):
    # 6 of 12 masks empty and 10 held out: at least 4 empty ones land in the evaluation split.
    plugin_path("bs-blank", {"bs_blank": BLANK_MASKS}, {"blank": "bs_blank"})
    with pytest.warns(DataWarning, match=r"dataset 'second': (\d+) of its 10 evaluation masks are empty") as warned:
        shapes, second = checked(suite(tmp_path, "{plugin: blank_masks, params: {empty: 6}}"))
    assert len(warned) == 1
    assert f"dataset 'second': {second.empty_eval_masks} of its 10" in str(warned[0].message)
    assert second.empty_masks == 6 and 4 <= second.empty_eval_masks <= 6 and shapes.empty_eval_masks == 0
    assert (second.images, second.train, second.eval, second.shape) == (12, 2, 10, (1, 16, 16))
    assert second.coverage == pytest.approx(6 * 36 / (12 * 256))


def test_more_evaluation_images_than_a_dataset_has_is_a_suite_error(tmp_path):
    path = suite(tmp_path, "{plugin: isotropic_texture, params: {n_images: 14}}", eval_images=13)
    with pytest.raises(SuiteError, match=r"data.eval_images = 13, but dataset 'second' has 14 images.*at most 12"):
        checked(path)


def test_run_refuses_too_many_evaluation_images_with_exit_2_before_training(tmp_path):
    suite(tmp_path, "{plugin: isotropic_texture, params: {n_images: 14}}", eval_images=13)
    done = benchsuite("run", "checks.yaml", "--no-progress", cwd=tmp_path)
    message = flat(done.stderr)
    assert done.returncode == 2, done.stderr
    assert "data.eval_images = 13, but dataset 'second' has 14 images" in message
    assert "bug" not in message and "Finished cells" not in message and "Traceback" not in done.stderr
    assert not stored_keys(tmp_path / "runs" / "checks")


def test_a_missing_data_folder_exits_2_naming_it_and_nothing_trains(tmp_path):
    suite(tmp_path, "{plugin: image_mask_folder, params: {images: scans/images, masks: scans/masks}}")
    done = benchsuite("run", "checks.yaml", "--no-progress", cwd=tmp_path)
    message = flat(done.stderr)
    assert done.returncode == 2, done.stderr
    assert "dataset 'second' (plugin 'image_mask_folder') cannot be built" in message
    assert f"{tmp_path / 'scans' / 'images'} does not exist" in message, "a path is never broken across lines"
    assert "stored" not in message and "Traceback" not in done.stderr
    assert not stored_keys(tmp_path / "runs" / "checks")


def test_validate_data_prints_each_dataset_without_training(tmp_path):
    suite(tmp_path, "{plugin: isotropic_texture, params: {n_images: 14}}")
    done = benchsuite("validate", "checks.yaml", "--data", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:]}
    assert rows["dataset"][:5] == ["dataset", "plugin", "images", "train", "eval"]
    assert rows["shapes"][1:7] == ["symmetric_shapes", "20", "10", "10", "1", "x"]
    assert rows["second"][1:5] == ["isotropic_texture", "14", "4", "10"]
    assert rows["second"][-2:] == ["0", "(0)"]
    assert not (tmp_path / "runs").exists()


def test_the_pre_run_checks_build_or_read_each_dataset_once(tmp_path, monkeypatch):
    # grad_cam offers check(model), so the saliency check needs each dataset's channels too.
    text = suite(tmp_path, "{plugin: isotropic_texture, params: {n_images: 14}}").read_text()
    path = tmp_path / "gradcam.yaml"
    path.write_text(text.replace("{plugin: smoothgrad, params: {samples: 2}}", "{plugin: grad_cam, params: {layer: features}}"))
    registry = default_registry()
    cells = expand(load_suite(path, registry))
    loads, cached = [], data._cached
    monkeypatch.setattr(data, "_cached", lambda *args: loads.append(args[1]) or cached(*args))
    summaries = preflight(cells, registry)
    assert [s.label for s in summaries] == ["shapes", "second"]
    assert len(loads) == 2, "check_masks and check_saliency read the summaries, not the datasets again"


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_encoder_that_refuses_the_image_size_is_bad_input_before_training(tmp_path, command):
    text = suite(tmp_path, "{plugin: isotropic_texture, params: {n_images: 14}}").read_text()
    text = text.replace("size: 16", "size: 20").replace("{plugin: small_cnn, params: {width: 4}}", VIT)
    (tmp_path / "checks.yaml").write_text(text.replace("{plugin: smoothgrad, params: {samples: 2}}", "grad_cam"))
    done = benchsuite(command, "checks.yaml", *(["--data"] if command == "validate" else []), "--no-progress", cwd=tmp_path)
    message = flat(done.stderr)
    assert done.returncode == 2, done.stderr
    assert "encoder 'timm' cannot build the moco / cnn model:" in message
    assert "must be a multiple of 16" in message and "not 20" in message
    assert "bug" not in message and "Traceback" not in done.stderr
    assert not stored_keys(tmp_path / "runs" / "checks")


VIT = "{plugin: timm, params: {model: vit_tiny_patch16_224}}"
"""A ViT cuts images into 16-pixel patches, so it refuses a size that is not a multiple of 16."""


def write_png(path: Path, value: int, size: int = 16) -> None:
    array = np.zeros((size, size), np.uint8)
    array[4:12, 4:12] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def folder_dataset(root: Path, names: str = "abc") -> dict:
    for name in names:
        write_png(root / "images" / f"{name}.png", 200)
        write_png(root / "masks" / f"{name}.png", 255)
    return {"plugin": "image_mask_folder", "params": {"images": str(root / "images"), "masks": str(root / "masks")}}


def load(component: dict) -> torch.Tensor:
    data._cached.cache_clear()  # as a new process would: only the disk cache remains
    return load_dataset(Component(component), 16, default_registry()).images


def test_an_image_edited_in_place_or_added_rebuilds_the_cached_dataset(tmp_path):
    component = folder_dataset(tmp_path)
    assert load(component).max() == pytest.approx(200 / 255)
    write_png(tmp_path / "images" / "b.png", 100)
    os.utime(tmp_path / "images" / "b.png", ns=(1, 1))  # a new modification time, however coarse the clock
    assert load(component)[1].max() == pytest.approx(100 / 255)
    write_png(tmp_path / "images" / "d.png", 50)
    write_png(tmp_path / "masks" / "d.png", 255)
    assert len(load(component)) == 4


def test_an_unchanged_dataset_is_read_from_the_cache_not_rebuilt(tmp_path):
    component = folder_dataset(tmp_path)
    load(component)
    (entry,) = [e for e in cache.entries() if e.meta["dataset"] == component]
    built = entry.path.stat().st_mtime_ns
    load(component)
    assert entry.path.stat().st_mtime_ns == built
    assert str(tmp_path / "images" / "a.png") in entry.meta["reads"]["files"]
    assert str(tmp_path / "masks") in entry.meta["reads"]["folders"]


def test_an_unreadable_cache_file_is_rebuilt_not_an_error(tmp_path):
    component = folder_dataset(tmp_path)
    expected = load(component)
    (entry,) = [e for e in cache.entries() if e.meta["dataset"] == component]
    entry.path.write_bytes(entry.path.read_bytes()[:100])  # cut short
    assert torch.equal(load(component), expected)


EDITABLE = """
import torch
from benchsuite.api import ImageMaskSet, Params, hookimpl

LEVEL = {level}

def flat_squares(params, spec):
    masks = torch.zeros(4, spec.size, spec.size, dtype=torch.bool)
    masks[:, 2:8, 2:8] = True
    return ImageMaskSet(masks[:, None].float() * LEVEL, masks)

@hookimpl
def benchsuite_register_datasets(registry):
    registry.add("flat_squares", flat_squares, params=Params)
"""


def test_an_edited_plugin_rebuilds_its_cached_dataset(tmp_path, plugin_path, fresh_registry):
    root = plugin_path("bs-edit", {"bs_edit": EDITABLE.format(level=0.5)}, {"edit": "bs_edit"})
    component = {"plugin": "flat_squares", "params": {}}
    assert load(component).max() == 0.5
    (root / "bs_edit.py").write_text(textwrap.dedent(EDITABLE.format(level=0.25)))
    sys.modules.pop("bs_edit")
    default_registry.cache_clear()  # the edited plugin as the next process loads it
    assert load(component).max() == 0.25


def test_the_cache_command_lists_entries_says_which_are_stale_and_clears(tmp_path):
    env = {**os.environ, "BENCHSUITE_CACHE": str(tmp_path / "cache")}
    folder_dataset(tmp_path / "scans")
    suite(tmp_path, "{plugin: image_mask_folder, params: {images: scans/images, masks: scans/masks}}", eval_images=1)
    assert benchsuite("validate", "checks.yaml", "--data", "--no-progress", cwd=tmp_path, env=env).returncode == 0
    listed = benchsuite("cache", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"dataset cache: {tmp_path / 'cache' / 'datasets'} (2 entries" in listed.stdout
    assert listed.stdout.count("; current") == 2
    write_png(tmp_path / "scans" / "masks" / "a.png", 128)
    os.utime(tmp_path / "scans" / "masks" / "a.png", ns=(1, 1))
    listed = benchsuite("cache", cwd=tmp_path, env=env)
    assert "image_mask_folder(" in listed.stdout and "stale (the data it read changed)" in listed.stdout
    cleared = benchsuite("cache", "--clear", cwd=tmp_path, env=env)
    assert cleared.returncode == 0 and "removed 2 cached datasets" in cleared.stdout
    assert not list((tmp_path / "cache" / "datasets").iterdir())


def test_check_dataset_takes_a_relative_data_root_from_the_working_directory(tmp_path, monkeypatch):
    folder_dataset(tmp_path / "data" / "scans")
    monkeypatch.chdir(tmp_path)
    params = {"images": "scans/images", "masks": "scans/masks"}
    relative = check_dataset("image_mask_folder", params, data_root=Path("data"))
    absolute = check_dataset("image_mask_folder", params, data_root=tmp_path / "data")
    assert torch.equal(relative.images, absolute.images) and len(relative) == 3
    with pytest.raises(AssertionError, match=f"{tmp_path / 'data' / 'missing'} does not exist"):
        check_dataset("image_mask_folder", {"images": "missing", "masks": "scans/masks"}, data_root=Path("data"))
