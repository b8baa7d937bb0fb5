"""The augmentation contract: the two views of a batch, and a random augmentation's draw."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

Draw = dict[str, Tensor]
"""A random augmentation's random parameters for a batch: tensors whose first dimension indexes the
images, so ``{name: t[index] for name, t in draw.items()}`` is the draw of the rows ``index``."""


class Augmentation(Protocol):
    """Makes the two views of a batch in one call on the batch's device.

    A deterministic augmentation (``rotation``: the pair ``(x, R_theta x)``) is ``augment(x,
    theta)``; a random one is a :class:`RandomAugmentation`.

    A deterministic augmentation may also offer ``stacked(x, thetas)`` for the K models of a
    stacked group: ``x`` [K, N, C, H, W] and one theta per model, returning the two views of each
    model's batch as ``self(x[k], thetas[k])`` would, in fewer kernels. Without it the core calls
    the augmentation once per model.
    """

    def __call__(self, x: Tensor, theta: float) -> tuple[Tensor, Tensor]:
        """Return the two views of ``x`` [N, C, H, W].

        Must be differentiable with respect to ``x``: saliency differentiates through it.
        """


class RandomAugmentation(Protocol):
    """An augmentation whose views are random: it draws their parameters, then makes them from the draw.

    ``draw(x, theta, generator)`` draws the random parameters of every image of ``x`` and view as
    a :data:`Draw`, and ``augment(x, theta, draw)`` makes the views: given its draw, the
    augmentation is a deterministic function of ``x``. The core draws afresh for every training
    batch, from a generator seeded by the cell, and once per evaluation image for saliency, which
    then explains the pair objective through that one fixed draw (docs/design.md).
    """

    def draw(self, x: Tensor, theta: float, generator: torch.Generator) -> Draw:
        """The random parameters of both views of every image of ``x`` [N, C, H, W], from ``generator``."""

    def __call__(self, x: Tensor, theta: float, draw: Draw) -> tuple[Tensor, Tensor]:
        """Return the two views of ``x`` [N, C, H, W] that ``draw`` describes; differentiable with respect to ``x``."""


AnyAugmentation = Augmentation | RandomAugmentation
"""What an augmentation factory returns, deterministic or random; the core tells them apart by ``draw``."""
