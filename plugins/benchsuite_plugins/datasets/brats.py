"""Brain-tumour MRI slices: BraTS 2020/2021 case folders and the MSD Task01_BrainTumour.

The reference study's BraTS dataset: axial slices of multi-modal brain MRI with a tumour mask.
Both datasets share every step after reading a volume (``_tumour_slices.py``):

1. Each volume is reoriented to RAS, so slices of every case (and of both distributions) face
   the same way: anterior up, the subject's right on the right. Orientation matters in a study
   of rotations, and BraTS files are stored LPS.
2. The foreground is a set of tumour labels (``whole_tumour``, ``tumour_core``, ``enhancing``);
   BraTS and MSD number the same sub-regions differently, so each has its own label table.
3. Slices are chosen per case from the foreground area of each axial slice (``largest``,
   ``index`` or ``threshold``); cases where the rule picks nothing are left out.
4. Each modality of each case is normalised on its own: the brain's (voxels > 0) 1st and 99th
   intensity percentiles map to 0 and 1, robust to a few extreme voxels; the background stays 0.
5. Slices are zero-padded to square and resized to ``spec.size``: images with antialiased
   bilinear, masks by area coverage (a pixel is foreground when at least half of its area is).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from benchsuite.api import DatasetFactory, DataSpec, ImageMaskSet, PluginError, Registry, hookimpl
from benchsuite_plugins.datasets._tumour_slices import Foreground, Modality, TumourSliceParams, collect

if TYPE_CHECKING:
    from monai.apps import DecathlonDataset

# BraTS 2020/2021: 1 necrotic and non-enhancing core, 2 oedema, 4 enhancing tumour.
_BRATS_LABELS: dict[Foreground, tuple[int, ...]] = {"whole_tumour": (1, 2, 4), "tumour_core": (1, 4), "enhancing": (4,)}
# MSD Task01 renumbered the same regions: 1 oedema, 2 non-enhancing tumour, 3 enhancing tumour.
_MSD_LABELS: dict[Foreground, tuple[int, ...]] = {"whole_tumour": (1, 2, 3), "tumour_core": (2, 3), "enhancing": (3,)}
# MSD stores the four modalities as channels of one 4D file, in this order (its dataset.json).
_MSD_CHANNELS: tuple[Modality, ...] = ("flair", "t1", "t1ce", "t2")
_MSD_TASK = "Task01_BrainTumour"
_BRATS_LAYOUT = (
    "ROOT/<case>/<case>_flair.nii.gz, _t1.nii.gz, _t1ce.nii.gz, _t2.nii.gz and _seg.nii.gz (or .nii), "
    "e.g. MICCAI_BraTS2020_TrainingData/BraTS20_Training_001/BraTS20_Training_001_flair.nii.gz "
    "or BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_seg.nii.gz"
)
_MSD_LAYOUT = (
    f"ROOT/{_MSD_TASK}/dataset.json, ROOT/{_MSD_TASK}/imagesTr/BRATS_001.nii.gz, ... "
    f"and ROOT/{_MSD_TASK}/labelsTr/BRATS_001.nii.gz, ..."
)
_FIRST = 5  # bad files named in an error message
# A known flaw of some BraTS 2020 copies, worth a hint when that file is the one missing.
_MISNAMED_355 = " Some copies of BraTS 2020 name it W39_1998.09.19_Segm.nii; rename that file to BraTS20_Training_355_seg.nii."


class BratsParams(TumourSliceParams):
    """Parameters of ``brats``."""

    path: str = Field(
        description="Folder of case folders, relative to the data root, e.g. MICCAI_BraTS2020_TrainingData or "
        "BraTS2021_Training_Data."
    )


class MSDBrainTumourParams(TumourSliceParams):
    """Parameters of ``msd_brain_tumour``."""

    path: str = Field(".", description=f"Folder that holds {_MSD_TASK}/, relative to the data root.")
    download: bool = Field(
        False,
        description=f"Download and extract {_MSD_TASK} (about 7 GB) into path when it is not there yet. "
        "Off by default: nothing is fetched unless asked for.",
    )


# --- brats: case folders ---------------------------------------------------------------------


def _case_file(case_dir: Path, suffix: str) -> Path | None:
    """``<case>_<suffix>.nii.gz``, or the uncompressed ``.nii`` some redistributions ship."""
    for extension in (".nii.gz", ".nii"):
        path = case_dir / f"{case_dir.name}_{suffix}{extension}"
        if path.is_file():
            return path
    return None


def _brats_cases(root: Path, modalities: tuple[str, ...], limit: int | None) -> list[tuple[Path, list[Path]]]:
    """Each case folder with its modality files then its seg file, or a PluginError naming what is missing."""
    if not root.is_dir():
        raise PluginError(f"brats: the folder {root} does not exist. Expected the BraTS case folders there: {_BRATS_LAYOUT}.")
    case_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))[:limit]
    if not case_dirs:
        raise PluginError(
            f"brats: {root} holds no case folders. Expected {_BRATS_LAYOUT}; point path at the folder that "
            "contains the case folders, not at one case."
        )
    suffixes = (*modalities, "seg")
    files = {case_dir: [_case_file(case_dir, suffix) for suffix in suffixes] for case_dir in case_dirs}
    missing = [
        f"{case_dir.name}/{case_dir.name}_{suffix}.nii.gz"
        for case_dir, paths in files.items()
        for suffix, path in zip(suffixes, paths, strict=True)
        if path is None
    ]
    if missing:
        raise PluginError(
            f"brats: {len(missing)} file(s) missing under {root}: {', '.join(missing[:_FIRST])}"
            + (", ..." if len(missing) > _FIRST else "")
            + f". Every case folder needs {_BRATS_LAYOUT}."
            + (_MISNAMED_355 if any("BraTS20_Training_355_seg" in m for m in missing) else "")
        )
    return [(case_dir, [path for path in paths if path is not None]) for case_dir, paths in files.items()]


def _read_ras(path: Path, case: str) -> Tensor:
    """A 3D NIfTI volume as float32 [X, Y, Z] in RAS order."""
    try:
        image = nib.as_closest_canonical(nib.load(path))
        data = image.get_fdata(dtype=np.float32)
    except Exception as err:  # nibabel raises many types for bad files: ImageFileError, OSError, EOFError, zlib...
        raise PluginError(
            f"brats: cannot read {path.name} of case {case} ({path}): {err}. Re-extract or re-download it."
        ) from err
    if data.ndim != 3:
        raise PluginError(f"brats: {path} of case {case} has shape {data.shape}; BraTS volumes are 3D.")
    # Reorienting flips axes as negative-stride views, which torch cannot wrap.
    return torch.from_numpy(np.ascontiguousarray(data))


def _brats_loader(case_dir: Path, files: list[Path]) -> Callable[[], tuple[Tensor, Tensor]]:
    """Reads a case on call: its modality volumes stacked [C, X, Y, Z] and its labels [X, Y, Z]."""

    def load() -> tuple[Tensor, Tensor]:
        *volumes, seg = (_read_ras(path, case_dir.name) for path in files)
        if any(v.shape != seg.shape for v in volumes):
            shapes = ", ".join(f"{p.name} {tuple(v.shape)}" for p, v in zip(files, [*volumes, seg], strict=True))
            raise PluginError(f"brats: the volumes of case {case_dir.name} differ in shape: {shapes}.")
        return torch.stack(volumes), seg.round().to(torch.int16)

    return load


def brats(params: BratsParams, spec: DataSpec) -> ImageMaskSet:
    """Axial slices of BraTS 2020/2021 cases; channels are the chosen modalities, the mask the chosen tumour region."""
    root = spec.resolve(params.path)
    cases = [
        (case_dir.name, _brats_loader(case_dir, files)) for case_dir, files in _brats_cases(root, params.modalities, params.limit)
    ]
    return collect(cases, _BRATS_LABELS, params, spec, str(root))


# --- msd_brain_tumour: monai's DecathlonDataset ----------------------------------------------


def _msd_missing(task_dir: Path) -> str | None:
    """What of the MSD layout is missing under ``task_dir``, or None."""
    if not task_dir.is_dir():
        return f"the folder {task_dir} does not exist"
    if not (task_dir / "dataset.json").is_file():
        return f"{task_dir} has no dataset.json"
    return None


def _msd_dataset(root: Path, download: bool) -> DecathlonDataset:
    """monai's DecathlonDataset over every labelled case, loading RAS [C, X, Y, Z] volumes on access."""
    # Imported here because importing monai takes seconds, and every plugin module is imported
    # whenever benchsuite starts; only suites that use this dataset should pay for it.
    try:
        from monai.apps import DecathlonDataset
        from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd
    except ImportError:
        raise PluginError(
            "msd_brain_tumour reads the Decathlon through MONAI, which is not installed: "
            'pip install -e ".[msd]" in the benchsuite checkout'
        ) from None

    task_dir = root / _MSD_TASK
    problem = _msd_missing(task_dir)
    if problem and not download:
        raise PluginError(
            f"msd_brain_tumour: {problem}. Put the Medical Segmentation Decathlon's {_MSD_TASK} folder (from "
            f"{_MSD_TASK}.tar) in {root}, laid out as {_MSD_LAYOUT}, or set download: true to fetch it (about 7 GB)."
        )
    if download:
        root.mkdir(parents=True, exist_ok=True)
    keys = ["image", "label"]
    with warnings.catch_warnings():
        # LoadImaged sets up every reader monai has, DICOM included, and that one warns about an
        # optional GPU decoder; these files are NIfTI, so the warning says nothing about them.
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        transform = Compose(
            [
                LoadImaged(keys, reader="NibabelReader", image_only=True),
                EnsureChannelFirstd(keys),
                Orientationd(keys, axcodes="RAS", labels=None),
            ]
        )
    try:
        return DecathlonDataset(
            root_dir=root,
            task=_MSD_TASK,
            section="training",
            transform=transform,
            # monai re-downloads when the tar is gone even if the folder is there; never do that.
            download=download and problem is not None,
            val_frac=0.0,  # the core draws the split; "training" then holds every labelled case
            cache_rate=0.0,  # load on access, so that limit reads only the cases it uses
            progress=download,
        )
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        raise PluginError(
            f"msd_brain_tumour: cannot open {task_dir}: {err!r}. Expected {_MSD_LAYOUT}, with dataset.json as "
            "distributed in the Decathlon's tar."
        ) from err


