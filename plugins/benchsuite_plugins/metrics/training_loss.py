"""The training diagnostic ``final_loss``: the cell's own SSP loss in its last epoch.

It reads no saliency map and no mask. Its value depends on the method's state as much as on
the encoder (MoCo's queue, say), so ``heldout.py`` scores every cell by one protocol instead.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from benchsuite.api import MetricFactory, MetricInputs, Params, Registry


class FinalLoss:
    """The cell's SSP loss in its last epoch; NaN when no epoch was recorded."""

    scope: Literal["image", "cell"] = "cell"
    higher_is_better: bool | None = False
    reads_saliency = False
    reads_masks = False

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        """Return the last epoch's mean loss as a 0-d tensor on the saliency maps' device."""
        dtype = torch.promote_types(inputs.epoch_loss.dtype, torch.float32)
        losses = inputs.epoch_loss.to(device=inputs.saliency.device, dtype=dtype)
        if losses.numel() == 0:
            return torch.tensor(float("nan"), dtype=losses.dtype, device=losses.device)
        return losses[-1]


def register(registry: Registry[MetricFactory]) -> None:
    """Register ``final_loss``; called by the ``metrics`` entry point (``__init__.py``)."""
    registry.add("final_loss", FinalLoss, description="SSP loss of the last training epoch, per cell.")
