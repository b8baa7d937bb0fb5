"""Train K independent copies of one SSP method as a single stacked model (``torch.func.vmap``).

docs/design.md ("Stacked training") says how and why: the K models' tensors stacked along a new
leading dimension, each ``methods[k]`` a shell whose tensors are slices of the stack, one
optimiser over the stack acting as K. docs/plugins.md lists what makes a method stackable.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from benchsuite.api import AnyAugmentation, SSPMethod, StackedObjective
from benchsuite.engine.training import Schedule, train_loop
from benchsuite.engine.views import FixedPair, stacked_fixed_pairs, stacked_fresh_pairs
from benchsuite.results.cell_result import TrainingCurves

__all__ = ["after_step_mode", "stacked_pair_similarity", "train_stacked"]

AfterStepMode = Literal["auto", "stacked", "vmap", "loop"]
Pairs = Callable[[Tensor, Sequence[float]], tuple[Tensor, Tensor]]


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

    What makes autocast work under vmap for BatchNorm models. Alone, the kernel accepts a bf16
    input with float32 weight and statistics; under vmap it does not: torch.func's batching rule
    for ``native_batch_norm`` folds the K models into the channels and passes a dummy weight of
    ones in the *input's* dtype, which the kernel refuses beside a float32 ``running_mean``
    ("Expected running_mean to have type BFloat16 but got Float"). So the input is cast to the
    statistics' dtype and normalised with autocast off, then cast back: the statistics stay
    float32 as in a per-model run, in the float32 arithmetic the mixed-dtype kernel does anyway.
    Only the first model's layers are patched (the only ones vmap calls), each layer's own
    ``forward`` attribute restored on exit. CPU autocast reaches few ops under vmap, so on the
    CPU the failure shows only for a BatchNorm after a bias-free ``linear``.
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
    augment: AnyAugmentation,
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
    The loop is :func:`benchsuite.engine.training.train_loop`, the one ``pretrain`` runs (epochs,
    batch size, drop-last, optimiser, learning-rate schedule, NaN check), for all K models at once. The
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
    schedule = Schedule.of(first.params, images.shape[0])
    if channels_last is None:
        channels_last = images.is_cuda
    if pairs is None:
        pairs = functools.partial(stacked_fresh_pairs, augment, generators=views)

    mode = after_step_mode(methods) if after_step == "auto" else after_step
    for m in methods:
        m.train()
    params, buffers = _stack_into_shells(methods, channels_last)
    hook = _after_step_call(first, mode) if mode in ("stacked", "vmap") else None

    def losses_of(params: dict[str, Tensor], buffers: dict[str, Tensor], view1: Tensor, view2: Tensor) -> Tensor:
        return functional_call(first, (params, buffers), (view1, view2))

    stacked_loss = vmap(losses_of)

    def after(progress: float) -> None:
        if hook is not None:
            hook(params, buffers, progress)
        elif mode == "loop":
            for m in methods:
                m.after_step(progress)

    try:
        with _batchnorm_in_stat_dtype(first):
            return train_loop(
                schedule,
                [t for t in params.values() if t.requires_grad],
                _stacked_batches(pairs, thetas, images, generators, schedule, channels_last),
                lambda view1, view2: stacked_loss(params, buffers, view1, view2),  # [K]
                after,
                images.device,
            )
    finally:
        # Drop the references to the stacked leaves so that each stacked tensor is freed as soon
        # as its slices are copied out.
        params = buffers = {}
        _unstack_shells(methods)


def _stacked_batches(
    pairs: Pairs,
    thetas: Sequence[float],
    images: Tensor,
    generators: Sequence[torch.Generator],
    schedule: Schedule,
    channels_last: bool,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The K models' pairs of views [K, B, C, H, W], batch after batch: each pass a new order per model, as alone."""
    n, batch = images.shape[0], schedule.batch
    while True:
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(images.device)  # [K, N]
        for i in range(schedule.steps_per_epoch):
            view1, view2 = pairs(images[order[:, i * batch : (i + 1) * batch]], thetas)
            if channels_last:
                view1, view2 = _channels_last_5d(view1), _channels_last_5d(view2)
            yield view1, view2


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
