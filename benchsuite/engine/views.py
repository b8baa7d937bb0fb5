"""How the core turns a cell's augmentation into pairs of views: a fresh draw per training batch,
one fixed draw per evaluation image for saliency.

A deterministic augmentation (``rotation``) is called as ``augment(x, theta)`` everywhere. A
random one (``api.RandomAugmentation``, with ``draw``) is called as ``augment(x, theta, draw)``: in
training with a new draw for every batch, for saliency with one draw per evaluation image made
once, so that the objective saliency explains is a fixed, differentiable function of the image
(:class:`FixedPair`). Each use has its own generator on the cell's device, seeded by the cell's
seed and the use (:func:`draw_generator`), apart from the streams of batch order and SmoothGrad
noise, so a deterministic augmentation draws nothing from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeGuard

import numpy as np
import torch
from torch import Tensor

from benchsuite.api import AnyAugmentation, Draw, RandomAugmentation

Use = Literal["training", "saliency", "metrics", "before training", "before training order"]
_USES: dict[str, int] = {"training": 1, "saliency": 2, "metrics": 3, "before training": 4, "before training order": 5}


def is_random(augment: AnyAugmentation) -> TypeGuard[RandomAugmentation]:
    """Whether ``augment`` draws random parameters (has ``draw``) and takes them as a third argument."""
    return callable(getattr(augment, "draw", None))


def draw_generator(seed: int, use: Use, device: torch.device) -> torch.Generator:
    """The generator of a cell's augmentation draws for one use, on ``device``.

    Seeded through numpy's ``SeedSequence`` of (seed, use), so the streams of different seeds
    and uses do not overlap however the seeds are chosen.
    """
    (state,) = np.random.SeedSequence([seed, _USES[use]]).generate_state(1, dtype=np.uint64)
    return torch.Generator(device=device).manual_seed(int(state))


def fresh_pair(augment: AnyAugmentation, x: Tensor, theta: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """The two views of ``x``; a random augmentation draws new parameters from ``generator`` first."""
    if not is_random(augment):
        return augment(x, theta)
    if generator is None:
        raise ValueError("a random augmentation needs a generator for its draws")
    return augment(x, theta, augment.draw(x, theta, generator))


def stacked_fresh_pairs(
    augment: AnyAugmentation, x: Tensor, thetas: Sequence[float], generators: Sequence[torch.Generator] | None
) -> tuple[Tensor, Tensor]:
    """The views of K models' batches ``x`` [K, N, C, H, W], model k's as ``fresh_pair(augment, x[k], thetas[k], generators[k])``.

    A deterministic augmentation's ``stacked`` makes them in one call when it has one; otherwise
    (always, for a random augmentation, whose draws are each model's own) one call per model.
    """
    stacked = getattr(augment, "stacked", None)
    if stacked is not None and not is_random(augment):
        return stacked(x, thetas)
    return _stack(
        [fresh_pair(augment, x[k], theta, None if generators is None else generators[k]) for k, theta in enumerate(thetas)]
    )


def _stack(views: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])


class FixedPair:
    """A cell's pair of its evaluation images, each image with one draw made once: ``pair(rows, index)``.

    ``index[r]`` says which evaluation image row ``r`` was made from, and the row gets that
    image's draw; for a deterministic augmentation it is ignored. So saliency explains one
    deterministic function of each image, differentiated through the augmentation, and every
    noisy copy or interpolation step of an image sees the same crop, flip and jitter.
    """

    def __init__(self, augment: AnyAugmentation, images: Tensor, theta: float, generator: torch.Generator):
        self.augment, self.theta = augment, theta
        self.draw: Draw | None = augment.draw(images, theta, generator) if is_random(augment) else None

    def __call__(self, rows: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        if self.draw is None:
            return self.augment(rows, self.theta)
        return self.augment(rows, self.theta, {name: t[index] for name, t in self.draw.items()})


def stacked_fixed_pairs(pairs: Sequence[FixedPair], rows: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """The views of K models' rows [K, R, C, H, W], model k's as ``pairs[k](rows[k], index)``.

    In one call of the augmentation's ``stacked`` when it is deterministic and has one, else one
    call per model.
    """
    augment = pairs[0].augment
    stacked = getattr(augment, "stacked", None)
    if stacked is not None and not is_random(augment):
        return stacked(rows, [pair.theta for pair in pairs])
    return _stack([pair(rows[k], index) for k, pair in enumerate(pairs)])
