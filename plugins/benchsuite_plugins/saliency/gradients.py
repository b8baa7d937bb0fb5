"""Gradient saliency: SmoothGrad, the plain input gradient, gradient x input and Integrated Gradients, batched.

Each attributes an objective (one score per image) to the input pixels from its gradient at
rows made from the images: noisy copies, the images themselves, or points on the straight path
from a baseline. The rows of all images go through the objective in chunks of ``chunk_size``
rows, one forward and one backward pass per chunk, as in Captum (and unlike MONAI's
``SmoothGrad``, which loops over samples with batch size 1); the objective must therefore score
rows independently of each other (an encoder in eval mode, not a BatchNorm in training mode).
``stacked`` does the same for the K models of a stacked group in one pass per chunk, each model
with its own noise; one model alone is the case K = 1. Only one chunk's rows are held at a time,
and each image's attributions are summed as its rows go by, so memory does not grow with the
number of samples or steps.

- **SmoothGrad** (Smilkov et al. 2017) averages the post-processed gradient over ``samples``
  noisy copies of each image, with Gaussian noise of σ = ``spread`` × (max − min) of that image:
  (1) post-process each copy's gradient g: ``abs`` gives |g|, ``grad_x_input`` |g ⊙ x_noisy|;
  (2) average over the copies; (3) reduce over channels (``max``, ``mean`` or ``sum``). Steps 1-2
  are Captum's ``NoiseTunnel(Saliency(abs=True))`` with ``nt_type="smoothgrad"``. The noise is
  drawn image by image from the generator, a standard normal [samples, C, H, W] each.
- **vanilla_grad** is the case of one copy without noise; **gradient_x_input** is it with
  ``grad_x_input``: |g ⊙ x| (Shrikumar et al. 2016), Captum's ``InputXGradient`` made absolute.
- **Integrated Gradients** (Sundararajan et al. 2017): (x − b) ⊙ ∫₀¹ ∇f(b + α(x − b)) dα, the
  integral taken at ``steps`` points by Gauss-Legendre quadrature, as Captum's
  ``IntegratedGradients`` (``method="gausslegendre"``, its default), or by the trapezoid rule over
  [0, 1] (``"riemann_trapezoid"``, whose weights sum to 1 here and to (n − 1)/n in Captum); the
  baseline b is black or each image's mean intensity. Its attributions are signed (they sum to
  f(x) − f(b)); the map is their magnitude.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from benchsuite.api import Objective, Params, Registry, SaliencyFactory, StackedObjective, hookimpl

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
        "gausslegendre",
        description="Quadrature of the path integral, named as in Captum; the trapezoid weights sum to 1 (Captum's to (n-1)/n).",
    )
    baseline: Literal["zeros", "mean"] = Field(
        "zeros", description="The path's start: a black image, or each image's mean intensity everywhere."
    )


class Stackable(abc.ABC):
    """A saliency method written once, for K stacked models: the one-model call is the stack of one."""

    def __call__(self, objective: Objective, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return maps [N, H, W] for ``x`` [N, C, H, W], any randomness drawn from ``generator``."""
        return self.stacked(AsStacked(objective), x, [generator])[0]

    @abc.abstractmethod
    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models for ``x`` [N, C, H, W], model k's randomness from ``generators[k]``."""


class VanillaGrad(Stackable):
    """The post-processed gradient of the objective at each image, reduced over channels."""

    def __init__(self, params: GradientParams) -> None:
        self.params = params

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models for ``x`` [N, C, H, W]; no randomness."""
        # The noise-free case of SmoothGrad: one copy per image, displaced by zero.
        k_models = len(generators)

        def no_displacement(start: int, stop: int) -> Tensor:
            return x.new_zeros((k_models, stop - start, *x.shape[1:]))

        total = _row_sums(objective, x, k_models, 1, no_displacement, self.params, _postprocess(self.params.postprocess))
        return reduce_channels(total, self.params.channel_reduce)


def gradient_x_input(params: ExecutionParams) -> VanillaGrad:
    """``vanilla_grad`` with ``postprocess: grad_x_input``: |g ⊙ x|."""
    return VanillaGrad(GradientParams(**params.model_dump(), postprocess="grad_x_input"))


class SmoothGrad(Stackable):
    """SmoothGrad: post-process each noisy copy's gradient, average over copies, reduce channels."""

    def __init__(self, params: SmoothGradParams) -> None:
        self.params = params

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models for ``x`` [N, C, H, W]; model k's noise comes from ``generators[k]``."""
        samples = self.params.samples
        value_range = x.detach().flatten(1).aminmax(dim=1)
        sigma = self.params.spread * (value_range.max - value_range.min)
        noise = _PerImageNoise(generators, samples, x, sigma)
        total = _row_sums(objective, x, len(generators), samples, noise, self.params, _postprocess(self.params.postprocess))
        return reduce_channels(total / samples, self.params.channel_reduce)


