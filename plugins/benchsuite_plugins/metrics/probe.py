"""The frozen-encoder pair probe of the follow-up study: can a linear classifier tell pairs apart?

Every image ``x`` of a split gives one positive pair ``(f(x), f(R_theta x))`` and one negative
pair ``(f(x), f(R_theta x'))`` with ``x'`` another image, drawn by a random derangement (no
image is its own partner) seeded by the cell's seed. A logistic regression is fitted on the
pairs of the training images and scored on the pairs of the evaluation images; ``f`` is the
pre-trained embedding, frozen. At theta = 0 a positive pair is one embedding twice, so any
embedding that separates images scores about 1.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from benchsuite.api import MetricInputs, Params, Registry, hookimpl


class PairProbeParams(Params):
    """Parameters of ``pair_probe``."""

    steps: int = Field(100, ge=1, le=10_000, description="Maximum L-BFGS iterations of the logistic regression.")
    lr: float = Field(1.0, gt=0, le=100, description="L-BFGS step size; 1 is the usual choice with its strong-Wolfe line search.")
    weight_decay: float = Field(
        1e-3,
        ge=0,
        le=1e3,
        description=(
            "L2 penalty: the probe minimises mean log-loss + weight_decay / 2 * sum(w^2), bias unpenalised "
            "(scikit-learn's C = 1 / (weight_decay * number of training pairs)). It keeps the weights "
            "finite when the pairs are separable."
        ),
    )
    feature: Literal["diff_product", "cosine"] = Field(
        "diff_product",
        description=(
            "Pair feature from the embeddings a, b, symmetric in a and b: 'diff_product' is [abs(a - b), a * b]; "
            "'cosine' is the one number cos(a, b), the similarity the SSP loss trains. (The plain "
            "concatenation [a, b] is not offered: a linear probe on it sees no interaction of a and b, and "
            "with rotated negatives it scores exactly 0.5.)"
        ),
    )
    negatives: Literal["rotated", "unrotated"] = Field(
        "rotated",
        description=(
            "Second member of a negative pair: 'rotated' is f(R_theta x'), so positives and negatives differ "
            "only in whether the images match; 'unrotated' is f(x'), the follow-up study's wording, which "
            "also lets a probe succeed that merely detects the rotation (or any other change the "
            "augmentation makes to the second view)."
        ),
    )
    embed_batch_size: int = Field(256, ge=1, le=65_536, description="Images per embedding call, to bound memory.")


class PairProbe:
    """Balanced accuracy of a logistic-regression probe on frozen-embedding pairs; NaN if a split has < 2 images."""

    scope: Literal["image", "cell"] = "cell"

    def __init__(self, params: PairProbeParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        """Return the probe's balanced accuracy on the evaluation pairs as a 0-d float64 tensor (CPU)."""
        if min(len(inputs.train_images), len(inputs.images)) < 2:
            return torch.tensor(float("nan"), dtype=torch.float64)
        generator = torch.Generator().manual_seed(inputs.seed)
        train_x, train_y = self.pairs(inputs, inputs.train_images, generator)
        test_x, test_y = self.pairs(inputs, inputs.images, generator)
        # Standardised with the training pairs' statistics, so one weight_decay suits any
        # embedding scale; constant features (std 0) stay 0.
        mean, std = train_x.mean(dim=0), train_x.std(dim=0)
        std = torch.where(std > 0, std, 1.0)
        weight, bias = fit_logistic_regression(
            (train_x - mean) / std, train_y, steps=self.params.steps, lr=self.params.lr, weight_decay=self.params.weight_decay
        )
        predicted = ((test_x - mean) / std) @ weight + bias > 0
        return balanced_accuracy(predicted, test_y.bool())

    def pairs(self, inputs: MetricInputs, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Features [2N, F] and labels [2N] (1 for the N positives, then 0 for the N negatives), float64 on CPU."""
        first, second = _embed_pairs(inputs, images, self.params.embed_batch_size)
        partner = derangement(len(images), generator)
        other = second[partner] if self.params.negatives == "rotated" else first[partner]
        kind = self.params.feature
        features = torch.cat([pair_features(first, second, kind), pair_features(first, other, kind)])
        labels = torch.cat([torch.ones(len(images)), torch.zeros(len(images))]).double()
        return features, labels


def _embed_pairs(inputs: MetricInputs, images: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """``f(view1)`` and ``f(view2)`` of the cell's pair augmentation, [N, D] each, float64 on CPU."""
    firsts, seconds = [], []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            view1, view2 = inputs.augment(chunk)
            firsts.append(inputs.embed(view1).flatten(1))
            seconds.append(inputs.embed(view2).flatten(1))
    # The classifier is tiny; float64 on the CPU makes it exact enough to match scikit-learn
    # and gives the same fit whichever device embedded the images.
    return torch.cat(firsts).double().cpu(), torch.cat(seconds).double().cpu()


def derangement(n: int, generator: torch.Generator) -> Tensor:
    """A random permutation of ``range(n)`` with no fixed point (n >= 2): one random n-cycle."""
    order = torch.randperm(n, generator=generator)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner


def pair_features(a: Tensor, b: Tensor, kind: Literal["diff_product", "cosine"]) -> Tensor:
    """The probe's feature of the pairs ``(a[i], b[i])``: [|a - b|, a * b], [N, 2D], or cos(a, b), [N, 1]."""
    if kind == "diff_product":
        return torch.cat([(a - b).abs(), a * b], dim=1)
    return F.cosine_similarity(a, b, dim=1).unsqueeze(1)


def fit_logistic_regression(x: Tensor, y: Tensor, *, steps: int, lr: float, weight_decay: float) -> tuple[Tensor, Tensor]:
    """Weights [F] and bias [] minimising mean log-loss + weight_decay / 2 * |w|^2 by full-batch L-BFGS.

    Starts from zero and has no randomness, so the fit is deterministic.
    """
    weight = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros((), dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=lr, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ weight + bias, y) + weight_decay / 2 * weight.square().sum()
        loss.backward()
        return loss

    # The core may score metrics inside no_grad; the fit needs gradients of its own parameters.
    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def balanced_accuracy(predicted: Tensor, truth: Tensor) -> Tensor:
    """Mean of the true-positive and true-negative rates of boolean predictions, as a 0-d float64 tensor."""
    positive_rate = predicted[truth].double().mean()
    negative_rate = (~predicted[~truth]).double().mean()
    return (positive_rate + negative_rate) / 2


@hookimpl
def benchsuite_register_metrics(registry: Registry) -> None:
    """Register ``pair_probe``."""
    registry.add(
        "pair_probe",
        PairProbe,
        params=PairProbeParams,
        description="Frozen-encoder pair probe: balanced accuracy telling (x, R_theta x) from (x, R_theta x'), per cell.",
    )
