"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation of the two views' embeddings the identity.

Both views go through the encoder and a projector; each view's projections are standardised
per feature over the batch (zero mean, unit variance, as a BatchNorm without affine parameters
does in training mode); ``C = z1^T z2 / N`` is the [D, D] cross-correlation matrix, and the loss
is ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``: invariance on the diagonal,
redundancy reduction off it. No negatives, no momentum network, no predictor.

Choices:

- **embed is the standardised projection**, the vector whose features the loss correlates:
  ``sum_i C_ii`` is the batch mean of the dot products of the pairs' standardised embeddings.
  The standardisation is a ``BatchNorm1d`` without affine parameters, as in the authors' code,
  so outside training (saliency, probes) it uses its running statistics and scores each image
  on its own.
- **Defaults**: the paper's 3-layer projector (BatchNorm and ReLU after the two hidden layers)
  and lambda = 0.0051 (the authors' code; the paper rounds it to 5e-3), but 2048 wide rather than
  8192. At 8192 the projector holds 134M parameters: a step of the default suite's small CNN
  (batch 32, 32 px) took 5.4 s on the 2-core development CPU against 12 ms for MoCo v2, which
  turns the default suite's minutes into about half a day, and a stacked group of 64 models on a
  GPU would need over 100 GB for the projectors' weights and optimiser state alone. At 2048 a
  step takes 0.2 s, as SimSiam's published heads do. The paper's LARS optimiser is not offered:
  the core's optimisers (``TrainingParams``) are SGD and Adam.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import Registry, SSPMethod, SSPMethodFactory, TrainingParams, hookimpl
from benchsuite_plugins.ssp_methods._heads import batchnorm_mlp, loss_precision


class BarlowTwinsParams(TrainingParams):
    """Training and method parameters of ``barlow_twins``."""

    redundancy_weight: float = Field(
        0.0051,
        ge=0,
        le=100,
        description=(
            "lambda, the weight of the off-diagonal (redundancy-reduction) term against the diagonal (invariance) "
            "term. The paper's 5e-3 (0.0051 in the authors' code) was tuned for 8192 features and batches of 2048."
        ),
    )
    proj_hidden_dim: int = Field(
        2048,
        ge=1,
        le=65_536,
        description=(
            "Width of the projector's two hidden layers. The paper: 8192, "
            "which makes a CPU step of the default suite's small CNN take 5.4 s instead of 0.22 s."
        ),
    )
    proj_dim: int = Field(
        2048,
        ge=1,
        le=65_536,
        description=(
            "Output size of the projector: the embedding. The paper: 8192, "
            "which makes a CPU step of the default suite's small CNN take 5.4 s instead of 0.22 s."
        ),
    )


def barlow_twins_loss(z1: Tensor, z2: Tensor, redundancy_weight: float) -> Tensor:
    """``sum_i (1 - C_ii)^2 + redundancy_weight * sum_{i != j} C_ij^2`` with ``C = z1^T z2 / N``.

    ``z1``, ``z2`` [N, D] are the two views' embeddings, each already standardised per feature
    over the batch. Computed in float32 (float64 for float64 inputs) with autocast off: the sums
    run over D^2 terms, which bf16 would add up coarsely.
    """
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = loss_precision(z1, z2)
        c = z1.T @ z2 / len(z1)
        diagonal = c.diagonal()
        # Subtracting the diagonal keeps the shapes fixed (no boolean-mask indexing), and exactly
        # zeroes it: the off-diagonal sum keeps full precision however close C_ii is to 1.
        off_diagonal = c - torch.diag_embed(diagonal)
        return (1 - diagonal).pow(2).sum() + redundancy_weight * off_diagonal.pow(2).sum()


class BarlowTwins(SSPMethod):
    """Barlow Twins on the pair ``(view1, view2)``: encoder, projector, cross-correlation loss."""

    params: BarlowTwinsParams

    def __init__(self, params: BarlowTwinsParams, encoder: nn.Module):
        super().__init__()
        self.params = params
        self.encoder = encoder
        # No output bias: the standardisation subtracts any constant shift, so it gets no gradient.
        dims = [encoder.out_dim, params.proj_hidden_dim, params.proj_hidden_dim, params.proj_dim]
        self.projector = batchnorm_mlp(dims, out_bias=False)
        self.standardise = nn.BatchNorm1d(params.proj_dim, affine=False)

    def embed(self, x: Tensor) -> Tensor:
        """Return the standardised projection [N, proj_dim]: over the batch in training, by running statistics outside it."""
        z = self.projector(self.encoder(x))
        # In the statistics' dtype (float32 unless the model was cast), not bf16 under autocast:
        # the loss's correlations are no finer than the standardised values they sum.
        with torch.autocast(z.device.type, enabled=False):
            return self.standardise(z.to(self.standardise.running_mean.dtype))

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:
        """Return the Barlow Twins loss of the batch."""
        # Each view is standardised by its own batch statistics, as in the paper.
        return barlow_twins_loss(self.embed(view1), self.embed(view2), self.params.redundancy_weight)


@hookimpl
def benchsuite_register_ssp_methods(registry: Registry[SSPMethodFactory]) -> None:
    """Register the ``barlow_twins`` SSP method."""
    registry.add(
        "barlow_twins",
        BarlowTwins,
        params=BarlowTwinsParams,
        description="Barlow Twins: cross-correlation of the views' standardised embeddings pushed to the identity.",
    )
