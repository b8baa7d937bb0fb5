"""BYOL (Grill et al. 2020, "Bootstrap your own latent"): predict a slow target network's projection.

The online network is the encoder, a projector and a predictor; the target network is a copy of
the encoder and projector that follows the online one by an exponential moving average of its
parameters, ``target = tau * target + (1 - tau) * online``, updated in place in ``after_step``,
with ``tau`` raised from ``tau_base`` (0.996) to 1 by a cosine over the training steps, as in the
paper: ``tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2`` at step ``k`` of ``K``.
Each view's prediction regresses the other view's target projection, both L2-normalised:
``2 - 2 cos(p, sg(z'))``, summed over the two directions as in the paper (so the loss lies in
[0, 8]) and averaged over the batch. The target network's own buffers (BatchNorm statistics)
come from its forward passes, as MoCo's key network's do here.

Choices:

- **The schedule can be switched off**: ``tau_schedule: constant`` keeps ``tau`` at ``tau_base``
  throughout. The paper's ablation finds a constant tau between 0.9 and 0.999 works, while both
  extremes, a target that never moves (1) and the online network itself (0), do much worse.
- **embed is the online projection**, L2-normalised, as MoCo's is its query projection. The loss
  compares one view's prediction with the other view's target projection, so no one embedding's
  pair cosine is the loss; the projection is what both sides share (the target is its moving
  average, the predictor reads it). With views drawn independently of each other, as the paper's
  augmentations are, the predictor approximates the projection's expectation over views (SimSiam's
  analysis) and training draws the projections of a pair together (``tests/plugins/ssp_methods/test_byol.py``). With
  the study's fixed pair ``(x, R_theta x)`` the predictor can learn the turn instead: on the
  4-fold stars at 45 degrees, which negates each star's angular pattern cos(4 (phi - phi0)), 10
  epochs (192 stars of 16 px, heads 64 wide, Adam) took the mean cosine of the projections of x
  and R_theta x to -0.15 to -0.32 (three seeds) while the prediction's cosine with the other
  view's projection rose to 0.6-0.7. The predictions' own pair cosine (-0.03 to 0.33) is no better
  a choice. Saliency of ``cos(f(x), f(R_theta x))`` then explains an embedding that follows the
  turn rather than one invariant to it.
- **Published sizes**: the projector and the predictor are MLPs with a 4096-wide BatchNorm hidden
  layer and a 256-wide output. The paper's LARS optimiser is not offered: the core's optimisers
  (``TrainingParams``) are SGD and Adam.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import Registry, SSPMethod, SSPMethodFactory, TrainingParams, hookimpl
from benchsuite_plugins.ssp_methods._heads import batchnorm_mlp, follow_, loss_precision


class BYOLParams(TrainingParams):
    """Training and method parameters of ``byol``."""

    tau_base: float = Field(
        0.996,
        ge=0,
        le=1,
        description=(
            "Moving-average coefficient of the target network at the first step (1 freezes the target, 0 "
            "copies the online network). The paper's value is 0.996."
        ),
    )
    tau_schedule: Literal["cosine", "constant"] = Field(
        "cosine",
        description=(
            "cosine: tau rises from tau_base to 1 over training, tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 "
            "at step k of K (the paper); constant: tau stays at tau_base."
        ),
    )
    proj_hidden_dim: int = Field(4096, ge=1, le=65_536, description="Hidden width of the projector (the paper: 4096).")
    proj_dim: int = Field(
        256, ge=1, le=65_536, description="Output size of the projector and the predictor: the embedding (the paper: 256)."
    )
    pred_hidden_dim: int = Field(4096, ge=1, le=65_536, description="Hidden width of the predictor (the paper: 4096).")


def byol_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """BYOL's symmetric loss: mean over rows of ``2 - 2 cos(p1, z2) + 2 - 2 cos(p2, z1)``.

    ``p1``, ``p2`` are the predictions [N, D] of view 1 and 2, ``z1``, ``z2`` the target
    projections; gradients stop at ``z1`` and ``z2``. Computed in float32 (float64 for float64
    inputs) with autocast off: cosines near 1 differ in the third digit, which bf16 rounds away.
    """
    with torch.autocast(p1.device.type, enabled=False):
        p1, p2, z1, z2 = loss_precision(p1, p2, z1.detach(), z2.detach())
        cosines = F.cosine_similarity(p1, z2, dim=1) + F.cosine_similarity(p2, z1, dim=1)
        return (4 - 2 * cosines).mean()


class BYOL(SSPMethod):
    """BYOL on the pair ``(view1, view2)``: online predictions regress the target projections."""

    params: BYOLParams

    def __init__(self, params: BYOLParams, encoder: nn.Module):
        super().__init__()
        self.params = params
        self.encoder = encoder
        self.projector = batchnorm_mlp([encoder.out_dim, params.proj_hidden_dim, params.proj_dim])
        self.predictor = batchnorm_mlp([params.proj_dim, params.pred_hidden_dim, params.proj_dim])
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def embed(self, x: Tensor) -> Tensor:
        """Return the L2-normalised online projection [N, proj_dim]."""
        return F.normalize(self.projector(self.encoder(x)), dim=1)

    @torch.no_grad()
    def _target(self, x: Tensor) -> Tensor:
        return self.target_projector(self.target_encoder(x))

    def _prediction(self, x: Tensor) -> Tensor:
        return self.predictor(self.projector(self.encoder(x)))

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:
        """Return the symmetric BYOL loss of the batch."""
        # Each view goes through the networks on its own, as in the paper's code: BatchNorm
        # layers see one view's statistics at a time.
        return byol_loss(self._prediction(view1), self._prediction(view2), self._target(view1), self._target(view2))

    def tau(self, progress: float) -> float:
        """The moving-average coefficient at ``progress`` (step / total steps) through training."""
        tau_base = self.params.tau_base
        if self.params.tau_schedule == "constant":
            return tau_base
        return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * progress) + 1.0) / 2.0

    def after_step(self, progress: float) -> None:
        """Move the target network towards the online one: target = tau * target + (1 - tau) * online."""
        follow_((self.target_encoder, self.target_projector), (self.encoder, self.projector), 1.0 - self.tau(progress))


@hookimpl
def benchsuite_register_ssp_methods(registry: Registry[SSPMethodFactory]) -> None:
    """Register the ``byol`` SSP method."""
    registry.add(
        "byol",
        BYOL,
        params=BYOLParams,
        description="BYOL: online predictor regresses a moving-average target network's projection (no negatives).",
    )
