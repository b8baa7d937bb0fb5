"""The frozen-encoder pair probe of the follow-up study: can a classifier tell pairs apart?

Every image ``x`` of a split gives one positive pair ``(f(x), f(R_theta x))`` and one negative
pair ``(f(x), f(R_theta x'))`` with ``x'`` another image of the same split, drawn by a random
derangement (no image is its own partner) seeded by the cell's seed. A classifier is fitted on
the pairs of one split and scored on the pairs of the other; ``f`` is the pre-trained embedding,
frozen. The classifier is a logistic regression (the default) or the follow-up study's ReLU MLP;
the splits are the cell's own (training images to fit, evaluation images to score) or the study's
80/20 split of all of them, by source image. docs/saliency.md says what each measures. At theta
= 0 a positive pair is one embedding twice, so any embedding that separates images scores about 1.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from benchsuite.api import MetricFactory, MetricInputs, Params, Registry, hookimpl


class PairProbeParams(Params):
    """Parameters of ``pair_probe``."""

    steps: int = Field(100, ge=1, le=10_000, description="Logistic regression: maximum L-BFGS iterations.")
    lr: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Logistic regression: L-BFGS step size; 1 is the usual choice with its strong-Wolfe line search.",
    )
    weight_decay: float = Field(
        1e-3,
        ge=0,
        le=1e3,
        description=(
            "Logistic regression: L2 penalty; it minimises mean log-loss + weight_decay / 2 * sum(w^2), bias unpenalised "
            "(scikit-learn's C = 1 / (weight_decay * number of training pairs)). It keeps the weights "
            "finite when the pairs are separable."
        ),
    )
    feature: Literal["diff_product", "cosine", "concat"] = Field(
        "diff_product",
        description=(
            "Pair feature from the embeddings a, b: 'diff_product' is [abs(a - b), a * b] and 'cosine' the one number "
            "cos(a, b), the similarity the SSP loss trains, both symmetric in a and b; 'concat' is [a, b], for the MLP "
            "only: a linear probe on it sees no interaction of a and b, and with rotated negatives scores exactly 0.5."
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
    classifier: Literal["logistic", "mlp"] = Field(
        "logistic",
        description="'logistic': an L2-penalised logistic regression (steps, lr, weight_decay), what a linear read-out of "
        "the pair feature can tell. 'mlp': the follow-up study's ReLU MLP (mlp_widths, mlp_lr, mlp_epochs, "
        "mlp_batch_size) trained by plain SGD on the binary cross-entropy, what a non-linear read-out learns, "
        "interactions of a and b included.",
    )
    mlp_widths: tuple[int, ...] = Field(
        (1024, 512, 256, 128, 64), min_length=1, description="MLP: widths of the hidden layers, each followed by a ReLU."
    )
    mlp_lr: float = Field(0.015, gt=0, le=100, description="MLP: SGD learning rate (no momentum, no weight decay).")
    mlp_epochs: int = Field(20, ge=1, le=10_000, description="MLP: passes over the fitted pairs.")
    mlp_batch_size: int = Field(64, ge=1, le=65_536, description="MLP: pairs per SGD step, shuffled every epoch.")
    split: Literal["cell", "pooled"] = Field(
        "cell",
        description="Pairs fitted and scored: 'cell' fits on the cell's training images and scores on its evaluation "
        "images; 'pooled' pools both and holds out test_share of them at random (the follow-up study's 80/20), by "
        "source image: an image, its two pairs and its negative partner are all on one side.",
    )
    test_share: float = Field(0.2, gt=0, lt=1, description="With split 'pooled': the share of images whose pairs are scored.")
    embed_batch_size: int = Field(256, ge=1, le=65_536, description="Images per embedding call, to bound memory.")

    @model_validator(mode="after")
    def _linear_probes_need_an_interaction(self) -> PairProbeParams:
        if self.feature == "concat" and self.classifier == "logistic":
            raise ValueError(
                "feature 'concat' needs classifier 'mlp': a linear probe on [a, b] sees no interaction of a and b, and "
                "with rotated negatives scores exactly 0.5"
            )
        return self


class PairProbe:
    """Balanced accuracy of a probe on frozen-embedding pairs; NaN if a split has < 2 images."""

    scope: Literal["image", "cell"] = "cell"
    reads_saliency = False
    reads_masks = False

    def __init__(self, params: PairProbeParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        """Return the probe's balanced accuracy on the scored pairs as a 0-d float64 tensor (CPU)."""
        generator = torch.Generator().manual_seed(inputs.seed)
        fitted, scored = self.split(inputs, generator)
        if min(len(fitted), len(scored)) < 2:
            return torch.tensor(float("nan"), dtype=torch.float64)
        train_x, train_y = self.pairs(inputs, fitted, generator)
        test_x, test_y = self.pairs(inputs, scored, generator)
        # Standardised with the training pairs' statistics, so one weight_decay or learning rate
        # suits any embedding scale; constant features (std 0) stay 0.
        mean, std = train_x.mean(dim=0), train_x.std(dim=0)
        std = torch.where(std > 0, std, 1.0)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        p = self.params
        if p.classifier == "logistic":
            weight, bias = fit_logistic_regression(train_x, train_y, steps=p.steps, lr=p.lr, weight_decay=p.weight_decay)
            predicted = test_x @ weight + bias > 0
        else:
            device = inputs.images.device
            mlp = fit_mlp(
                train_x.float().to(device),
                train_y.float().to(device),
                widths=p.mlp_widths,
                lr=p.mlp_lr,
                epochs=p.mlp_epochs,
                batch_size=p.mlp_batch_size,
                seed=inputs.seed,
            )
            with torch.no_grad():
                predicted = (mlp(test_x.float().to(device)).squeeze(1) > 0).cpu()
        return balanced_accuracy(predicted, test_y.bool())

    def split(self, inputs: MetricInputs, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The images whose pairs are fitted and those whose pairs are scored."""
        if self.params.split == "cell":
            return inputs.train_images, inputs.images
        pooled = torch.cat([inputs.train_images, inputs.images])
        order = torch.randperm(len(pooled), generator=generator).to(pooled.device)
        scored = round(self.params.test_share * len(pooled))
        return pooled[order[scored:]], pooled[order[:scored]]

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


def pair_features(a: Tensor, b: Tensor, kind: Literal["diff_product", "cosine", "concat"]) -> Tensor:
    """The probe's feature of the pairs ``(a[i], b[i])``: [|a - b|, a * b] or [a, b], [N, 2D], or cos(a, b), [N, 1]."""
    if kind == "diff_product":
        return torch.cat([(a - b).abs(), a * b], dim=1)
    if kind == "concat":
        return torch.cat([a, b], dim=1)
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


def fit_mlp(x: Tensor, y: Tensor, *, widths: tuple[int, ...], lr: float, epochs: int, batch_size: int, seed: int) -> nn.Module:
    """A ReLU MLP (hidden ``widths``, one logit out) fitted to ``x`` [N, F], ``y`` [N] by SGD on the binary cross-entropy.

    Trained where ``x`` is; ``seed`` draws the initial weights (PyTorch's default initialisation)
    and each epoch's order, so the fit is deterministic on a device and leaves the global RNG as it was.
    """
    sizes = [x.shape[1], *widths]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hidden = [module for pair in pairwise(sizes) for module in (nn.Linear(*pair), nn.ReLU())]
        mlp = nn.Sequential(*hidden, nn.Linear(sizes[-1], 1)).to(x.device)
    optimizer = torch.optim.SGD(mlp.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    # As for the logistic regression: the core may score metrics inside no_grad.
    with torch.enable_grad():
        for _ in range(epochs):
            for batch in torch.randperm(len(x), generator=order).to(x.device).split(batch_size):
                loss = F.binary_cross_entropy_with_logits(mlp(x[batch]).squeeze(1), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return mlp.eval()


def balanced_accuracy(predicted: Tensor, truth: Tensor) -> Tensor:
    """Mean of the true-positive and true-negative rates of boolean predictions, as a 0-d float64 tensor."""
    positive_rate = predicted[truth].double().mean()
    negative_rate = (~predicted[~truth]).double().mean()
    return (positive_rate + negative_rate) / 2


@hookimpl
def benchsuite_register_metrics(registry: Registry[MetricFactory]) -> None:
    """Register ``pair_probe``."""
    registry.add(
        "pair_probe",
        PairProbe,
        params=PairProbeParams,
        description="Frozen-encoder pair probe (logistic regression or MLP): balanced accuracy telling (x, R_theta x) "
        "from (x, R_theta x'), per cell.",
    )
