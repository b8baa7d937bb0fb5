"""Held-out InfoNCE: a training outcome measured the same way in every cell, so datasets compare fairly.

``final_loss`` is each method's own training loss in its last epoch, and its value depends on
more than the representation. MoCo's queue starts as random unit vectors, easy negatives that
real keys replace at a rate of batch size per step, so after a fixed number of epochs a small
dataset has pushed fewer real keys and reports a lower loss (``suites/dataset-size.yaml``: two
datasets of one generator, 48 and 216 images, differ with F = 622). SimCLR's negatives are the rest of the batch, which a
small dataset may not fill; the other methods' losses are on scales of their own. None of that
is a property of what the encoder learnt.

``heldout_infonce`` scores the frozen encoder instead, by one protocol for every method and
dataset: the held-out images (``data.eval_images`` of them, the same number for every dataset of
a suite) each give a pair of views through the cell's augmentation, ``(x, R_theta x)`` for
``rotation``; every view is an anchor whose positive is its partner, and whose negatives are
views of the other held-out images. With ``z`` the L2-normalised representation
(``SSPMethod.represent``: the encoder's output before any head) and ``tau`` a fixed
temperature, an anchor's loss is

    -log( exp(z_a . z_p / tau) / (exp(z_a . z_p / tau) + sum_n exp(z_a . z_n / tau)) )

and the metric is its mean over the 2N anchors: NT-Xent (SimCLR's loss, lightly's
``NTXentLoss``) over the held-out pairs when every other view is a negative. No queue, no batch
and no head enters, the temperature and the count of negatives are the same in every cell, and
the images are ones no cell trained on, so the value depends on the representation alone: it is
lower when the representation matches an image's two views better than it matches them to other
images, and log(1 + negatives) for a representation that maps every view to one point.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from benchsuite.api import MetricFactory, MetricInputs, Params, PluginError, Registry, hookimpl

NEGATIVE_DRAW_SEED = 0
"""Seeds the choice of negatives when ``negatives`` is set: one choice for every cell, so cells differ in their
representation only, not in which views they were scored against."""

_LOGIT_ELEMENTS = 2**24
"""Anchors are scored in chunks of at most this many logits, bounding memory for large evaluation splits."""


class HeldoutInfoNCEParams(Params):
    """Parameters of ``heldout_infonce``."""

    temperature: float = Field(0.1, gt=0, le=10, description="Softmax temperature, the same in every cell.")
    negatives: int | None = Field(
        None,
        ge=1,
        description="Negatives per anchor, drawn from the views of the other held-out images (one draw for every cell). "
        "None: every such view, 2 x (data.eval_images - 1), the same count for every dataset of a suite; set a number "
        "to compare suites that hold out different counts.",
    )
    batch_size: int = Field(256, ge=1, le=65_536, description="Held-out images per encoder call, to bound memory.")


def negative_views(anchors: Tensor, n: int, negatives: int, draw: torch.Generator) -> Tensor:
    """Which of the 2N views are the negatives of each of ``anchors`` [A]: long [A, negatives].

    Distinct views of images other than the anchor's own (view ``v`` is of image ``v % n``), drawn
    uniformly by ``draw`` (a CPU generator, so every device draws alike): uniform random scores,
    the own image's two views ranked last, and the top ``negatives`` taken.
    """
    own_image = (anchors % n)[:, None].cpu() == (torch.arange(2 * n) % n)[None, :]
    scores = torch.rand(own_image.shape, generator=draw, dtype=torch.float64)
    return scores.masked_fill(own_image, -1.0).topk(negatives, dim=1).indices.to(anchors.device)


def heldout_infonce(z1: Tensor, z2: Tensor, temperature: float, negatives: int | None = None) -> Tensor:
    """The mean InfoNCE of the pairs ``(z1[i], z2[i])`` [N, D], each of the 2N views an anchor; 0-d, float64.

    View ``v`` is ``z1[v]`` for v < N and ``z2[v - N]`` after. An anchor's positive is its partner
    view; its negatives are all 2N - 2 views of the other images, or when ``negatives`` is set that
    many of them, drawn by :func:`negative_views` from :data:`NEGATIVE_DRAW_SEED`.
    """
    n = len(z1)
    if negatives is not None and negatives > 2 * (n - 1):
        raise PluginError(
            f"heldout_infonce asks for {negatives} negatives per anchor, but {n} held-out images give "
            f"{2 * (n - 1)} views of other images; lower its 'negatives' or raise data.eval_images."
        )
    z = F.normalize(torch.cat([z1, z2]).flatten(1).double(), dim=1)
    views = torch.arange(2 * n, device=z.device)
    draw = torch.Generator().manual_seed(NEGATIVE_DRAW_SEED)
    losses = []
    for anchors in views.split(max(1, _LOGIT_ELEMENTS // (2 * n))):
        logits = z[anchors] @ z.T / temperature  # [A, 2N]
        positive = logits.gather(1, ((anchors + n) % (2 * n))[:, None])
        if negatives is None:
            other_image = (anchors % n)[:, None] != (views % n)[None, :]
            negative = logits.masked_fill(~other_image, -math.inf)
        else:
            negative = logits.gather(1, negative_views(anchors, n, negatives, draw))
        losses.append(torch.logsumexp(torch.cat([positive, negative], dim=1), dim=1) - positive[:, 0])
    return torch.cat(losses).mean()


class HeldoutInfoNCE:
    """InfoNCE of the held-out images' pairs of views on the frozen representation, per cell; lower is better."""

    scope: Literal["image", "cell"] = "cell"
    higher_is_better: bool | None = False
    # Scores the representation, not the maps or the masks.
    reads_saliency = False
    reads_masks = False

    def __init__(self, params: HeldoutInfoNCEParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        if len(inputs.images) < 2:  # no other image, so no negative
            return torch.tensor(math.nan, dtype=torch.float64)
        z1, z2 = [], []
        with torch.no_grad():
            for chunk in inputs.images.split(self.params.batch_size):
                view1, view2 = inputs.augment(chunk)
                z1.append(inputs.represent(view1).flatten(1))
                z2.append(inputs.represent(view2).flatten(1))
        return heldout_infonce(torch.cat(z1), torch.cat(z2), self.params.temperature, self.params.negatives)


@hookimpl
def benchsuite_register_metrics(registry: Registry[MetricFactory]) -> None:
    """Register ``heldout_infonce``."""
    registry.add(
        "heldout_infonce",
        HeldoutInfoNCE,
        params=HeldoutInfoNCEParams,
        description="InfoNCE of the held-out images' pairs of views on the frozen representation, fixed temperature "
        "and negatives: the same protocol for every method and dataset, per cell (lower is better).",
    )
