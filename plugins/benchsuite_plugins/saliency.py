"""Gradient saliency: SmoothGrad, the plain input gradient, gradient x input and Integrated Gradients, batched.

Each attributes an objective (one score per image) to the input pixels from its gradient at
rows made from the images: noisy copies, the images themselves, or points on the straight path
from a baseline. The rows of all images go through the objective in chunks of ``chunk_size``
rows, one forward and one backward pass per chunk, as in Captum (and unlike MONAI's
``SmoothGrad``, which loops over samples with batch size 1); the objective must therefore score
rows independently of each other (an encoder in eval mode, not a BatchNorm in training mode).
``stacked`` does the same for the K models of a stacked group in one pass per chunk, each model
with its own noise; one model alone is the case K = 1.

- **SmoothGrad** (Smilkov et al. 2017) averages the post-processed gradient over ``samples``
  noisy copies of each image, with Gaussian noise of σ = ``spread`` × (max − min) of that image:
  (1) post-process each copy's gradient g: ``abs`` gives |g|, ``grad_x_input`` |g ⊙ x_noisy|;
  (2) average over the copies; (3) reduce over channels (``max``, ``mean`` or ``sum``). Steps 1-2
  are Captum's ``NoiseTunnel(Saliency(abs=True))`` with ``nt_type="smoothgrad"``.
- **vanilla_grad** is the case of one copy without noise; **gradient_x_input** is it with
  ``grad_x_input``: |g ⊙ x| (Shrikumar et al. 2016), Captum's ``InputXGradient`` made absolute.
- **Integrated Gradients** (Sundararajan et al. 2017): (x − b) ⊙ ∫₀¹ ∇f(b + α(x − b)) dα, the
  integral taken at ``steps`` points by Gauss-Legendre quadrature or the trapezoid rule, as
  Captum's ``IntegratedGradients`` (``method="gausslegendre"``, its default, or
  ``"riemann_trapezoid"``); the baseline b is black or each image's mean intensity. Its
  attributions are signed (they sum to f(x) − f(b)); the map is their magnitude.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from benchsuite.api import Objective, Params, Registry, StackedObjective, hookimpl

# Default chunk size, as pixels per chunk (rows x H x W). Measured on a 2-core CPU with a 4-layer
# conv net and grid_sample rotation, 64 images x 16 samples: at 32x32 chunks of 32-128 rows ran
# 2.6-3.3x faster than 1024 rows, at 64x64 chunks of 8-16 rows ran 3x faster than 512 rows; the
# optimum is where one chunk's activations still fit in cache, about 2**16 pixels either way.
# Accelerators want large chunks to stay busy: 2**21 pixels is 512 rows at 64x64 (not measured here).
_CPU_CHUNK_PIXELS = 2**16
_ACCELERATOR_CHUNK_PIXELS = 2**21
# channels_last measured 5-12% faster for 3-channel input on that CPU and equal for 1 channel.
_CHANNELS_LAST_DEVICES = ("cpu", "cuda")

ChannelReduce = Literal["max", "mean", "sum"]


class ExecutionParams(Params):
    """How a gradient method reduces channels and batches its rows; shared by every gradient method."""

    channel_reduce: ChannelReduce = Field(
        "max", description="How the per-channel attributions are reduced to one map, after averaging over samples."
    )
    chunk_size: int | None = Field(
        None,
        ge=1,
        le=1_048_576,
        description="Rows (noisy copies, path points) per forward/backward pass; bounds memory, never changes the result. "
        f"None picks {_CPU_CHUNK_PIXELS} // (H * W) rows on CPU, {_ACCELERATOR_CHUNK_PIXELS} // (H * W) on a GPU.",
    )
    channels_last: bool | None = Field(
        None, description="Feed the objective channels_last tensors; never changes the result. None: on for CPU and CUDA."
    )


class GradientParams(ExecutionParams):
    """The plain gradient methods: execution settings and the per-sample post-processing."""

    postprocess: Literal["abs", "grad_x_input"] = Field(
        "abs", description="Per-sample post-processing of the gradient g: |g| ('abs') or |g * input| ('grad_x_input')."
    )


class SmoothGradParams(GradientParams):
    """SmoothGrad: gradients averaged over noisy copies of each image."""

    samples: int = Field(16, ge=1, le=1024, description="Noisy copies per image (n).")
    spread: float = Field(0.15, ge=0, le=1, description="Noise standard deviation as a fraction of each image's (max - min).")


class IntegratedGradientsParams(ExecutionParams):
    """Integrated Gradients: the path integral of the gradient from a baseline to the image."""

    steps: int = Field(32, ge=2, le=4096, description="Points on the path at which the gradient is taken (Captum's n_steps).")
    method: Literal["gausslegendre", "riemann_trapezoid"] = Field(
        "gausslegendre", description="Quadrature of the path integral, as Captum names it."
    )
    baseline: Literal["zeros", "mean"] = Field(
        "zeros", description="The path's start: a black image, or each image's mean intensity everywhere."
    )


class VanillaGrad:
    """The post-processed gradient of the objective at each image, reduced over channels."""

    def __init__(self, params: GradientParams) -> None:
        self.params = params

    def __call__(self, objective: Objective, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return maps [N, H, W] for ``x`` [N, C, H, W]; ``generator`` is unused (no randomness)."""
        return self.stacked(AsStacked(objective), x, [generator])[0]

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models for ``x`` [N, C, H, W], one per generator."""
        # The noise-free case of SmoothGrad: one copy per image, displaced by zero.
        no_noise = torch.zeros((len(generators), x.shape[0], 1, *x.shape[1:]), device=x.device, dtype=x.dtype)
        rows = _row_attributions(objective, x, no_noise, self.params, _postprocess(self.params.postprocess))
        return reduce_channels(rows.mean(dim=2), self.params.channel_reduce)


def gradient_x_input(params: ExecutionParams) -> VanillaGrad:
    """``vanilla_grad`` with ``postprocess: grad_x_input``: |g ⊙ x|."""
    return VanillaGrad(GradientParams(**params.model_dump(), postprocess="grad_x_input"))


class SmoothGrad:
    """SmoothGrad: post-process each noisy copy's gradient, average over copies, reduce channels."""

    def __init__(self, params: SmoothGradParams) -> None:
        self.params = params

    def __call__(self, objective: Objective, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return maps [N, H, W] for ``x`` [N, C, H, W], with all noise drawn from ``generator``."""
        return self.stacked(AsStacked(objective), x, [generator])[0]

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models for ``x`` [N, C, H, W]; model k's noise comes from ``generators[k]``."""
        n_images = x.shape[0]
        noise = torch.empty((len(generators), n_images, self.params.samples, *x.shape[1:]), device=x.device, dtype=x.dtype)
        # Each model's noise is drawn up front in one call, as alone, so the result depends
        # neither on chunk_size nor on which models share the stack.
        for k, generator in enumerate(generators):
            torch.randn(noise.shape[1:], generator=generator, out=noise[k])
        value_range = x.detach().flatten(1).aminmax(dim=1)
        sigma = self.params.spread * (value_range.max - value_range.min)
        noise *= sigma.view(1, n_images, 1, 1, 1, 1)
        rows = _row_attributions(objective, x, noise, self.params, _postprocess(self.params.postprocess))
        return reduce_channels(rows.mean(dim=2), self.params.channel_reduce)


class IntegratedGradients:
    """Integrated Gradients by quadrature along the straight path, magnitude reduced over channels."""

    def __init__(self, params: IntegratedGradientsParams) -> None:
        self.params = params

    def __call__(self, objective: Objective, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return maps [N, H, W] for ``x`` [N, C, H, W]; ``generator`` is unused (no randomness)."""
        return self.stacked(AsStacked(objective), x, [generator])[0]

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models for ``x`` [N, C, H, W]."""
        alphas, weights = path_quadrature(self.params.steps, self.params.method)
        images = x.detach()
        baseline = (
            images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images)
            if self.params.baseline == "mean"
            else torch.zeros_like(images)
        )
        path = images - baseline
        alpha = torch.as_tensor(alphas, device=x.device, dtype=x.dtype)
        weight = torch.as_tensor(weights, device=x.device, dtype=x.dtype)
        # Row (i, s) is b + alpha_s (x - b) = x + (alpha_s - 1)(x - b).
        displacement = ((alpha - 1).view(1, -1, 1, 1, 1) * path.unsqueeze(1)).unsqueeze(0).repeat(len(generators), 1, 1, 1, 1, 1)
        rows = _row_attributions(
            objective, x, displacement, self.params, lambda grad, rows, sample: grad * weight[sample].view(-1, 1, 1, 1)
        )
        integral = rows.sum(dim=2)  # [K, N, C, H, W]
        return reduce_channels((integral * path).abs(), self.params.channel_reduce)


def path_quadrature(steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0, 1] and weights summing to 1 for the path integral, as Captum's approximation methods."""
    if method == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


RowAttribution = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(gradient, rows, sample index of each row) of one chunk, each [K, R, ...], to the rows' attributions."""


def _postprocess(kind: str) -> RowAttribution:
    if kind == "abs":
        return lambda grad, rows, sample: grad.abs()
    return lambda grad, rows, sample: (grad * rows).abs()


class AsStacked:
    """``objective`` as the stacked objective of one model (K = 1), checking its output shape."""

    def __init__(self, objective: Objective):
        self.objective, self.model = objective, getattr(objective, "model", None)

    def __call__(self, rows: Tensor, index: Tensor) -> Tensor:
        scores = self.objective(rows[0], index)
        if scores.shape != rows.shape[1:2]:
            raise ValueError(
                f"the saliency objective must return one score per image, shape [{rows.shape[1]}], got {tuple(scores.shape)}"
            )
        return scores.unsqueeze(0)


def _row_attributions(
    objective: StackedObjective, x: Tensor, displacement: Tensor, params: ExecutionParams, attribute: RowAttribution
) -> Tensor:
    """``attribute(gradient, rows, sample)`` at every row ``x + displacement``: [K, N, S, C, H, W].

    ``displacement`` is [K, N, S, C, H, W] for K models; row ``i * S + s`` of model k is image
    ``i`` plus model k's ``s``-th displacement, and the objective is told so (its ``index``).
    Each row's attribution overwrites its displacement in place, which keeps peak memory at one
    buffer. A chunk holds ``chunk_size`` rows over all K models.
    """
    k_models, n_images, samples = displacement.shape[:3]
    rows_total = n_images * samples
    flat = displacement.view(k_models, rows_total, *x.shape[1:])
    chunk = max(1, (params.chunk_size or _default_chunk_rows(x)) // k_models)
    channels_last = params.channels_last
    if channels_last is None:
        channels_last = x.device.type in _CHANNELS_LAST_DEVICES
    images = x.detach()
    # The caller may be under no_grad (e.g. an evaluation loop); the gradient is the point here.
    with torch.enable_grad():
        for start in range(0, rows_total, chunk):
            stop = min(start + chunk, rows_total)
            row_number = torch.arange(start, stop, device=x.device)
            image_of_row = row_number // samples
            rows = images[image_of_row] + flat[:, start:stop]
            if channels_last:
                # Physical [K, R, H, W, C]: every model's rows [R, C, H, W] are a channels-last view.
                rows = rows.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
            rows.requires_grad_(True)
            scores = objective(rows, image_of_row)
            if scores.shape != rows.shape[:2]:
                raise ValueError(
                    f"the stacked saliency objective must return scores [{k_models}, {stop - start}], got {tuple(scores.shape)}"
                )
            (grad,) = torch.autograd.grad(scores.sum(), rows)
            flat[:, start:stop] = attribute(grad, rows.detach(), row_number % samples)
    return displacement


def reduce_channels(attribution: Tensor, how: ChannelReduce) -> Tensor:
    """Attributions [..., C, H, W] reduced over channels to maps [..., H, W]."""
    if how == "max":
        return attribution.amax(dim=-3)
    if how == "mean":
        return attribution.mean(dim=-3)
    return attribution.sum(dim=-3)


def _default_chunk_rows(x: Tensor) -> int:
    """Rows per chunk for ``x`` [N, C, H, W] on its device: a pixel budget divided by H x W."""
    budget = _CPU_CHUNK_PIXELS if x.device.type == "cpu" else _ACCELERATOR_CHUNK_PIXELS
    return max(1, budget // (x.shape[-2] * x.shape[-1]))


@hookimpl
def benchsuite_register_saliency_methods(registry: Registry) -> None:
    """Register ``smoothgrad``, ``vanilla_grad``, ``gradient_x_input`` and ``integrated_gradients``."""
    registry.add(
        "smoothgrad",
        SmoothGrad,
        params=SmoothGradParams,
        description="SmoothGrad: |gradient| (or |gradient x input|) averaged over noisy copies, batched in chunks.",
    )
    registry.add(
        "vanilla_grad",
        VanillaGrad,
        params=GradientParams,
        description="Plain input gradient, post-processed and reduced over channels; no noise.",
    )
    registry.add(
        "gradient_x_input",
        gradient_x_input,
        params=ExecutionParams,
        description="Gradient x input, |g * x| (Captum's InputXGradient, absolute), reduced over channels.",
    )
    registry.add(
        "integrated_gradients",
        IntegratedGradients,
        params=IntegratedGradientsParams,
        description="Integrated Gradients from a black or mean baseline (Gauss-Legendre or trapezoid), magnitude per pixel.",
    )
