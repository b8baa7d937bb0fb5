"""Train K independent copies of one SSP method as a single stacked model.

The cells of a theta sweep differ only in theta and seed, so their models have the same
architecture. ``train_stacked`` keeps every parameter and buffer of the K models stacked along a
new leading dimension and runs one forward and backward for all of them with ``torch.func``:
``vmap`` over ``functional_call`` of the unmodified ``SSPMethod``. Each model keeps its own
initial weights, theta, batch order, optimiser state and buffers (BatchNorm running statistics,
MoCo's queue and pointer): the losses of the K models are independent, so the gradient of their
sum is each model's own gradient, and SGD and Adam act elementwise, so one optimiser over the
stacked tensors updates each slice exactly as a per-model optimiser would.

Design:

- **Shells.** Each ``methods[k]`` is its own "shell": its parameters and buffers are re-pointed
  (``tensor.data = stacked[k]``, object identity kept) at slice k of the stacked tensors. So
  anything that writes into a model in place (an ``after_step`` hook, ``load_state_dict``) writes
  into the stack, and reading ``methods[k]`` shows model k's current state. At the end each
  tensor gets its own storage again (so a ``state_dict`` does not drag the whole stack along).
- **Forward.** ``vmap(functional_call(methods[0], stacked))`` over views [K, B, C, H, W]. In-place
  buffer writes in ``forward`` (BatchNorm statistics, ``queue[idx] = keys``, ``ptr.copy_``) work
  under vmap because the buffers are batched too; they land in the stacked tensors.
- **after_step.** Chosen once by a probe on clones of the first two models, compared with
  calling ``after_step`` on each model alone: ``"stacked"`` calls the hook once with the stacked
  tensors swapped in (right for elementwise hooks such as MoCo's lerp: one kernel per tensor);
  ``"vmap"`` calls it once under vmap; ``"loop"`` calls it on each shell (always right for hooks
  that write in place, K times the kernels).
- **Views.** The augmentation takes one float theta, so views are made outside vmap: with
  ``pairs(x [K, B, C, H, W], thetas)`` when given, else ``views.stacked_fresh_pairs``: a
  deterministic augmentation's optional ``stacked(x, thetas)`` method (the ``rotation``
  plugin's makes all K views in one ``grid_sample``), else one ``augment`` call per model (a
  random augmentation's, each model with its own draws, as alone).

What makes a method stackable (nothing new to write, but these rules; docs/plugins.md says the
same to plugin authors):

- all state that changes in training is parameters or buffers (a Python attribute changed in
  ``forward`` or ``after_step`` changes only on ``methods[0]``);
- ``forward`` runs under vmap: no ``.item()``, ``.tolist()`` or Python branching on tensor
  values, no data-dependent shapes (boolean-mask indexing, ``nonzero``), no random ops (vmap's
  ``randomness="error"``); in-place writes go to buffers, never to plain tensor attributes;
- the loss of a batch is the model's own: nothing couples the K models (no cross-GPU shuffle-BN);
- the optimiser (SGD, Adam) acts elementwise, so no per-tensor norms (LARS/LAMB, clipping);
- ``after_step`` writes in place (``lerp_``, ``copy_``), never rebinds ``.data``.

Ops without a vmap batching rule still work through vmap's per-slice fallback (a warning,
K kernels): ``fill_diagonal_`` in SimCLR's loss, ``lerp_`` in MoCo's hook when run under vmap.

Mixed precision and BatchNorm. Under ``torch.autocast`` a BatchNorm layer gets a bf16 (or fp16)
input while its weight and running statistics stay float32. Alone, the kernel accepts that mix;
under vmap it does not: torch.func's batching rule for ``native_batch_norm`` folds the K models
into the channels and passes a dummy weight of ones made in the *input's* dtype, so the kernel
sees a bf16 input and weight with a float32 ``running_mean`` and refuses it (CUDA:
``RuntimeError: Expected running_mean to have type BFloat16 but got Float``; CPU: ``expected
scalar type BFloat16 but found Float``). So while ``train_stacked`` runs, every BatchNorm of the
model (``nn.modules.batchnorm._BatchNorm``) whose input is float16/bfloat16 and whose running
statistics are of another dtype casts its input to the statistics' dtype, normalises with
autocast off and casts the output back to the input's dtype: the statistics stay float32, as
in a per-model run, and the arithmetic is the float32 arithmetic the mixed-dtype kernel does
anyway. The patch is an instance attribute ``forward`` on the first model's BatchNorm modules
(the only ones vmap calls), removed when training ends, however it ends. CPU autocast reaches
few ops under vmap (convolutions and ``linear`` with a bias stay float32 there), so on the CPU
the failure shows only for a BatchNorm after a bias-free ``linear`` (a plain matmul).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from benchsuite.api import Augmentation, SSPMethod, StackedObjective
from benchsuite.engine.training import NonFiniteLoss, TrainingCurves, _lr_at, fast_kernels
from benchsuite.engine.views import FixedPair, stacked_fixed_pairs, stacked_fresh_pairs

__all__ = ["StackedNonFiniteLoss", "after_step_mode", "stacked_pair_similarity", "train_stacked"]

AfterStepMode = Literal["auto", "stacked", "vmap", "loop"]
Pairs = Callable[[Tensor, Sequence[float]], tuple[Tensor, Tensor]]


class StackedNonFiniteLoss(NonFiniteLoss):
    """The SSP loss of model ``model`` of a stack became NaN or infinite."""

    def __init__(self, epoch: int, value: float, model: int):
        super().__init__(epoch, value)
        self.model = model
        self.args = (f"model {model} of the stack: {self.args[0]}",)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.epoch, self.value, self.model))


# --------------------------------------------------------------------------------------------
# Stacked state


def _named_tensors(module: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    return dict(module.named_parameters()), dict(module.named_buffers())


def _slice_layout(t: Tensor, channels_last: bool) -> Tensor:
    """A contiguous [K, ...] copy; with ``channels_last`` each 4-d slice is channels-last."""
    if channels_last and t.ndim == 5:
        # Physical [K, O, h, w, I]: slice k and the [K*O, I, h, w] weight of a vmapped
        # (grouped) convolution are then both channels-last views.
        return t.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return t.contiguous()


def _stack_into_shells(methods: Sequence[SSPMethod], channels_last: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Stack the K models' tensors one name at a time and re-point each model's tensors at its slice.

    Doing it name by name keeps the peak at one model's worth of extra memory, not K.
    """
    per_model = [_named_tensors(m) for m in methods]
    params: dict[str, Tensor] = {}
    buffers: dict[str, Tensor] = {}
    for target, index in ((params, 0), (buffers, 1)):
        for name, first in per_model[0][index].items():
            tensors = [tensors_of[index][name] for tensors_of in per_model]
            with torch.no_grad():
                stacked = _slice_layout(torch.stack([t.detach() for t in tensors]), channels_last)
            if index == 0:
                stacked.requires_grad_(first.requires_grad)
            for k, t in enumerate(tensors):
                t.data = stacked.detach()[k]
            target[name] = stacked
    return params, buffers


