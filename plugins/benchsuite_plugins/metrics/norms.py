"""Embedding norms: how large the encoder's representation of an image is, and whether that flags the unexpected.

The norm of an unnormalised embedding carries information the cosine of a contrastive loss
ignores: it governs how far a gradient step moves the normalised embedding (convergence), and
it has been reported to be smaller for unexpected inputs (confidence). ``embedding_norm`` reports the L2 norm of each
held-out image's representation (``SSPMethod.represent``: the encoder's output, before any head
or normalisation). ``norm_ood_auroc`` asks how well a small norm separates the held-out images
from out-of-distribution controls made from them: the AUROC of the negated norm as a score for
"control", 0.5 when the norm does not tell them apart and 1 when every control has a smaller
norm than every real image.

The controls need no other dataset: ``shuffled`` permutes each image's pixels (same intensity
histogram, no structure), ``noise`` draws uniform noise in each image's intensity range. Both
come from a generator seeded by the cell's seed, on the cell's device.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from benchsuite.api import MetricFactory, MetricInputs, Params, Registry, hookimpl


class NormOodParams(Params):
    """Parameters of ``norm_ood_auroc``."""

    control: Literal["shuffled", "noise"] = Field(
        "shuffled",
        description="Out-of-distribution control made from each held-out image: its pixels shuffled (same histogram, "
        "no structure), or uniform noise in its intensity range.",
    )


class EmbeddingNorm:
    """L2 norm of each held-out image's representation, per image."""

    scope: Literal["image", "cell"] = "image"
    # Defined for every image, whatever its mask or map.
    reads_saliency = False
    reads_masks = False

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        return inputs.represent(inputs.images).flatten(1).float().norm(dim=1)


def controls(images: Tensor, kind: str, generator: torch.Generator) -> Tensor:
    """One out-of-distribution control per image [N, C, H, W], drawn by ``generator`` (on the images' device)."""
    flat = images.flatten(1)
    if kind == "shuffled":
        order = torch.rand(flat.shape, generator=generator, device=images.device).argsort(dim=1)
        return flat.gather(1, order).view_as(images)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    noise = torch.rand(flat.shape, generator=generator, device=images.device)
    return (low[:, None] + noise * (high - low)[:, None]).view_as(images)


def auroc(positives: Tensor, negatives: Tensor) -> Tensor:
    """P(score of a positive > score of a negative) + P(tie) / 2: the Mann-Whitney form of the AUROC."""
    greater = (positives[:, None] > negatives[None, :]).double().mean()
    ties = (positives[:, None] == negatives[None, :]).double().mean()
    return greater + ties / 2


class NormOodAuroc:
    """AUROC of a small norm as the flag for a control image against the held-out images, per cell."""

    scope: Literal["image", "cell"] = "cell"
    higher_is_better: bool | None = True
    reads_saliency = False
    reads_masks = False

    def __init__(self, params: NormOodParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        generator = torch.Generator(device=inputs.images.device).manual_seed(inputs.seed)
        fake = controls(inputs.images, self.params.control, generator)
        real_norm = inputs.represent(inputs.images).flatten(1).float().norm(dim=1)
        fake_norm = inputs.represent(fake).flatten(1).float().norm(dim=1)
        return auroc(-fake_norm, -real_norm)


@hookimpl
def benchsuite_register_metrics(registry: Registry[MetricFactory]) -> None:
    """Register the embedding-norm metrics."""
    registry.add(
        "embedding_norm", EmbeddingNorm, description="L2 norm of the encoder's representation of each held-out image, per image."
    )
    registry.add(
        "norm_ood_auroc",
        NormOodAuroc,
        params=NormOodParams,
        description="AUROC of a small representation norm flagging shuffled-pixel (or noise) controls among held-out images.",
    )