def msd_brain_tumour(params: MSDBrainTumourParams, spec: DataSpec) -> ImageMaskSet:
    """Axial slices of the Decathlon's BraTS cases, read through monai's DecathlonDataset."""
    root = spec.resolve(params.path)
    dataset = _msd_dataset(root, params.download)
    order = sorted(range(len(dataset)), key=lambda i: dataset.data[i]["image"])[: params.limit]
    missing = [dataset.data[i][key] for i in order for key in ("image", "label") if not Path(dataset.data[i][key]).is_file()]
    if missing:
        raise PluginError(
            f"msd_brain_tumour: {len(missing)} file(s) listed in {root / _MSD_TASK / 'dataset.json'} are missing: "
            f"{', '.join(missing[:_FIRST])}{', ...' if len(missing) > _FIRST else ''}. Expected {_MSD_LAYOUT}."
        )
    channels = [_MSD_CHANNELS.index(m) for m in params.modalities]

    def loader(i: int) -> Callable[[], tuple[Tensor, Tensor]]:
        def load() -> tuple[Tensor, Tensor]:
            try:
                item = dataset[i]
            except Exception as err:  # monai wraps reader errors in RuntimeError with the transform chain
                raise PluginError(
                    f"msd_brain_tumour: cannot read {dataset.data[i]['image']} or its label: {err}. Re-extract {_MSD_TASK}."
                ) from err
            image, label = item["image"].as_tensor(), item["label"].as_tensor()
            if image.shape[0] != len(_MSD_CHANNELS):
                raise PluginError(
                    f"msd_brain_tumour: {dataset.data[i]['image']} has {image.shape[0]} channel(s); {_MSD_TASK} "
                    f"images hold 4 ({', '.join(_MSD_CHANNELS)})."
                )
            return image[channels].float(), label[0].round().to(torch.int16)

        return load

    cases = [(Path(dataset.data[i]["image"]).name.removesuffix(".nii.gz"), loader(i)) for i in order]
    return collect(cases, _MSD_LABELS, params, spec, str(root / _MSD_TASK))


@hookimpl
def benchsuite_register_datasets(registry: Registry[DatasetFactory]) -> None:
    """Register ``brats`` and ``msd_brain_tumour``."""
    registry.add(
        "brats",
        brats,
        params=BratsParams,
        description="Axial MRI slices of BraTS 2020/2021 case folders; channels = modalities, mask = a tumour region.",
    )
    registry.add(
        "msd_brain_tumour",
        msd_brain_tumour,
        params=MSDBrainTumourParams,
        description=f"Axial MRI slices of the Decathlon's {_MSD_TASK} via monai; same options as brats.",
    )