def _unstack_shells(methods: Sequence[SSPMethod]) -> None:
    """Give every parameter and buffer of every model its own storage again, one name at a time."""
    per_model = [{**dict(m.named_parameters()), **dict(m.named_buffers())} for m in methods]
    for name in per_model[0]:
        for tensors in per_model:
            t = tensors[name]
            t.data = t.data.clone()
            t.grad = None


class _Bound(nn.Module):
    """One method of an SSP method as ``forward``, so ``functional_call`` (which calls forward) can run it.

    The state keys are the method's own, prefixed with ``method.``.
    """

    def __init__(self, method: SSPMethod, name: str):
        super().__init__()
        self.method, self.name = method, name

    def forward(self, *args: Tensor) -> Tensor:
        out = getattr(self.method, self.name)(*args)
        return torch.zeros(()) if out is None else out  # vmap needs a tensor back, even from a hook


def _after_step_call(method: SSPMethod, mode: str) -> Callable[[dict[str, Tensor], dict[str, Tensor], float], None]:
    """``after_step(progress)`` on the stacked state: called once on it, or vmapped over its models."""
    wrapper = _Bound(method, "after_step")

    def call(params: dict[str, Tensor], buffers: dict[str, Tensor], progress: float) -> None:
        def once(params: dict[str, Tensor], buffers: dict[str, Tensor]) -> Tensor:
            state = {f"method.{n}": t for n, t in (*params.items(), *buffers.items())}
            return functional_call(wrapper, state, (progress,))

        (once if mode == "stacked" else vmap(once))(params, buffers)

    return call


