"""Gradient saliency: SmoothGrad and the plain input gradient, batched over noise samples.

Both attribute an objective (one score per image) to the input pixels. SmoothGrad (Smilkov et
al. 2017) averages the post-processed gradient over ``samples`` noisy copies of each image, with
Gaussian noise of σ = ``spread`` × (max − min) of that image. The order of operations is

1. post-process each noisy copy's gradient g: ``abs`` gives |g|, ``grad_x_input`` gives
   |g ⊙ x_noisy|;
2. average over the noisy copies of an image;
3. reduce over channels (``max``, ``mean`` or ``sum``).

Steps 1-2 are what Captum's ``NoiseTunnel(Saliency(abs=True))`` computes with
``nt_type="smoothgrad"``. As in Captum (and unlike MONAI's ``SmoothGrad``, which loops over
samples with batch size 1), the noisy copies are stacked into rows and go through the objective
in chunks of ``chunk_size`` rows: one forward and one backward pass per chunk. The objective
must therefore score rows independently of each other (an encoder in eval mode, not a
BatchNorm in training mode). ``stacked`` does the same for the K models of a stacked group in
one pass per chunk, each model with its own noise; one model alone is the case K = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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


class GradientParams(Params):
    """Post-processing and execution settings shared by the gradient saliency methods."""

    postprocess: Literal["abs", "grad_x_input"] = Field(
        "abs", description="Per-sample post-processing of the gradient g: |g| ('abs') or |g * input| ('grad_x_input')."
    )
    channel_reduce: Literal["max", "mean", "sum"] = Field(
        "max", description="How the per-channel attributions are reduced to one map, after averaging over samples."
    )
    chunk_size: int | None = Field(
        None,
        ge=1,
        le=1_048_576,
        description="Rows (noisy copies) per forward/backward pass; bounds memory, never changes the result. "
        f"None picks {_CPU_CHUNK_PIXELS} // (H * W) rows on CPU, {_ACCELERATOR_CHUNK_PIXELS} // (H * W) on a GPU.",
    )
    channels_last: bool | None = Field(
        None, description="Feed the objective channels_last tensors; never changes the result. None: on for CPU and CUDA."
    )


class SmoothGradParams(GradientParams):
    """SmoothGrad: gradients averaged over noisy copies of each image."""

    samples: int = Field(16, ge=1, le=1024, description="Noisy copies per image (n).")
    spread: float = Field(0.15, ge=0, le=1, description="Noise standard deviation as a fraction of each image's (max - min).")


class VanillaGrad:
    """The post-processed gradient of the objective at each image, reduced over channels."""

    def __init__(self, params: GradientParams) -> None:
        self.params = params

    def __call__(self, objective: Objective, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return maps [N, H, W] for ``x`` [N, C, H, W]; ``generator`` is unused (no randomness)."""
        return self.stacked(_one_model(objective), x, [generator])[0]

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models for ``x`` [N, C, H, W], one per generator."""
        # The noise-free case of SmoothGrad: one copy per image, displaced by zero.
        no_noise = torch.zeros((len(generators), x.shape[0], 1, *x.shape[1:]), device=x.device, dtype=x.dtype)
        return _average_attribution(objective, x, no_noise, self.params)


class SmoothGrad:
    """SmoothGrad: post-process each noisy copy's gradient, average over copies, reduce channels."""

    def __init__(self, params: SmoothGradParams) -> None:
        self.params = params

    def __call__(self, objective: Objective, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return maps [N, H, W] for ``x`` [N, C, H, W], with all noise drawn from ``generator``."""
        return self.stacked(_one_model(objective), x, [generator])[0]

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
        return _average_attribution(objective, x, noise, self.params)


def _one_model(objective: Objective) -> StackedObjective:
    """``objective`` as the stacked objective of one model, checking its output shape."""

    def stacked(rows: Tensor, index: Tensor) -> Tensor:
        scores = objective(rows[0], index)
        if scores.shape != rows.shape[1:2]:
            raise ValueError(
                f"the saliency objective must return one score per image, shape [{rows.shape[1]}], got {tuple(scores.shape)}"
            )
        return scores.unsqueeze(0)

    return stacked


def _average_attribution(objective: StackedObjective, x: Tensor, noise: Tensor, params: GradientParams) -> Tensor:
    """Mean over samples of the post-processed gradient at ``x + noise``, reduced over channels.

    ``noise`` is [K, N, S, C, H, W] for K models; row ``i * S + s`` of model k is image ``i``
    plus model k's ``s``-th noise sample, and the objective is told so (its ``index``). Each
    row's attribution overwrites its noise in place, which keeps peak memory at one buffer. A
    chunk holds ``chunk_size`` rows over all K models.
    """
    k_models, n_images, samples = noise.shape[:3]
    rows_total = n_images * samples
    flat = noise.view(k_models, rows_total, *x.shape[1:])
    chunk = max(1, (params.chunk_size or _default_chunk_rows(x)) // k_models)
    channels_last = params.channels_last
    if channels_last is None:
        channels_last = x.device.type in _CHANNELS_LAST_DEVICES
    images = x.detach()
    # The caller may be under no_grad (e.g. an evaluation loop); the gradient is the point here.
    with torch.enable_grad():
        for start in range(0, rows_total, chunk):
            stop = min(start + chunk, rows_total)
            image_of_row = torch.arange(start, stop, device=x.device) // samples
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
            attribution = grad if params.postprocess == "abs" else grad * rows.detach()
            flat[:, start:stop] = attribution.abs()
    mean = noise.mean(dim=2)  # [K, N, C, H, W]
    if params.channel_reduce == "max":
        return mean.amax(dim=2)
    if params.channel_reduce == "mean":
        return mean.mean(dim=2)
    return mean.sum(dim=2)


def _default_chunk_rows(x: Tensor) -> int:
    """Rows per chunk for ``x`` [N, C, H, W] on its device: a pixel budget divided by H x W."""
    budget = _CPU_CHUNK_PIXELS if x.device.type == "cpu" else _ACCELERATOR_CHUNK_PIXELS
    return max(1, budget // (x.shape[-2] * x.shape[-1]))


@hookimpl
def benchsuite_register_saliency_methods(registry: Registry) -> None:
    """Register ``smoothgrad`` and ``vanilla_grad``."""
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
