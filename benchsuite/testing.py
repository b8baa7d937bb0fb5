"""Conformance checks that a plugin author runs on their own dataset or metric plugin.

Each check finds the component through the installed entry points, exactly as a suite would,
and raises ``AssertionError`` with a message naming the broken rule::

    from benchsuite.testing import check_dataset, check_metric

    def test_bright_squares_conforms():
        check_dataset("bright_squares", {"n_images": 8})

    def test_pointing_game_conforms():
        check_metric("pointing_game")
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchsuite.api import DataSpec, ImageMaskSet, MetricInputs, PluginError, check_metric_output
from benchsuite.engine.registry import load_plugins


@contextlib.contextmanager
def _contract(what: str) -> Iterator[None]:
    # The contracts live in benchsuite.api and the registry, where the core applies them too;
    # here a broken one is a failed check rather than an error.
    try:
        yield
    except PluginError as exc:
        raise AssertionError(f"{what} breaks the plugin contract: {exc}") from None


def _component(kind: str, name: str, params: dict[str, Any] | None) -> tuple[Any, Any]:
    registry = load_plugins()
    with _contract(f"{kind} '{name}'"):
        return registry.get(kind, name), registry.parse_params(kind, name, params or {})


def check_dataset(
    name: str, params: dict[str, Any] | None = None, *, size: int = 16, data_root: Path | None = None
) -> ImageMaskSet:
    """Build dataset ``name`` twice at ``size`` pixels and check the dataset contract; returns the data.

    The contract of :class:`benchsuite.api.ImageMaskSet` (at least one image, finite float pixels
    in [0, 1], bool masks of the same size or none), images of ``size`` x ``size`` pixels, at least
    one foreground pixel somewhere when there are masks, and two builds that give identical tensors.
    """
    component, parsed = _component("datasets", name, params)
    spec = DataSpec(size=size, data_root=data_root or Path.cwd())
    with _contract(f"dataset '{name}'"):
        first, second = component.factory(parsed, spec), component.factory(parsed, spec)
        assert isinstance(first, ImageMaskSet), f"dataset '{name}' returned {type(first).__name__}, not an ImageMaskSet"
        first.check_size(spec)
    assert first.masks is None or first.masks.any(), "every mask is empty: there is no foreground to compare saliency with"
    same_masks = (
        second.masks is None if first.masks is None else second.masks is not None and torch.equal(first.masks, second.masks)
    )
    assert torch.equal(first.images, second.images) and same_masks, (
        f"dataset '{name}' is not deterministic: two builds with the same params differ"
    )
    return first


class _TinyEncoder(nn.Module):
    """A one-convolution encoder with ``feature_map``, for metrics that read ``MetricInputs.encoder``."""

    def __init__(self, in_channels: int, out_dim: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_dim, 3, stride=2, padding=1)
        self.out_dim = out_dim

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


class _TinyMethod(nn.Module):
    """A tiny trained-method stand-in: ``encoder`` and ``embed``, for metrics that read the objective or explain."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class _QuarterTurnSimilarity:
    """cos(f(x), f(rot90 x)) of a method: the objective ``_inputs`` passes, an ``api.Objective``."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        turned = torch.rot90(rows, 1, dims=(-2, -1))
        return torch.cosine_similarity(self.model.embed(rows), self.model.embed(turned), dim=1)


def _gradient_maps(method: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """|d objective / d x|, channel maximum: the maps ``_inputs``' ``explain`` gives for ``method``."""
    x = images.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_QuarterTurnSimilarity(method)(x, torch.arange(len(x))).sum(), x)
    return grad.abs().amax(dim=1)


def _inputs(saliency: torch.Tensor, masks: torch.Tensor) -> MetricInputs:
    n, h, w = saliency.shape
    images = torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(1))
    with torch.random.fork_rng(devices=[]):  # a fixed encoder, and the caller's random state untouched
        torch.manual_seed(1)
        encoder = _TinyEncoder(images.shape[1]).eval()
    method = _TinyMethod(encoder).eval()
    return MetricInputs(
        saliency=saliency,
        masks=masks,
        images=images,
        epoch_loss=torch.tensor([2.0, 1.5, 1.0]),
        theta=30.0,
        train_images=images,
        embed=lambda x: x.flatten(1),
        augment=lambda x: (x, torch.rot90(x, 1, dims=(-2, -1))),
        seed=0,
        represent=lambda x: x.flatten(1),
        train_masks=masks,
        encoder=encoder,
        objective=_QuarterTurnSimilarity(method),
        explain=lambda other: _gradient_maps(other, images),
    )


def check_metric(name: str, params: dict[str, Any] | None = None) -> None:
    """Call metric ``name`` on a small batch and check the metric contract.

    ``scope`` is "image" or "cell"; values have shape [N] or []; an image metric gives finite
    values on ordinary images and NaN (never a silent number) for an image with an empty mask
    (unless it sets ``reads_masks = False``) or an undefined, NaN map (unless it sets
    ``reads_saliency = False``).
    """
    component, parsed = _component("metrics", name, params)
    metric = component.factory(parsed)
    g = torch.Generator().manual_seed(0)
    saliency = torch.rand(4, 12, 12, generator=g)
    masks = torch.zeros(4, 12, 12, dtype=torch.bool)
    masks[:, 3:8, 4:9] = True
    masks[2] = False  # image 2: empty mask
    saliency[3] = float("nan")  # image 3: undefined map
    with _contract(f"metric '{name}'"):
        values = check_metric_output(metric, metric(_inputs(saliency, masks)), len(masks))
    if metric.scope == "cell":
        return
    assert torch.isfinite(values[:2]).all(), f"metric '{name}' is not finite on ordinary images: {values[:2].tolist()}"
    if getattr(metric, "reads_masks", True):
        assert values[2].isnan(), f"metric '{name}' gave {values[2].item()} for an empty mask instead of NaN"
    if getattr(metric, "reads_saliency", True):
        assert values[3].isnan(), f"metric '{name}' gave {values[3].item()} for an undefined (NaN) map instead of NaN"
