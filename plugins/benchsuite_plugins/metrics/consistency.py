"""Per-sample consistency: how similar the embeddings of an image's two views stay.

In semi-supervised and active learning with weak/strong augmentation (FixMatch and its
successors), an image whose strongly augmented view lands far from its weak view is one the
model is unsure of; the per-sample consistency ranks images by it. ``view_consistency`` is the
cosine similarity of the frozen embeddings of each held-out image's two views, made by the
cell's augmentation (``random_views`` with ``weak`` set gives the weak/strong pair), averaged
over ``draws`` independent draws of the views. The draws come from the generator the core
seeds per cell for metrics, so the values are reproducible.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from benchsuite.api import MetricFactory, MetricInputs, Params, Registry, hookimpl


class ViewConsistencyParams(Params):
    """Parameters of ``view_consistency``."""

    draws: int = Field(4, ge=1, le=256, description="Independent draws of the two views averaged per image.")
    space: Literal["embed", "represent"] = Field(
        "embed",
        description="Compare the method's embedding (what its loss makes similar) or the encoder's representation "
        "before any head (what a downstream task reads).",
    )


class ViewConsistency:
    """Cosine similarity of the two views' embeddings of each held-out image, mean over draws; per image."""

    scope: Literal["image", "cell"] = "image"
    # Defined for every image, whatever its mask or map.
    reads_saliency = False
    reads_masks = False

    def __init__(self, params: ViewConsistencyParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        features = inputs.embed if self.params.space == "embed" else inputs.represent
        total = torch.zeros(len(inputs.images), device=inputs.images.device)
        for _ in range(self.params.draws):
            view1, view2 = inputs.augment(inputs.images)
            total += F.cosine_similarity(features(view1).flatten(1).float(), features(view2).flatten(1).float(), dim=1)
        return total / self.params.draws


@hookimpl
def benchsuite_register_metrics(registry: Registry[MetricFactory]) -> None:
    """Register ``view_consistency``."""
    registry.add(
        "view_consistency",
        ViewConsistency,
        params=ViewConsistencyParams,
        description="Cosine similarity of the embeddings of each held-out image's two views (weak/strong with "
        "random_views' weak), per image.",
    )
