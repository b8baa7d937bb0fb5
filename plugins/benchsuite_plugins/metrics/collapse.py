"""Collapse: whether pre-training spread the images out or mapped them to (nearly) one point.

A self-supervised loss has trivial minima: an encoder that maps every image to the same vector
makes every positive pair agree. Contrastive losses push negatives apart and the other methods
guard against it by their predictor, stop-gradient or variance terms, but a small network, a
strong augmentation or a poor setting can still collapse, and a collapsed encoder's saliency
maps explain nothing. Both metrics read the cell's training images (the data the loss saw; the
held-out images are often too few for a rank), per cell:

- ``embedding_std`` is SimSiam's collapse monitor (Chen & He 2021, section 4.1): the standard
  deviation over images of each channel of the L2-normalised embedding (``embed``, what the
  loss compares), averaged over channels and multiplied by sqrt(d). A zero-mean isotropic
  embedding gives about 1 (the paper's 1/sqrt(d) before the scaling, which lets methods with
  different embedding sizes be compared); a collapsed one gives 0. For unit vectors it cannot
  exceed sqrt(N / (N - 1)), 1 but for the unbiased variance's correction.
- ``effective_rank`` is RankMe (Garrido et al. 2023): ``exp(-sum_k p_k log p_k)`` with
  ``p_k = sigma_k / sum(sigma)`` over the singular values of the representation matrix
  (``represent``, the encoder's output before any head, [N, D]). It counts the directions the
  representation uses, from 1 (every image on one line: dimensional collapse) to min(N, D).
  The paper adds 1e-7 to each ``p_k`` against log 0; here 0 log 0 = 0, as in
  ``scipy.stats.entropy``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from benchsuite.api import MetricFactory, MetricInputs, Params, Registry, hookimpl


class CollapseParams(Params):
    """Parameters of ``embedding_std`` and ``effective_rank``."""

    batch_size: int = Field(256, ge=1, le=65_536, description="Training images per embedding call, to bound memory.")


def embedding_std(z: Tensor) -> Tensor:
    """sqrt(d) times the mean over channels of the (unbiased) std over rows of the L2-normalised ``z`` [N, d]."""
    return F.normalize(z, dim=1).std(dim=0).mean() * math.sqrt(z.shape[1])


def effective_rank(z: Tensor) -> Tensor:
    """RankMe of ``z`` [N, D]: the exponential of the entropy of its normalised singular values."""
    sigma = torch.linalg.svdvals(z)
    p = sigma / sigma.sum()
    p = p[p > 0]  # 0 log 0 = 0; an all-zero z (p all NaN) keeps none and counts as rank 1
    return torch.exp(-(p * p.log()).sum())


class _CollapseMetric:
    """A per-cell statistic of the training images' ``source`` (``embed`` or ``represent``); NaN below two images."""

    scope: Literal["image", "cell"] = "cell"
    higher_is_better: bool | None = True
    # Scores the representation, not the maps or the masks.
    reads_saliency = False
    reads_masks = False
    source: Literal["embed", "represent"]
    statistic: Callable[[Tensor], Tensor]

    def __init__(self, params: CollapseParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        if len(inputs.train_images) < 2:
            return torch.tensor(float("nan"), dtype=torch.float64)
        encode = getattr(inputs, self.source)
        with torch.no_grad():
            z = torch.cat(
                [encode(chunk).flatten(1).double().cpu() for chunk in inputs.train_images.split(self.params.batch_size)]
            )
        return self.statistic(z)


class EmbeddingStd(_CollapseMetric):
    """SimSiam's collapse monitor on the embedding ``embed``, scaled so that a spread embedding gives about 1."""

    source = "embed"
    statistic = staticmethod(embedding_std)


class EffectiveRank(_CollapseMetric):
    """RankMe of the representation ``represent``: how many directions the images spread along."""

    source = "represent"
    statistic = staticmethod(effective_rank)


@hookimpl
def benchsuite_register_metrics(registry: Registry[MetricFactory]) -> None:
    """Register the collapse metrics."""
    registry.add(
        "embedding_std",
        EmbeddingStd,
        params=CollapseParams,
        description="SimSiam's collapse monitor: sqrt(d) x std of the L2-normalised embedding over training images "
        "(about 1 spread, 0 collapsed), per cell.",
    )
    registry.add(
        "effective_rank",
        EffectiveRank,
        params=CollapseParams,
        description="RankMe: exp(entropy of the normalised singular values) of the training images' representation "
        "(1 collapsed to a line, up to min(N, D)), per cell.",
    )
