"""The perturbation saliency method ``occlusion`` (Zeiler & Fergus 2014), as Captum's ``Occlusion`` defines it.

Like the gradient methods (``gradients.py``) it explains the cell's objective, the pair
similarity cos(f(v1), f(v2)), as a function of the unaugmented image, and returns non-negative
maps [N, H, W] in its coordinates: the drop of the objective when a window of the image is
replaced by ``fill``, averaged over the windows that cover a pixel; the magnitude of that mean is
the map. Forward passes only, no gradient; stacked over the K models of a group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field, model_validator
from torch import Tensor

from benchsuite.api import Params, PluginError, Registry, SaliencyFactory, StackedObjective
from benchsuite_plugins.saliency.gradients import Stackable


class OcclusionParams(Params):
    """Parameters of ``occlusion``."""

    window: int = Field(4, ge=1, le=4096, description="Side of the square window filled, in pixels (at most the image's side).")
    stride: int = Field(
        2, ge=1, le=4096, description="Step between window positions, in pixels; at most window, so every pixel is covered."
    )
    fill: float = Field(0.0, ge=-1e6, le=1e6, description="Value the window's pixels, every channel, are replaced with.")
    perturbations_per_eval: int = Field(
        16,
        ge=1,
        le=65_536,
        description="Window positions scored in one forward pass (times the images); never changes the result.",
    )

    @model_validator(mode="after")
    def _windows_touch(self) -> OcclusionParams:
        if self.stride > self.window:
            raise ValueError(
                f"stride {self.stride} is larger than window {self.window}: the pixels between windows would never be "
                "occluded and have no attribution; use a stride of at most the window"
            )
        return self


class Occlusion(Stackable):
    """|Mean drop of f when a window covering the pixel is filled|: Captum's Occlusion, stacked.

    Window positions are Captum's: starts every ``stride`` pixels, ceil((H - window) / stride) + 1
    per axis, the last one cut off at the border; a window spans every channel, so the map is per
    pixel. ``stacked`` scores the same occluded rows with all K models of a stacked group in one
    pass, which Captum cannot; a test checks the one-model case against Captum's ``Occlusion``.
    """

    def __init__(self, params: OcclusionParams) -> None:
        self.params = params

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models for ``x`` [N, C, H, W]; no randomness."""
        p, k_models = self.params, len(generators)
        images = x.detach()
        n, _, h, w = images.shape
        size = min(p.window, h, w)
        if p.stride > size:  # the window was cut to the image's shorter side
            raise PluginError(
                f"occlusion: the window is cut to the image's shorter side, {size} px, which is less than the stride "
                f"{p.stride}, so some pixels would never be occluded; use a stride of at most {size}"
            )
        tops, lefts = _starts(h, size, p.stride, x.device), _starts(w, size, p.stride, x.device)
        # Window q has its top-left corner at (tops[q // len(lefts)], lefts[q % len(lefts)]).
        corners = torch.cartesian_prod(tops, lefts)
        fill = torch.as_tensor(p.fill, dtype=x.dtype, device=x.device)
        index = torch.arange(n, device=x.device)
        total = torch.zeros((k_models, n, h, w), device=x.device, dtype=x.dtype)
        with torch.no_grad():
            intact = objective(images.expand(k_models, *images.shape), index)  # [K, N]
            for chunk in corners.split(p.perturbations_per_eval):
                windows = _spans(chunk[:, 0], size, h)[:, :, None] & _spans(chunk[:, 1], size, w)[:, None, :]  # [Q, H, W]
                # Row (window q, image i) is image i with window q filled, in every channel.
                rows = torch.where(windows[:, None, None], fill, images).reshape(-1, *images.shape[1:])
                scores = objective(rows.expand(k_models, *rows.shape), index.repeat(len(chunk)))
                drop = intact.unsqueeze(1) - scores.view(k_models, len(chunk), n)  # [K, Q, N]
                total += torch.einsum("kqn,qhw->knhw", drop, windows.to(x.dtype))
        # The windows are a grid, so a pixel's count is (windows over its row) x (windows over its column).
        coverage = _spans(tops, size, h).sum(dim=0)[:, None] * _spans(lefts, size, w).sum(dim=0)[None, :]
        return (total / coverage.to(x.dtype)).abs()


def _starts(length: int, size: int, stride: int, device: torch.device) -> Tensor:
    """Captum's window starts along an axis: every ``stride`` pixels, ceil((length - size) / stride) + 1 of them."""
    return torch.arange(math.ceil((length - size) / stride) + 1, device=device) * stride


def _spans(starts: Tensor, size: int, length: int) -> Tensor:
    """Bool [len(starts), length]: which pixels of the axis the window starting at each start covers."""
    pixel = torch.arange(length, device=starts.device)
    return (pixel >= starts[:, None]) & (pixel < starts[:, None] + size)


def register(registry: Registry[SaliencyFactory]) -> None:
    """Register ``occlusion``; called by the ``attribution`` entry point (``__init__.py``)."""
    registry.add(
        "occlusion",
        Occlusion,
        params=OcclusionParams,
        description="Occlusion: the objective's change when a sliding window is filled, per pixel (Captum's definition).",
    )
