"""The saliency contract: the objective a map explains, for one model or K stacked ones, and the method that explains it."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn


class Objective(Protocol):
    """Maps rows [R, C, H, W] to one score per row [R]: the function saliency explains.

    Its second argument, ``index`` [R] (long, on the rows' device), says which of the explained
    images each row was made from (a noisy copy of image ``index[r]``, say): an objective through
    a random augmentation applies that image's fixed draw to the row. Row ``i`` of the images
    themselves has index ``i``.

    ``model`` is the network that computes it (for the pair similarity, the trained SSP method,
    in eval mode). Attribution methods that look inside the network (guided backpropagation's
    ReLUs, Grad-CAM's layer) hook its modules, which every call of the objective runs.
    """

    model: nn.Module

    def __call__(self, rows: Tensor, index: Tensor) -> Tensor: ...


class StackedObjective(Protocol):
    """The objectives of K stacked models at once: rows [K, R, C, H, W] and ``index`` [R] to scores
    [K, R], where ``scores[k]`` is model k's objective of ``rows[k]``.

    ``model`` is the module whose submodules every call runs, with each model's weights in turn
    (under ``torch.func.vmap``): hooking or swapping them acts on all K models alike.
    """

    model: nn.Module

    def __call__(self, rows: Tensor, index: Tensor) -> Tensor: ...


class Saliency(Protocol):
    """Attributes an objective to the input pixels.

    A saliency method may also offer ``stacked(objective, x, generators)`` for the K models of a
    stacked group: ``objective`` is a :data:`StackedObjective`, ``x`` [N, C, H, W] the inputs
    all K models explain, ``generators`` one per model. It returns maps [K, N, H, W] where map k
    is what ``self(objective_k, x, generators[k])`` returns, computed in K times fewer passes.
    Without it the core calls the method once per model.

    It may also offer ``check(model)``, called before any cell trains with an untrained
    :class:`SSPMethod` of each dataset, method and encoder the suite combines: raising
    :class:`PluginError` there (a layer the encoder does not have, say) makes the suite bad input
    rather than a run that fails after training.
    """

    def __call__(self, objective: Objective, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return non-negative saliency maps [N, H, W] for inputs ``x`` [N, C, H, W].

        ``generator`` (on ``x.device``) is the only source of randomness, for reproducibility.
        ``x`` does not require grad; the method makes its own leaf tensors and passes each batch
        of them as ``objective(rows, index)``, with ``index[r]`` the image of ``x`` that row
        ``r`` was made from. The objective scores rows independently (the core puts the model in
        eval mode), so rows may be batched and chunked freely.
        """
