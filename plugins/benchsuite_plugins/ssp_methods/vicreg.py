"""VICReg (Bardes et al. 2022): variance-invariance-covariance regularisation of the two views' embeddings.

Both views go through the encoder and an expander (projector) to embeddings ``z1``, ``z2`` [N, D].
The loss is ``lambda * s + mu * v + nu * c``:

- invariance ``s``: the mean squared error between ``z1`` and ``z2``;
- variance ``v``: per feature, the hinge ``max(0, gamma - sqrt(Var(z) + eps))`` on its standard
  deviation over the batch, averaged over features, and over the two views;
- covariance ``c``: per view, the sum of the squared off-diagonal entries of the features'
  covariance matrix over the batch, divided by D; summed over the two views.

These are the normalisations of the authors' code, with which the published weights were tuned.
The paper's equations write the invariance term summed over features rather than averaged (a
factor D) and the two variance terms summed rather than averaged (a factor 2).

Choices:

- **embed is the projection**, unnormalised: the invariance term compares the raw embeddings
  of a pair, so their closeness is what the loss raises.
- **Defaults**: the paper's lambda = mu = 25, nu = 1, gamma = 1, eps = 1e-4 and 3-layer expander
  (BatchNorm and ReLU after the two hidden layers), but 2048 wide rather than 8192. At 8192 the
  expander holds 134M parameters: a step of the default suite's small CNN (batch 32, 32 px) took
  7.8 s on the 2-core development CPU against 12 ms for MoCo v2, which turns the default suite's
  minutes into most of a day, and a stacked group of 64 models on a GPU would need over 100 GB
  for the expanders' weights and optimiser state alone. At 2048 a step takes 0.3 s. The paper's
  LARS optimiser is not offered: the core's optimisers (``TrainingParams``) are SGD and Adam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import Registry, SSPMethod, SSPMethodFactory, TrainingParams, hookimpl
from benchsuite_plugins.ssp_methods._heads import batchnorm_mlp, loss_precision


class VICRegParams(TrainingParams):
    """Training and method parameters of ``vicreg``."""

    invariance_weight: float = Field(
        25.0, ge=0, le=1000, description="lambda, the weight of the invariance (MSE) term (the paper: 25)."
    )
    variance_weight: float = Field(25.0, ge=0, le=1000, description="mu, the weight of the variance term (the paper: 25).")
    covariance_weight: float = Field(1.0, ge=0, le=1000, description="nu, the weight of the covariance term (the paper: 1).")
    variance_target: float = Field(
        1.0,
        gt=0,
        le=100,
        description="gamma, the standard deviation below which the variance hinge pushes each feature (the paper: 1).",
    )
    eps: float = Field(
        1e-4,
        gt=0,
        le=1,
        description="Added to each variance before its square root, which keeps the gradient finite (the paper: 1e-4).",
    )
    proj_hidden_dim: int = Field(
        2048,
        ge=1,
        le=65_536,
        description=(
            "Width of the expander's two hidden layers. The paper: 8192, "
            "which makes a CPU step of the default suite's small CNN take 7.8 s instead of 0.28 s."
        ),
    )
    proj_dim: int = Field(
        2048,
        ge=1,
        le=65_536,
        description=(
            "Output size of the expander: the embedding. The paper: 8192, "
            "which makes a CPU step of the default suite's small CNN take 7.8 s instead of 0.28 s."
        ),
    )


def _variance_hinge(z: Tensor, target: float, eps: float) -> Tensor:
    return F.relu(target - (z.var(dim=0) + eps).sqrt()).mean()


def _covariance_penalty(z: Tensor) -> Tensor:
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (len(z) - 1)
    # Subtracting the diagonal keeps the shapes fixed (no boolean-mask indexing).
    return (cov - torch.diag_embed(cov.diagonal())).pow(2).sum() / z.shape[1]


def vicreg_loss(z1: Tensor, z2: Tensor, p: VICRegParams) -> Tensor:
    """The VICReg loss of the embeddings ``z1``, ``z2`` [N, D] of a batch's two views, with ``p``'s weights.

    Computed in float32 (float64 for float64 inputs) with autocast off: the covariance sums run
    over D^2 terms, which bf16 would add up coarsely.
    """
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = loss_precision(z1, z2)
        invariance = F.mse_loss(z1, z2)
        variance = (_variance_hinge(z1, p.variance_target, p.eps) + _variance_hinge(z2, p.variance_target, p.eps)) / 2
        covariance = _covariance_penalty(z1) + _covariance_penalty(z2)
        return p.invariance_weight * invariance + p.variance_weight * variance + p.covariance_weight * covariance


class VICReg(SSPMethod):
    """VICReg on the pair ``(view1, view2)``: encoder, expander, variance-invariance-covariance loss."""

    params: VICRegParams

    def __init__(self, params: VICRegParams, encoder: nn.Module):
        super().__init__()
        self.params = params
        self.encoder = encoder
        # No output bias: no term of the loss sees a constant shift of the embeddings, so it gets no gradient.
        dims = [encoder.out_dim, params.proj_hidden_dim, params.proj_hidden_dim, params.proj_dim]
        self.expander = batchnorm_mlp(dims, out_bias=False)

    def embed(self, x: Tensor) -> Tensor:
        """Return the expander's output [N, proj_dim]."""
        return self.expander(self.encoder(x))

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:
        """Return the VICReg loss of the batch."""
        # Each view goes through the network on its own, as in the authors' code: BatchNorm
        # layers see one view's statistics at a time.
        return vicreg_loss(self.embed(view1), self.embed(view2), self.params)


@hookimpl
def benchsuite_register_ssp_methods(registry: Registry[SSPMethodFactory]) -> None:
    """Register the ``vicreg`` SSP method."""
    registry.add(
        "vicreg",
        VICReg,
        params=VICRegParams,
        description="VICReg: invariance (MSE), variance hinge and covariance penalty on the views' embeddings.",
    )
