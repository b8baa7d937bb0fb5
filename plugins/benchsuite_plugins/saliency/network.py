"""Saliency methods that look inside the network: guided backpropagation and Grad-CAM.

Like the gradient methods (``gradients.py``) they explain the cell's objective, the pair
similarity cos(f(v1), f(v2)), as a function of the unaugmented image, and return non-negative
maps [N, H, W] in its coordinates. What each needs beyond the objective's values:

- ``guided_backprop`` (Springenberg et al. 2015): the input gradient with every ReLU's backward
  pass let through only positive gradients. It swaps each ``nn.ReLU`` of ``objective.model``
  (encoder and heads) for a guided one while it runs, as Captum's ``GuidedBackprop`` hooks
  them; a ReLU written as ``F.relu`` inside a forward is not a module and stays plain.
- ``grad_cam`` (Selvaraju et al. 2017): the layer's activations A of the first view, weighted by
  the spatial mean of dS/dA per channel, summed over channels, ReLU, then upsampled bilinearly
  to the image. The layer is a module path in the encoder, by default the encoder's
  ``cam_layer`` (its last convolutional block). The first view is the image itself for the
  ``rotation`` pair, so the map is in the image's coordinates; for ``random_views`` set
  ``weak: 0`` (with ``rotation: fixed``, the default) to keep it so. Stacked over the K models
  of a group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import Objective, Params, PluginError, Registry, SaliencyFactory, StackedObjective
from benchsuite_plugins.saliency.gradients import GradientParams, Stackable, VanillaGrad


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes a gradient only where both the input and the gradient are positive.

    Written with ``setup_context`` so torch.func can vmap it: a stacked group's K models run it together.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.clamp(min=0)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0)


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """While active, every ``nn.ReLU`` of ``model`` is guided (and out of place); yields how many there are."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        for relu in relus:
            relu.forward = _GuidedReLU.apply
        yield len(relus)
    finally:
        for relu in relus:
            del relu.forward


def _model(objective: Objective | StackedObjective, method: str) -> nn.Module:
    model = getattr(objective, "model", None)
    if not isinstance(model, nn.Module):
        raise PluginError(f"{method} looks inside the network, but the objective it was given has no `model` module")
    return model


class GuidedBackprop(Stackable):
    """The post-processed input gradient through guided ReLUs, reduced over channels."""

    def __init__(self, params: GradientParams) -> None:
        self.params = params
        self._gradient = VanillaGrad(params)

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models: their shared modules' ReLUs are guided for all of them."""
        with guided_relus(_model(objective, "guided_backprop")) as count:
            if count == 0:
                raise PluginError("guided_backprop needs nn.ReLU modules in the model; this one has none")
            return self._gradient.stacked(objective, x, generators)


class GradCamParams(Params):
    """Parameters of ``grad_cam``."""

    layer: str | None = Field(
        None,
        description="Module path inside the encoder whose activations are weighted (e.g. 'layer4' of a ResNet, "
        "'features' of small_cnn). None: the encoder's cam_layer, its last convolutional block.",
    )
    batch_size: int = Field(64, ge=1, le=65_536, description="Images per forward/backward pass; never changes the result.")


class _FirstCallTap(torch.autograd.Function):
    """Identity on a layer's output that keeps the tensor, so its gradient can be taken after the objective returns.

    Under ``torch.func.vmap`` (a stacked group's K models) a forward hook sees one model's slice
    of a batched tensor that no gradient can be asked of from outside. The ``vmap`` rule instead
    receives the physical tensor of all K models, moves their dimension first and keeps that
    [K, R, ...] tensor; the identity's gradient flows through it unchanged.
    """

    @staticmethod
    def forward(x: Tensor, tap: _LayerTap) -> Tensor:
        tap.tensor = x
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor, _LayerTap], output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None

    @staticmethod
    def vmap(info: object, in_dims: tuple[int | None, None], x: Tensor, tap: _LayerTap) -> tuple[Tensor, int]:
        tap.stacked = True
        models_first = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(info.batch_size, *x.shape)
        return _FirstCallTap.apply(models_first, tap), 0


class _LayerTap:
    """A forward hook that taps a layer's output on its first call in an objective: the first view's activations."""

    def __init__(self) -> None:
        self.tensor: Tensor | None = None
        self.stacked = False  # True when the tensor holds K models' activations, model first

    def __call__(self, module: nn.Module, args: object, output: Tensor) -> Tensor | None:
        return _FirstCallTap.apply(output, self) if self.tensor is None else None


class GradCam(Stackable):
    """Grad-CAM of the first view's activations at one layer of the encoder, upsampled to the image."""

    def __init__(self, params: GradCamParams) -> None:
        self.params = params

    def check(self, model: nn.Module) -> None:
        """Before any cell trains: the layer must exist in this model's encoder."""
        self.layer(model)

    def layer(self, model: nn.Module) -> tuple[str, nn.Module]:
        """The hooked module's path and the module: ``layer`` (or the encoder's ``cam_layer``) inside ``model.encoder``."""
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise PluginError("grad_cam hooks a layer of the encoder, but the model has no `encoder` module")
        path = self.params.layer or getattr(encoder, "cam_layer", None)
        if path is None:
            raise PluginError(
                f"grad_cam needs a layer: encoder {type(encoder).__name__} names no cam_layer; give one as the "
                "'layer' parameter (a module path such as 'layer4')"
            )
        try:
            return path, encoder.get_submodule(path)
        except AttributeError as exc:
            names = ", ".join(name for name, _ in encoder.named_children())
            raise PluginError(f"grad_cam: the encoder has no layer '{path}' (its top-level modules: {names})") from exc

    def stacked(self, objective: StackedObjective, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Return maps [K, N, H, W] of K stacked models: the tap on their shared layer sees all K models' activations."""
        layer = self.layer(_model(objective, "grad_cam"))
        size = self.params.batch_size
        maps = [self._batch(objective, layer, x[i : i + size], i, len(generators)) for i in range(0, len(x), size)]
        return torch.cat(maps, dim=1)

    def _batch(self, objective: StackedObjective, layer: tuple[str, nn.Module], x: Tensor, start: int, k_models: int) -> Tensor:
        path, module = layer
        tap = _LayerTap()
        handle = module.register_forward_hook(tap)
        try:
            with torch.enable_grad():
                rows = x.detach().expand(k_models, *x.shape).clone().requires_grad_(True)  # so the graph reaches the layer
                scores = objective(rows, torch.arange(start, start + len(x), device=x.device))
                if tap.tensor is None:
                    raise PluginError(f"grad_cam: layer '{path}' of the encoder did not run when the objective was computed")
                (grad,) = torch.autograd.grad(scores.sum(), tap.tensor)
        finally:
            handle.remove()
        activations = tap.tensor.detach()
        if not tap.stacked:  # one model, called without vmap
            activations, grad = activations.unsqueeze(0), grad.unsqueeze(0)
        weights = grad.mean(dim=(-2, -1), keepdim=True)
        cam = F.relu((weights * activations).sum(dim=2))  # [K, n, h, w]
        return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)


def register(registry: Registry[SaliencyFactory]) -> None:
    """Register ``guided_backprop`` and ``grad_cam``; called by the ``attribution`` entry point (``__init__.py``)."""
    registry.add(
        "guided_backprop",
        GuidedBackprop,
        params=GradientParams,
        description="Guided backpropagation: the input gradient through ReLUs that pass only positive gradients.",
    )
    registry.add(
        "grad_cam",
        GradCam,
        params=GradCamParams,
        description="Grad-CAM at a layer of the encoder (default its last block), upsampled to the image.",
    )