class IntegratedGradients(Stackable):
    """Integrated Gradients by quadrature along the straight path, magnitude reduced over channels."""

    def __init__(self, params: IntegratedGradientsParams) -> None:
        self.params = params

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models for ``x`` [N, C, H, W]; no randomness."""
        steps, k_models = self.params.steps, len(generators)
        alphas, weights = path_quadrature(steps, self.params.method)
        images = x.detach()
        baseline = (
            images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images)
            if self.params.baseline == "mean"
            else torch.zeros_like(images)
        )
        path = images - baseline
        alpha = torch.as_tensor(alphas, device=x.device, dtype=x.dtype)
        weight = torch.as_tensor(weights, device=x.device, dtype=x.dtype)

        def on_the_path(start: int, stop: int) -> Tensor:
            # Row i * steps + s is b + alpha_s (x - b) = x + (alpha_s - 1)(x - b), the same for every model.
            row = torch.arange(start, stop, device=x.device)
            moved = (alpha[row % steps] - 1).view(-1, 1, 1, 1) * path[row // steps]
            return moved.expand(k_models, *moved.shape)

        integral = _row_sums(
            objective,
            x,
            k_models,
            steps,
            on_the_path,
            self.params,
            lambda grad, rows, sample: grad * weight[sample].view(-1, 1, 1, 1),
        )
        return reduce_channels((integral * path).abs(), self.params.channel_reduce)


def path_quadrature(steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0, 1] and weights summing to 1 for the path integral (Captum's trapezoid weights sum to (n-1)/n)."""
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


Displacement = Callable[[int, int], Tensor]
"""Rows ``start:stop`` of every model's displacement from their images, [K, stop - start, C, H, W]; asked for in order."""


class _PerImageNoise:
    """SmoothGrad's noise as a :data:`Displacement`, drawn image by image, in order, from each model's generator.

    Model k draws a standard normal [S, C, H, W] for image 0, then for image 1, and so on, each
    scaled by its image's sigma. So the noise depends neither on the chunks the rows are asked for
    in nor on which models share the stack, and only the images a chunk spans are held.
    """

    def __init__(self, generators: Sequence[torch.Generator], samples: int, x: Tensor, sigma: Tensor):
        self.generators, self.samples, self.x, self.sigma = generators, samples, x, sigma
        self.first = 0  # the image whose noise ``held`` starts with
        self.held = x.new_empty((len(generators), 0, *x.shape[1:]))  # [K, images x S, C, H, W]

    def __call__(self, start: int, stop: int) -> Tensor:
        s = self.samples
        first, last = start // s, (stop - 1) // s
        held = self.held[:, (first - self.first) * s :]
        drawn = first + held.shape[1] // s
        self.held = torch.cat([held, *(self._draw(i) for i in range(drawn, last + 1))], dim=1)
        self.first = first
        return self.held[:, start - first * s : stop - first * s]

    def _draw(self, image: int) -> Tensor:
        shape = (self.samples, *self.x.shape[1:])
        noise = torch.stack([torch.randn(shape, generator=g, device=self.x.device, dtype=self.x.dtype) for g in self.generators])
        return noise * self.sigma[image]


def _row_sums(
    objective: StackedObjective,
    x: Tensor,
    k_models: int,
    samples: int,
    displacement: Displacement,
    params: ExecutionParams,
    attribute: RowAttribution,
) -> Tensor:
    """Σ_s ``attribute(gradient, rows, s)`` over each image's ``samples`` rows, for K models: [K, N, C, H, W].

    Row ``i * S + s`` of model k is image ``i`` plus model k's displacement of that row, and the
    objective is told so (its ``index``). Rows go through the objective in chunks of
    ``chunk_size`` rows over all K models, and only a chunk's rows are ever held; each image's
    attributions are summed as its rows go by, so the chunks change the sums by rounding at most.
    """
    n_images = x.shape[0]
    rows_total = n_images * samples
    chunk = max(1, (params.chunk_size or _default_chunk_rows(x)) // k_models)
    channels_last = params.channels_last
    if channels_last is None:
        channels_last = x.device.type in _CHANNELS_LAST_DEVICES
    images = x.detach()
    total = x.new_zeros((k_models, n_images, *x.shape[1:]))
    # The caller may be under no_grad (e.g. an evaluation loop); the gradient is the point here.
    with torch.enable_grad():
        for start in range(0, rows_total, chunk):
            stop = min(start + chunk, rows_total)
            row_number = torch.arange(start, stop, device=x.device)
            image_of_row = row_number // samples
            rows = images[image_of_row] + displacement(start, stop)
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
            attributions = attribute(grad, rows.detach(), row_number % samples)
            # The chunk's rows, padded to whole images, summed per image: a plain reduction, so the
            # same on every run (an index_add_ on CUDA adds in whatever order its atomics land).
            first, last = start // samples, (stop - 1) // samples
            padded = attributions.new_zeros((k_models, (last - first + 1) * samples, *x.shape[1:]))
            padded[:, start - first * samples : stop - first * samples] = attributions
            total[:, first : last + 1] += padded.view(k_models, -1, samples, *x.shape[1:]).sum(dim=2)
    return total


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
def benchsuite_register_saliency_methods(registry: Registry[SaliencyFactory]) -> None:
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
