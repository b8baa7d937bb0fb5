"""A metric plugin: a hit when the most salient pixel lies inside the mask, or within a few pixels of it."""

import torch
from pydantic import Field

from benchsuite.api import MetricInputs, Params, hookimpl


class PeakParams(Params):
    tolerance: int = Field(0, ge=0, le=32, description="Pixels of slack around the mask.")


class PeakNearMask:
    scope = "image"  # one value per evaluation image
    higher_is_better = True  # so compare and the report can say "better" rather than "larger"

    def __init__(self, params: PeakParams):
        self.tolerance = params.tolerance

    def __call__(self, inputs: MetricInputs) -> torch.Tensor:
        masks = inputs.masks.float().unsqueeze(1)
        if self.tolerance:
            masks = torch.nn.functional.max_pool2d(masks, 2 * self.tolerance + 1, stride=1, padding=self.tolerance)
        flat = inputs.saliency.flatten(1)
        hit = masks.flatten(1).gather(1, flat.nan_to_num().argmax(dim=1, keepdim=True)).squeeze(1)
        # An empty mask or an undefined (NaN) map has no right answer: NaN, never a hit or a miss.
        defined = inputs.masks.flatten(1).any(dim=1) & ~flat.isnan().any(dim=1)
        return torch.where(defined, hit, torch.nan)


@hookimpl
def benchsuite_register_metrics(registry):
    registry.add("peak_near_mask", PeakNearMask, params=PeakParams, description="1 if the saliency peak is in or near the mask.")
