"""What a cell of ``throughput.py`` trains (a study's ``Setting``, a timed ``Series`` of it, the
model it builds) and how a run of it is timed on a device; see that script's docstring.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from benchsuite.engine.registry import default_registry
from benchsuite.engine.training import NonFiniteLoss
from benchsuite_plugins.encoders.resnet import ResNetParams
from benchsuite_plugins.encoders.small_cnn import SmallCNN, SmallCNNParams
from benchsuite_plugins.ssp_methods.moco import MoCoV2, MoCoV2Params


@dataclass(frozen=True)
class Setting:
    """What one cell of a study trains: the numbers a projection scales to."""

    label: str
    encoder: str  # "small_cnn" (width 16, depth 3) or "resnet18"
    size: int  # pixels
    batch: int
    images: int  # training images per cell
    epochs: int
    eval_images: int  # scored by SmoothGrad
    samples: int  # SmoothGrad's noisy copies per image
    method: tuple[tuple[str, object], ...] = ()  # further MoCoV2Params

    @property
    def steps(self) -> int:
        """Optimiser steps of one cell."""
        return self.epochs * (self.images // self.batch)


SUITE = Setting(
    label="default suite: small_cnn 32 px, 144 images, 40 epochs of batch 32, MoCo v2 (Adam)",
    encoder="small_cnn",
    size=32,
    batch=32,
    images=144,  # 160 per dataset, 16 held out
    epochs=40,
    eval_images=16,
    samples=8,
    method=(("optimizer", "adam"), ("lr", 0.001), ("queue_size", 256)),
)
CURVE = Setting(
    label="curve: resnet18 64 px, 1,024 images, 5 epochs of batch 64, MoCo v2 (SGD)",
    encoder="resnet18",
    size=64,
    batch=64,
    images=1024,
    epochs=5,  # MoCo v2's defaults otherwise, as suites/curve-3600.yaml
    eval_images=64,
    samples=25,
)


@dataclass(frozen=True)
class Series:
    """One table: a setting, how much of it a timed run trains, the K tried and the precision."""

    name: str
    setting: Setting
    images: int  # images of a timed epoch (the setting's, or fewer: fewer steps)
    epochs: int  # epochs of a timed run
    ks: tuple[int, ...]
    eval_images: int | None = None  # SmoothGrad timed on fewer images than the setting's, scaled up
    size: int | None = None  # --quick only: smaller than the setting's
    batch: int | None = None

    @property
    def px(self) -> int:
        return self.size or self.setting.size

    @property
    def batch_size(self) -> int:
        return self.batch or self.setting.batch

    @property
    def steps(self) -> int:
        """Steps of one timed run."""
        return self.epochs * (self.images // self.batch_size)


def resnet18(in_channels: int, size: int) -> torch.nn.Module:
    return default_registry().get("encoders", "resnet18").factory(ResNetParams(), in_channels, size)


def build(series: Series, device: torch.device, seed: int = 0) -> MoCoV2:
    torch.manual_seed(seed)
    small = series.setting.encoder == "small_cnn"
    encoder = SmallCNN(SmallCNNParams(width=16, depth=3), 1) if small else resnet18(1, series.setting.size)
    params = MoCoV2Params(epochs=series.epochs, batch_size=series.batch_size, **dict(series.setting.method))
    return MoCoV2(params, encoder).to(device)


# --------------------------------------------------------------------------------------------
# Timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    with contextlib.suppress(NonFiniteLoss):  # a diverged toy run still timed its steps
        run()
    sync(device)
    return time.perf_counter() - start


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@contextlib.contextmanager
def fresh_memory(device: torch.device) -> Iterator[None]:
    """Start from an empty CUDA cache with reset peak statistics, and empty it again afterwards."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    finally:
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