def _has_after_step(method: SSPMethod) -> bool:
    return type(method).after_step is not SSPMethod.after_step


def _probe_after_step(methods: Sequence[SSPMethod]) -> str:
    """The cheapest ``after_step`` mode that matches per-model calls on clones of two models."""
    sample = [copy.deepcopy(m) for m in methods[:2]]
    with torch.no_grad():
        # Make query and key copies differ (deterministically: the global RNG is left alone),
        # so that a hook that mixes up slices or tensors shows it.
        for i, m in enumerate(sample):
            for j, p in enumerate(m.parameters()):
                wave = torch.arange(p.numel(), device=p.device, dtype=torch.float32).mul_(0.37 * (j + 1) + i).sin_()
                p.add_(wave.reshape(p.shape).to(p.dtype), alpha=0.1)
    reference = [copy.deepcopy(m) for m in sample]
    progress = 0.5  # mid-training, where a schedule is neither at its start nor its end
    for m in reference:
        m.after_step(progress)
    for mode in ("stacked", "vmap"):
        trial = [copy.deepcopy(m) for m in sample]
        params, buffers = _stack_into_shells(trial, channels_last=False)
        try:
            _after_step_call(trial[0], mode)(params, buffers, progress)
        except Exception:  # noqa: BLE001 - whatever a trial mode raises only rules that mode out; "loop" is always right
            continue
        if all(
            torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
            for got, want in zip(trial, reference, strict=True)
            for a, b in zip((*got.parameters(), *got.buffers()), (*want.parameters(), *want.buffers()), strict=True)
        ):
            return mode
    return "loop"


_PROBED: dict[tuple[object, ...], str] = {}


def after_step_mode(methods: Sequence[SSPMethod]) -> str:
    """How ``train_stacked(after_step="auto")`` runs the hook of these methods: none, stacked, vmap or loop.

    Probed once per method type, params and tensor layout (names, shapes, dtypes, devices): the
    answer depends on the hook's code and configuration, not on the weights.
    """
    first = methods[0]
    if not _has_after_step(first):
        return "none"
    layout = tuple((n, t.shape, t.dtype, t.device) for n, t in (*first.named_parameters(), *first.named_buffers()))
    key = (type(first), first.params, layout)
    if key not in _PROBED:
        _PROBED[key] = _probe_after_step(methods)
    return _PROBED[key]


# --------------------------------------------------------------------------------------------
# BatchNorm under autocast

_REDUCED = (torch.float16, torch.bfloat16)


def _in_stat_dtype(module: nn.modules.batchnorm._BatchNorm, forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def forward_in_stat_dtype(x: Tensor, *args: object, **kwargs: object) -> Tensor:
        stats = module.running_mean
        if stats is None or x.dtype not in _REDUCED or stats.dtype == x.dtype:
            return forward(x, *args, **kwargs)
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.to(stats.dtype), *args, **kwargs).to(x.dtype)

    return forward_in_stat_dtype


