"""SimCLR (Chen et al. 2020): an MLP projection head and the NT-Xent loss with in-batch negatives.

Both views of a batch of N images go through the encoder and the head in one pass. Each of the
2N embeddings has its partner view as the positive and the other 2N - 2 embeddings as
negatives; the loss is the mean cross-entropy over all 2N rows, so it is symmetric in the two
views. The method has no state beyond its weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import Registry, SSPMethod, SSPMethodFactory, TrainingParams, hookimpl
from benchsuite_plugins.ssp_methods._heads import projection_head


class SimCLRParams(TrainingParams):
    """Training and method parameters of ``simclr``."""

    temperature: float = Field(
        0.5,
        gt=0,
        le=10,
        description=(
            "Softmax temperature of NT-Xent. 0.5 is SimCLR's setting for CIFAR-10 with batches of "
            "hundreds; the 0.1 of its ImageNet runs goes with batches of thousands. With few "
            "in-batch negatives a low temperature puts nearly all the gradient on the few hardest "
            "ones, a noisy signal."
        ),
    )
    proj_hidden_dim: int = Field(128, ge=1, le=65_536, description="Hidden width of the 2-layer projection head.")
    proj_dim: int = Field(64, ge=1, le=65_536, description="Output size of the projection head: the embedding the loss sees.")


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent of the pairs ``(z1[i], z2[i])`` [N, D] with the other 2N - 2 rows as negatives.

    Rows need not be normalised: the similarity is the cosine. Returns the mean over all 2N
    anchors, in float32 whatever the inputs' dtype, because cosines near 1 differ in the third
    digit, which bf16 would round away.
    """
    with torch.autocast(z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        n = len(z1)
        logits = z @ z.T / temperature
        # An embedding is always most similar to itself; it is neither positive nor negative.
        logits.fill_diagonal_(float("-inf"))
        partner = torch.arange(2 * n, device=z.device).roll(n)
        return F.cross_entropy(logits, partner)


class SimCLR(SSPMethod):
    """SimCLR on the pair ``(view1, view2)``: encoder, projection head, NT-Xent."""

    params: SimCLRParams

    def __init__(self, params: SimCLRParams, encoder: nn.Module):
        super().__init__()
        self.params = params
        self.encoder = encoder
        self.head = projection_head(encoder.out_dim, params.proj_hidden_dim, params.proj_dim)

    def embed(self, x: Tensor) -> Tensor:
        """Return the L2-normalised projection [N, proj_dim]."""
        return F.normalize(self.head(self.encoder(x)), dim=1)

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:
        """Return the NT-Xent loss of the batch of positive pairs."""
        # One encoder pass over both views, as in SimCLR: batch-norm encoders then see the
        # statistics of all 2N images rather than of one view at a time.
        z1, z2 = self.embed(torch.cat([view1, view2])).chunk(2)
        return nt_xent(z1, z2, self.params.temperature)


@hookimpl
def benchsuite_register_ssp_methods(registry: Registry[SSPMethodFactory]) -> None:
    """Register the ``simclr`` SSP method."""
    registry.add(
        "simclr",
        SimCLR,
        params=SimCLRParams,
        description="SimCLR: MLP head, NT-Xent loss with in-batch negatives over both views.",
    )
