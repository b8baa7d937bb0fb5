"""SimSiam (Chen & He 2021, "Exploring simple Siamese representation learning"): a predictor and a stop-gradient.

One network (encoder and projector) embeds both views; a predictor maps each view's projection
towards the other's, which is held fixed by a stop-gradient: ``D(p1, sg(z2)) / 2 + D(p2, sg(z1))
/ 2`` with ``D(p, z) = -cos(p, z)``, averaged over the batch, so the loss lies in [-1, 1]. There
are no negatives and no momentum network; the method has no state beyond its weights and
BatchNorm statistics.

Choices:

- **embed is the projection** z, L2-normalised, as MoCo and SimCLR embed their head's output. The
  loss compares one view's prediction with the other view's projection, so no one embedding's pair
  cosine is the loss; the projection is what both sides share (the predictor reads it). With views
  drawn independently of each other, as the paper's augmentations are, the predictor approximates
  the projection's expectation over views (the paper's analysis) and training draws the
  projections of a pair together (``tests/plugins/ssp_methods/test_simsiam.py``). With the study's fixed pair
  ``(x, R_theta x)`` the predictor can learn the turn instead: on the 4-fold stars at 45 degrees,
  which negates each star's angular pattern cos(4 (phi - phi0)), 10 epochs (192 stars of 16 px,
  heads 64 wide, Adam) took the mean cosine of the projections of x and R_theta x to -0.39 to
  -0.52 (three seeds) while the prediction's cosine with the other view's projection rose to
  0.65-0.8. The predictions' own pair cosine (-0.45 to -0.56) is no better a choice. Saliency of
  ``cos(f(x), f(R_theta x))`` then explains an embedding that follows the turn rather than one
  invariant to it.
- **Published sizes** (ImageNet): a 3-layer projector, 2048 wide, with BatchNorm after every
  layer including the output; a 2-layer predictor 2048 -> 512 -> 2048 with BatchNorm on its
  hidden layer. The authors' code keeps the predictor's learning rate fixed (``--fix-pred-lr``);
  the core's schedule applies to every parameter alike, so here it decays with the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import Registry, SSPMethod, SSPMethodFactory, TrainingParams, hookimpl
from benchsuite_plugins.ssp_methods._heads import batchnorm_mlp, loss_precision


class SimSiamParams(TrainingParams):
    """Training and method parameters of ``simsiam``."""

    proj_hidden_dim: int = Field(
        2048, ge=1, le=65_536, description="Width of the projector's two hidden layers (the paper: 2048)."
    )
    proj_dim: int = Field(
        2048, ge=1, le=65_536, description="Output size of the projector and the predictor: the embedding (the paper: 2048)."
    )
    pred_hidden_dim: int = Field(
        512, ge=1, le=65_536, description="Hidden width of the predictor, a bottleneck (the paper: 512, a quarter of proj_dim)."
    )


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """SimSiam's symmetric loss ``-cos(p1, z2) / 2 - cos(p2, z1) / 2``, averaged over rows.

    ``p1``, ``p2`` are the predictions [N, D] of view 1 and 2, ``z1``, ``z2`` their projections;
    gradients stop at ``z1`` and ``z2``. Computed in float32 (float64 for float64 inputs) with
    autocast off: cosines near 1 differ in the third digit, which bf16 rounds away.
    """
    with torch.autocast(p1.device.type, enabled=False):
        p1, p2, z1, z2 = loss_precision(p1, p2, z1.detach(), z2.detach())
        cosines = F.cosine_similarity(p1, z2, dim=1) + F.cosine_similarity(p2, z1, dim=1)
        return -(cosines / 2).mean()


class SimSiam(SSPMethod):
    """SimSiam on the pair ``(view1, view2)``: encoder, projector, predictor, stop-gradient."""

    params: SimSiamParams

    def __init__(self, params: SimSiamParams, encoder: nn.Module):
        super().__init__()
        self.params = params
        self.encoder = encoder
        dims = [encoder.out_dim, params.proj_hidden_dim, params.proj_hidden_dim, params.proj_dim]
        self.projector = batchnorm_mlp(dims, out_norm=True)
        self.predictor = batchnorm_mlp([params.proj_dim, params.pred_hidden_dim, params.proj_dim])

    def _project(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x))

    def embed(self, x: Tensor) -> Tensor:
        """Return the L2-normalised projection [N, proj_dim]."""
        return F.normalize(self._project(x), dim=1)

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:
        """Return the symmetric negative-cosine loss of the batch."""
        # Each view goes through the network on its own, as in the paper's code: BatchNorm
        # layers see one view's statistics at a time.
        z1, z2 = self._project(view1), self._project(view2)
        return simsiam_loss(self.predictor(z1), self.predictor(z2), z1, z2)


@hookimpl
def benchsuite_register_ssp_methods(registry: Registry[SSPMethodFactory]) -> None:
    """Register the ``simsiam`` SSP method."""
    registry.add(
        "simsiam",
        SimSiam,
        params=SimSiamParams,
        description="SimSiam: predictor and stop-gradient on one shared network, negative cosine (no negatives).",
    )