@contextlib.contextmanager
def _batchnorm_in_stat_dtype(model: nn.Module) -> Iterator[None]:
    """While active, ``model``'s BatchNorm layers normalise a float16/bfloat16 input in their statistics' dtype.

    See the module docstring ("Mixed precision and BatchNorm"): this is what makes autocast work
    under vmap for BatchNorm models. Each layer's own ``forward`` attribute is restored on exit.
    """
    patched: list[tuple[nn.Module, Callable[..., Tensor] | None]] = []
    try:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                own = vars(module).get("forward")  # an instance attribute, if someone set one
                patched.append((module, own))
                module.forward = _in_stat_dtype(module, module.forward)
        yield
    finally:
        for module, own in reversed(patched):
            if own is None:
                del module.forward
            else:
                module.forward = own


# --------------------------------------------------------------------------------------------
# Views


def _channels_last_5d(x: Tensor) -> Tensor:
    # Physical [B, H, W, K, C]: the [B, K*C, H, W] input of a vmapped convolution is then a
    # channels-last view, and so is each model's slice.
    return x.permute(1, 3, 4, 0, 2).contiguous().permute(3, 0, 4, 1, 2)


# --------------------------------------------------------------------------------------------
# Training


def train_stacked(
    methods: Sequence[SSPMethod],
    augment: Augmentation,
    thetas: Sequence[float],
    images: Tensor,
    generators: Sequence[torch.Generator],
    *,
    views: Sequence[torch.Generator] | None = None,
    pairs: Pairs | None = None,
    after_step: AfterStepMode = "auto",
    channels_last: bool | None = None,
) -> list[TrainingCurves]:
    """Train ``methods[k]`` on pairs ``augment(batch, thetas[k])`` with batches drawn by ``generators[k]``.

    A random augmentation draws model k's parameters from ``views[k]``, as ``pretrain`` does.
    The same loop as :func:`benchsuite.engine.training.pretrain` for each model (epochs, batch size,
    drop-last, optimiser, learning-rate schedule, NaN check), run for all K models at once. The
    methods must share type and ``params`` and live on ``images``' device. Afterwards each
    ``methods[k]`` holds its trained parameters and buffers (in place: same tensor objects);
    ``.grad`` is left empty. ``epoch_seconds`` is the wall time of the whole stack's epoch.
    The arithmetic is :func:`benchsuite.engine.training.fast_kernels`' for the device, as in
    ``pretrain``; ``channels_last`` defaults to whether the images are on a GPU.
    """
    k_models = len(methods)
    if not (k_models == len(thetas) == len(generators)) or k_models == 0:
        raise ValueError(f"need one theta and one generator per method, got {k_models}, {len(thetas)}, {len(generators)}")
    first = methods[0]
    if any(type(m) is not type(first) or m.params != first.params for m in methods):
        raise ValueError("stacked methods must have the same type and params")
    p = first.params
    n = images.shape[0]
    batch = min(p.batch_size, n)
    steps_per_epoch = n // batch
    total = p.epochs * steps_per_epoch
    device = images.device
    if channels_last is None:
        channels_last = images.is_cuda
    if pairs is None:
        pairs = functools.partial(stacked_fresh_pairs, augment, generators=views)

    mode = after_step_mode(methods) if after_step == "auto" else after_step
    for m in methods:
        m.train()
    params, buffers = _stack_into_shells(methods, channels_last)
    trainable = [t for t in params.values() if t.requires_grad]
    if p.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(trainable, lr=p.lr, weight_decay=p.weight_decay)
    else:
        optimizer = torch.optim.SGD(trainable, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)

    def losses_of(params: dict[str, Tensor], buffers: dict[str, Tensor], view1: Tensor, view2: Tensor) -> Tensor:
        return functional_call(first, (params, buffers), (view1, view2))

    stacked_loss = vmap(losses_of)
    hook = _after_step_call(first, mode) if mode in ("stacked", "vmap") else None

    step_loss, step_lr, epoch_seconds = [], [], []
    try:
        with _batchnorm_in_stat_dtype(first):
            for epoch in range(p.epochs):
                started = time.perf_counter()
                order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)  # [K, N]
                losses = []
                for i in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + i
                    lr = _lr_at(step, total, p)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    with fast_kernels(device):
                        view1, view2 = pairs(images[order[:, i * batch : (i + 1) * batch]], thetas)
                        if channels_last:
                            view1, view2 = _channels_last_5d(view1), _channels_last_5d(view2)
                        loss = stacked_loss(params, buffers, view1, view2)  # [K]
                    optimizer.zero_grad(set_to_none=True)
                    loss.sum().backward()
                    optimizer.step()
                    if hook is not None:
                        hook(params, buffers, step / total)
                    elif mode == "loop":
                        for m in methods:
                            m.after_step(step / total)
                    losses.append(loss.detach())
                    step_lr.append(lr)
                epoch_losses = torch.stack(losses).float().cpu().numpy()  # [steps, K]
                bad = ~np.isfinite(epoch_losses)
                if bad.any():
                    step, model = np.argwhere(bad)[0]
                    raise StackedNonFiniteLoss(epoch, float(epoch_losses[step, model]), int(model))
                step_loss.append(epoch_losses)
                epoch_seconds.append(time.perf_counter() - started)
    finally:
        # Drop every reference to the stacked leaves (the last loss's graph holds them too) so
        # that each stacked tensor is freed as soon as its slices are copied out.
        loss = view1 = view2 = None
        del optimizer, trainable, params, buffers
        _unstack_shells(methods)

    steps = np.concatenate(step_loss).astype(np.float64)  # [total, K]
    return [
        TrainingCurves(
            epoch_loss=steps[:, k].reshape(p.epochs, steps_per_epoch).mean(axis=1),
            epoch_seconds=np.asarray(epoch_seconds),
            step_loss=steps[:, k].copy(),
            step_lr=np.asarray(step_lr, dtype=np.float64),
        )
        for k in range(k_models)
    ]


