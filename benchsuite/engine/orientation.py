"""Gradient-orientation statistics of a dataset: the covariate of the "shortcut" hypothesis.

The hypothesis says a network could match ``x`` with ``R_theta x`` through the distribution of
gradient orientations alone; then what matters is how similar that distribution is to itself
rotated by theta. This module computes the distribution; the analysis relates it to metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Scharr derivatives: central differences read about 10% too much diagonal mass on isotropic
# texture at 32 px, which would make the isotropic control look anisotropic.
_SCHARR_X = torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]]) / 32


def orientation_histogram(images: Tensor, bins: int) -> Tensor:
    """Magnitude-weighted histogram of gradient orientations of ``images`` [N, C, H, W], summing to 1.

    Bin ``b`` covers [b, b + 1) x 360/bins degrees, measured counter-clockwise from the +x axis
    as displayed (row 0 at the top), the convention of the rotation augmentation. Channels are
    averaged first; border pixels, whose derivatives would see padding, are left out.
    """
    grey = images.float().mean(dim=1, keepdim=True)
    kx = _SCHARR_X.to(grey.device).view(1, 1, 3, 3)
    gx = F.conv2d(grey, kx)
    gy = F.conv2d(grey, kx.transpose(-1, -2))
    # Rows grow downwards, so the displayed y axis is -gy.
    angle = torch.rad2deg(torch.atan2(-gy, gx)).remainder(360.0)
    magnitude = torch.hypot(gx, gy)
    # Modulo, not a clamp: remainder(-0.0, 360) rounds up to 360, which is bin 0 again.
    index = (angle * (bins / 360.0)).long() % bins
    hist = torch.zeros(bins, dtype=torch.float64, device=grey.device)
    hist.index_add_(0, index.flatten(), magnitude.flatten().double())
    total = hist.sum()
    return hist / total if total > 0 else hist
