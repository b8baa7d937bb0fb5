"""The pre-training loop shared by every SSP method: batches, optimiser, schedule, curves.

A method plugin only says what one step's loss is; the loop here owns everything else, so all
methods are trained and recorded the same way.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from benchsuite.api import AnyAugmentation, SSPMethod, TrainingParams
from benchsuite.engine.views import draw_generator, fresh_pair
from benchsuite.results.cell_result import TrainingCurves


class NonFiniteLoss(Exception):
    """The SSP loss became NaN or infinite."""

    def __init__(self, epoch: int, value: float):
        self.epoch, self.value = epoch, value
        super().__init__(f"the SSP loss became {value} in epoch {epoch + 1}")

    def __reduce__(self) -> tuple[object, ...]:  # picklable across worker processes
        return (type(self), (self.epoch, self.value))


class StackedNonFiniteLoss(NonFiniteLoss):
    """The SSP loss of model ``model`` of a stack became NaN or infinite."""

    def __init__(self, epoch: int, value: float, model: int):
        super().__init__(epoch, value)
        self.model = model
        self.args = (f"model {model} of the stack: {self.args[0]}",)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.epoch, self.value, self.model))


@dataclass(frozen=True)
class Schedule:
    """The steps of training on ``images`` images: whole batches of ``batch``, the last partial one dropped.

    Every step sees the same batch size, which contrastive losses depend on.
    """

    params: TrainingParams
    batch: int
    steps_per_epoch: int

    @classmethod
    def of(cls, params: TrainingParams, images: int) -> Schedule:
        batch = min(params.batch_size, images)
        return cls(params, batch, images // batch)

    @property
    def total(self) -> int:
        return self.params.epochs * self.steps_per_epoch

    def lr_at(self, step: int) -> float:
        p = self.params
        if p.schedule == "constant":
            return p.lr
        return 0.5 * p.lr * (1 + math.cos(math.pi * step / self.total))


def _optimizer(trainable: Sequence[Tensor], p: TrainingParams) -> torch.optim.Optimizer:
    if p.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(trainable, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


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
    augment: AnyAugmentation,
    theta: float,
    images: Tensor,
    schedule: Schedule,
    order: torch.Generator,
    views: torch.Generator | None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Pairs of views of ``images`` in the ``schedule``'s batches, pass after pass without end.

    ``order`` (CPU) shuffles each pass, which is cut into the schedule's whole batches; a random
    augmentation draws from ``views`` (on the images' device). Nothing is drawn before a pair is
    asked for.
    """
    n, batch = images.shape[0], schedule.batch
    while True:
        shuffled = torch.randperm(n, generator=order).to(images.device)
        for i in range(schedule.steps_per_epoch):
            yield fresh_pair(augment, images[shuffled[i * batch : (i + 1) * batch]], theta, views)


def before_training(method: SSPMethod, augment: AnyAugmentation, theta: float, images: Tensor, seed: int) -> None:
    """Show ``method`` its training pairs before the first step (:meth:`SSPMethod.before_training`).

    The pairs come from the cell's own ``before training`` streams, so the batches and views the
    training steps draw are the same whether or not the method reads any, and a method that fills
    state here (MoCo's queue) does so identically alone and in a stack. Training mode and
    :func:`fast_kernels` arithmetic, as the first step would run it; no gradient.
    """
    device = images.device
    order = draw_generator(seed, "before training order", torch.device("cpu"))
    views = draw_generator(seed, "before training", device)
    pairs = training_pairs(augment, theta, images, Schedule.of(method.params, images.shape[0]), order, views)
    method.train()
    with torch.no_grad(), fast_kernels(device):
        method.before_training(pairs)


def train_loop(
    schedule: Schedule,
    trainable: Sequence[Tensor],
    pairs: Iterator[tuple[Tensor, Tensor]],
    loss_of: Callable[[Tensor, Tensor], Tensor],
    after_step: Callable[[float], None],
    device: torch.device,
    *,
    progress: bool = False,
    label: str = "pre-training",
) -> list[TrainingCurves]:
    """The loop every cell trains with, alone or in a stack of K: one curve per model.

    Each step sets the learning rate, takes the next pair of views, computes the loss (a scalar,
    or one per model: [K]) under :func:`fast_kernels`, steps the optimiser over ``trainable`` on
    the losses' sum and calls ``after_step(progress through training)``. The losses are checked
    for NaN once per epoch, which is one device sync per epoch rather than per step.
    """
    p = schedule.params
    optimizer = _optimizer(trainable, p)
    step_loss, step_lr, epoch_seconds = [], [], []
    bar = tqdm(range(p.epochs), desc=label, unit="epoch", leave=False, disable=not progress)
    try:
        for epoch in bar:
            started = time.perf_counter()
            losses = []
            for i in range(schedule.steps_per_epoch):
                step = epoch * schedule.steps_per_epoch + i
                lr = schedule.lr_at(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with fast_kernels(device):
                    view1, view2 = next(pairs)
                    loss = loss_of(view1, view2)
                optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
                optimizer.step()
                after_step(step / schedule.total)
                losses.append(loss.detach())
                step_lr.append(lr)
            epoch_losses = torch.stack(losses).float().cpu().numpy()  # [steps] or [steps, K]
            bad = ~np.isfinite(epoch_losses)
            if bad.any():
                at = tuple(np.argwhere(bad)[0])
                value = float(epoch_losses[at])
                raise NonFiniteLoss(epoch, value) if epoch_losses.ndim == 1 else StackedNonFiniteLoss(epoch, value, int(at[1]))
            step_loss.append(epoch_losses)
            epoch_seconds.append(time.perf_counter() - started)
            bar.set_postfix(loss=f"{epoch_losses.mean():.4f}")
    finally:
        # Drop every reference to the trained tensors (the last loss's graph holds them too), so
        # that an error raised from here (out of memory, say) does not keep them alive.
        loss = view1 = view2 = optimizer = trainable = pairs = None  # type: ignore[assignment]
    steps = np.concatenate(step_loss).astype(np.float64).reshape(schedule.total, -1)  # [total, K]
    return [
        TrainingCurves(
            epoch_loss=steps[:, k].reshape(p.epochs, schedule.steps_per_epoch).mean(axis=1),
            epoch_seconds=np.asarray(epoch_seconds),
            step_loss=steps[:, k].copy(),
            step_lr=np.asarray(step_lr, dtype=np.float64),
        )
        for k in range(steps.shape[1])
    ]


def pretrain(
    method: SSPMethod,
    augment: AnyAugmentation,
    theta: float,
    images: Tensor,
    generator: torch.Generator,
    *,
    views: torch.Generator | None = None,
    progress: bool = False,
    label: str = "pre-training",
) -> TrainingCurves:
    """Train ``method`` on positive pairs ``augment(batch, theta)`` of ``images`` (on their device): :func:`train_loop`.

    Batches are drawn without replacement by ``generator`` (CPU); a random augmentation draws
    each batch's parameters from ``views`` (on the images' device). On CUDA the forward passes
    run under :func:`fast_kernels` with channels-last memory.
    """
    p = method.params
    if images.is_cuda:
        method.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    schedule = Schedule.of(p, images.shape[0])
    pairs = training_pairs(augment, theta, images, schedule, generator, views)
    method.train()
    trainable = [q for q in method.parameters() if q.requires_grad]
    (curves,) = train_loop(schedule, trainable, pairs, method, method.after_step, images.device, progress=progress, label=label)
    return curves
