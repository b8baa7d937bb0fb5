"""The pre-training loop shared by every SSP method: batches, optimiser, schedule, curves.

A method plugin only says what one step's loss is; the loop here owns everything else, so all
methods are trained and recorded the same way.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from benchsuite.api import Augmentation, SSPMethod, TrainingParams
from benchsuite.engine.views import draw_generator, fresh_pair


class NonFiniteLoss(Exception):
    """The SSP loss became NaN or infinite."""

    def __init__(self, epoch: int, value: float):
        self.epoch, self.value = epoch, value
        super().__init__(f"the SSP loss became {value} in epoch {epoch + 1}")

    def __reduce__(self) -> tuple[object, ...]:  # picklable across worker processes
        return (type(self), (self.epoch, self.value))


@dataclass(frozen=True)
class TrainingCurves:
    """Loss and wall time per epoch, and loss and learning rate per step."""

    epoch_loss: np.ndarray
    epoch_seconds: np.ndarray
    step_loss: np.ndarray
    step_lr: np.ndarray


def _optimizer(method: SSPMethod, p: TrainingParams) -> torch.optim.Optimizer:
    trainable = [q for q in method.parameters() if q.requires_grad]
    if p.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(trainable, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


def _lr_at(step: int, total: int, p: TrainingParams) -> float:
    if p.schedule == "constant":
        return p.lr
    return 0.5 * p.lr * (1 + math.cos(math.pi * step / total))


def fast_kernels(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The arithmetic of training on ``device``: bf16 autocast on CUDA, plain fp32 on a CPU.

    Autocast covers the encoder's convolutions and matmuls; the methods compute their losses in
    fp32 (cosines near 1 differ in the third digit, which bf16 rounds away), and saliency is
    never autocast. TF32 matmuls are left off for the same reason: their 10-bit mantissa would
    round the fp32 loss arithmetic too. cuDNN convolutions use TF32 by torch's default.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def training_pairs(
    augment: Augmentation, theta: float, images: Tensor, batch_size: int, order: torch.Generator, views: torch.Generator | None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Pairs of views of ``images`` in training batches, pass after pass without end.

    ``order`` (CPU) shuffles each pass, which is cut into batches of ``batch_size`` (at most the
    image count), a last partial batch dropped; a random augmentation draws from ``views`` (on
    the images' device). Nothing is drawn before a pair is asked for.
    """
    n = images.shape[0]
    batch = min(batch_size, n)
    while True:
        shuffled = torch.randperm(n, generator=order).to(images.device)
        for i in range(n // batch):
            yield fresh_pair(augment, images[shuffled[i * batch : (i + 1) * batch]], theta, views)


def before_training(method: SSPMethod, augment: Augmentation, theta: float, images: Tensor, seed: int) -> None:
    """Show ``method`` its training pairs before the first step (:meth:`SSPMethod.before_training`).

    The pairs come from the cell's own ``before training`` streams, so the batches and views the
    training steps draw are the same whether or not the method reads any, and a method that fills
    state here (MoCo's queue) does so identically alone and in a stack. Training mode and
    :func:`fast_kernels` arithmetic, as the first step would run it; no gradient.
    """
    device = images.device
    order = draw_generator(seed, "before training order", torch.device("cpu"))
    views = draw_generator(seed, "before training", device)
    pairs = training_pairs(augment, theta, images, method.params.batch_size, order, views)
    method.train()
    with torch.no_grad(), fast_kernels(device):
        method.before_training(pairs)


def pretrain(
    method: SSPMethod,
    augment: Augmentation,
    theta: float,
    images: Tensor,
    generator: torch.Generator,
    *,
    views: torch.Generator | None = None,
    progress: bool = False,
    label: str = "pre-training",
) -> TrainingCurves:
    """Train ``method`` on positive pairs ``augment(batch, theta)`` of ``images`` (on their device).

    Batches are drawn without replacement by ``generator`` (CPU); a random augmentation draws
    each batch's parameters from ``views`` (on the images' device). A last partial batch is
    dropped so every step sees the same batch size, which contrastive losses depend on. On CUDA
    the forward passes run under :func:`fast_kernels` with channels-last memory.
    """
    p = method.params
    if images.is_cuda:
        method.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    steps_per_epoch = images.shape[0] // min(p.batch_size, images.shape[0])
    total = p.epochs * steps_per_epoch
    pairs = training_pairs(augment, theta, images, p.batch_size, generator, views)
    optimizer = _optimizer(method, p)
    method.train()
    step_loss, step_lr, epoch_seconds = [], [], []
    bar = tqdm(range(p.epochs), desc=label, unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        started = time.perf_counter()
        losses = []
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            lr = _lr_at(step, total, p)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with fast_kernels(images.device):
                view1, view2 = next(pairs)
                loss = method(view1, view2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.after_step(step / total)
            losses.append(loss.detach())
            step_lr.append(lr)
        # One device sync per epoch rather than per step.
        epoch_losses = torch.stack(losses).float().cpu().numpy()
        if not np.isfinite(epoch_losses).all():
            raise NonFiniteLoss(epoch, float(epoch_losses[~np.isfinite(epoch_losses)][0]))
        step_loss.extend(epoch_losses.tolist())
        epoch_seconds.append(time.perf_counter() - started)
        bar.set_postfix(loss=f"{epoch_losses.mean():.4f}")
    steps = np.asarray(step_loss, dtype=np.float64)
    return TrainingCurves(
        epoch_loss=steps.reshape(p.epochs, steps_per_epoch).mean(axis=1),
        epoch_seconds=np.asarray(epoch_seconds),
        step_loss=steps,
        step_lr=np.asarray(step_lr, dtype=np.float64),
    )
