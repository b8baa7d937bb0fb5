"""A dataset plugin: bright squares on a dark background, the square being the foreground mask."""

import torch
from pydantic import Field

from benchsuite.api import DatasetFactory, DataSpec, ImageMaskSet, Params, Registry, hookimpl


class SquaresParams(Params):
    n_images: int = Field(64, ge=4, le=100_000, description="How many images to draw.")
    seed: int = Field(0, ge=0, description="Seed of the random squares.")


def bright_squares(params: SquaresParams, spec: DataSpec) -> ImageMaskSet:
    g = torch.Generator().manual_seed(params.seed)
    n, size = params.n_images, spec.size
    side = torch.randint(size // 4, size // 2, (n, 1, 1), generator=g)
    top = (torch.rand(n, 1, 1, generator=g) * (size - side)).long()
    left = (torch.rand(n, 1, 1, generator=g) * (size - side)).long()
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)
    masks = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    images = 0.2 * torch.rand(n, size, size, generator=g) + 0.7 * masks
    return ImageMaskSet(images=images.unsqueeze(1), masks=masks)


@hookimpl
def benchsuite_register_datasets(registry: Registry[DatasetFactory]) -> None:
    registry.add("bright_squares", bright_squares, params=SquaresParams, description="Bright squares on noise.")