# --------------------------------------------------------------------------------------------
# Saliency


def stacked_pair_similarity(methods: Sequence[SSPMethod], pairs: Sequence[FixedPair]) -> StackedObjective:
    """cos(f_k(v1), f_k(v2)) of K trained models at once, (v1, v2) model k's pair of each row: [K, R, C, H, W] to [K, R].

    The stacked counterpart of :class:`benchsuite.engine.pipeline.PairSimilarity`, for a saliency
    method's optional ``stacked``: one vmapped ``embed`` per view for all K models. ``pairs[k]``
    is model k's pair (its theta, and its draws for a random augmentation). The models' tensors
    are copied into stacked tensors once and without gradient (saliency differentiates with
    respect to the rows only); the models stay as they are, in the mode the caller set (eval for
    saliency, so rows are scored independently). Its ``model`` is ``methods[0]``, whose modules
    every call runs with each model's weights.
    """
    return _StackedPairSimilarity(methods, pairs)


class _StackedPairSimilarity:
    """:func:`stacked_pair_similarity`'s objective (``api.StackedObjective``)."""

    def __init__(self, methods: Sequence[SSPMethod], pairs: Sequence[FixedPair]):
        params, buffers = stack_module_state(list(methods))
        self.state = {f"method.{name}": t.detach() for name, t in (*params.items(), *buffers.items())}
        self.model, self.pairs = methods[0], pairs
        embed = _Bound(methods[0], "embed")
        self._embed_all = vmap(lambda state, x: functional_call(embed, state, (x,)))

    def __call__(self, rows: Tensor, index: Tensor) -> Tensor:
        view1, view2 = stacked_fixed_pairs(self.pairs, rows, index)
        return F.cosine_similarity(self._embed_all(self.state, view1), self._embed_all(self.state, view2), dim=-1)
