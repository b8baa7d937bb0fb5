"""The augmentation contract: the two views of a batch, and a random augmentation's draw."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

Draw = dict[str, Tensor]
"""A random augmentation's random parameters for a batch: tensors whose first dimension indexes the
images, so ``{name: t[index] for name, t in draw.items()}`` is the draw of the rows ``index``."""


class Augmentation(Protocol):
    """Makes the two views of a batch in one call on the batch's device.

    A deterministic augmentation (``rotation``: the pair ``(x, R_theta x)``) is ``augment(x,
    theta)``. A random one also has ``draw(x, theta, generator)``, which draws the random
    parameters of every image of ``x`` and view as a :data:`Draw`, and is called as ``augment(x,
    theta, draw)``: given its draw, an augmentation is a deterministic function of ``x``. The core
    draws afresh for every training batch, from a generator seeded by the cell, and once per
    evaluation image for saliency, which then explains the pair objective through that one fixed
    draw (docs/design.md).

    A deterministic augmentation may also offer ``stacked(x, thetas)`` for the K models of a
    stacked group: ``x`` [K, N, C, H, W] and one theta per model, returning the two views of each
    model's batch as ``self(x[k], thetas[k])`` would, in fewer kernels. Without it the core calls
    the augmentation once per model.
    """

    def __call__(self, x: Tensor, theta: float) -> tuple[Tensor, Tensor]:
        """Return the two views of ``x`` [N, C, H, W] (a random augmentation takes its ``draw`` too).

        Must be differentiable with respect to ``x``: saliency differentiates through it.
        """
