"""The public surface of benchsuite: the only module a plugin imports.

A plugin is a module with functions marked ``@hookimpl`` (see ``benchsuite.engine.hookspecs`` for
the hooks). Each registration hook receives a :class:`Registry` and calls ``registry.add``
once per component it provides. The records and protocols below are what crosses the
boundary between the core and a plugin; everything else in ``benchsuite`` is private.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import pluggy
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from benchsuite.results.errors import BenchsuiteError

PROJECT = "benchsuite"
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = [
    "GPU_STACK",
    "Augmentation",
    "CellTask",
    "Count",
    "DataSpec",
    "Draw",
    "Executor",
    "ExecutorParams",
    "ImageMaskSet",
    "LostGroup",
    "Metric",
    "MetricInputs",
    "Objective",
    "Params",
    "PluginError",
    "Registry",
    "SSPMethod",
    "Saliency",
    "StackedObjective",
    "TrainingParams",
    "check_metric_output",
    "cut_groups",
    "hookimpl",
    "run_on_worker",
    "stack_size",
]


class PluginError(BenchsuiteError):
    """Raised by a plugin for input it cannot handle (missing folder, bad file, ...).

    The message is shown to the user as is, so it should say what is wrong and how to fix it.
    The core raises it too when a plugin breaks a contract of this module.
    """


class Params(BaseModel):
    """Base class for a plugin's parameter model.

    Unknown keys are refused, so a typo in a suite is an error rather than a silent default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingParams(Params):
    """Optimisation parameters shared by SSP methods; a method's model extends this.

    The core's training loop reads these fields. SGD with momentum and a cosine learning-rate
    schedule is the MoCo v2 recipe; Adam is offered for small encoders that train from scratch.
    """

    epochs: int = Field(10, ge=1, le=10_000, description="Passes over the training images.")
    batch_size: int = Field(64, ge=2, le=65_536, description="Images per step.")
    lr: float = Field(0.03, gt=0, le=100, description="Peak learning rate.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Optimiser.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="L2 weight decay.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="Learning-rate schedule over steps.")


class Registry(Protocol):
    """What a registration hook receives: one registry per plugin kind."""

    def add(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        params: type[Params] = Params,
        description: str = "",
    ) -> None:
        """Register ``factory`` under ``name``.

        ``params`` is the pydantic model that validates the component's ``params:`` mapping
        in a suite; the factory receives an instance of it as its first argument.
        ``description`` is one line shown by ``benchsuite plugins``.
        """


@dataclass(frozen=True)
class DataSpec:
    """What the suite asks of every dataset: square images of ``size`` pixels.

    ``data_root`` is where users keep datasets on disk (``--data-root`` or the environment
    variable ``BENCHSUITE_DATA_ROOT``, else the working directory); a plugin resolves a relative
    folder parameter against it with :meth:`resolve`.
    """

    size: int
    data_root: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        # Made absolute once, here: a relative root resolved again by each plugin (or against
        # another working directory in a worker) would name another folder.
        object.__setattr__(self, "data_root", Path(self.data_root).expanduser().resolve())

    def resolve(self, folder: str | Path) -> Path:
        """``folder`` as an absolute path: relative folders are taken under ``data_root``."""
        path = Path(folder).expanduser()
        return path if path.is_absolute() else self.data_root / path


@dataclass(frozen=True)
class ImageMaskSet:
    """A dataset as tensors: ``images`` float [N, C, H, W] scaled to [0, 1], ``masks`` bool [N, H, W].

    The mask marks the foreground that saliency is compared with. Datasets return all their
    images; the core draws the fixed train/evaluation split. This is the dataset contract,
    checked here when the set is made, so a dataset that breaks it fails where it is built:
    at least one image, finite pixels in [0, 1], one mask per image of the same size.
    """

    images: Tensor
    masks: Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise PluginError(f"images must have shape [N, C, H, W], got {tuple(self.images.shape)}")
        if self.masks.ndim != 3 or self.masks.dtype != torch.bool:
            raise PluginError(f"masks must be a bool tensor [N, H, W], got {self.masks.dtype} {tuple(self.masks.shape)}")
        n, _, h, w = self.images.shape
        if tuple(self.masks.shape) != (n, h, w):
            raise PluginError(f"masks {tuple(self.masks.shape)} do not match images {tuple(self.images.shape)}")
        if n == 0:
            raise PluginError("the dataset has no images")
        if not self.images.is_floating_point():
            raise PluginError(f"images must be floating point, got {self.images.dtype}")
        finite = torch.isfinite(self.images).flatten(1).all(dim=1)
        if not finite.all():
            raise PluginError(f"{int((~finite).sum())} images hold NaN or infinite pixels; fix or drop them")
        low, high = float(self.images.min()), float(self.images.max())
        if low < 0 or high > 1:
            raise PluginError(f"images must be scaled to [0, 1], got values in [{low:g}, {high:g}]")

    def check_size(self, spec: DataSpec) -> None:
        """Raise :class:`PluginError` unless the images are ``spec.size`` pixels square, as the suite asks."""
        if tuple(self.images.shape[-2:]) != (spec.size, spec.size):
            raise PluginError(f"images are {tuple(self.images.shape[-2:])} pixels; the suite asks for {spec.size}x{spec.size}")

    def __len__(self) -> int:
        return self.images.shape[0]


Draw = dict[str, Tensor]
"""A random augmentation's random parameters for a batch: tensors whose first dimension indexes the
images, so ``{name: t[index] for name, t in draw.items()}`` is the draw of the rows ``index``."""


class Augmentation(Protocol):
    """Makes the two views of a batch in one call on the batch's device.

    A deterministic augmentation (``rotation``: the pair ``(x, R_theta x)``) is ``augment(x,
    theta)``. A random one also has ``draw(x, theta, generator)``, which draws the random
    parameters of every image of ``x`` and view as a :data:`Draw`, and is called as ``augment(x,
    theta, draw)``: given its draw, an augmentation is a deterministic function of ``x``. The core
    draws afresh for every training batch, from a generator seeded by the cell, and once per
    evaluation image for saliency, which then explains the pair objective through that one fixed
    draw (docs/design.md).

    A deterministic augmentation may also offer ``stacked(x, thetas)`` for the K models of a
    stacked group: ``x`` [K, N, C, H, W] and one theta per model, returning the two views of each
    model's batch as ``self(x[k], thetas[k])`` would, in fewer kernels. Without it the core calls
    the augmentation once per model.
    """

    def __call__(self, x: Tensor, theta: float) -> tuple[Tensor, Tensor]:
        """Return the two views of ``x`` [N, C, H, W] (a random augmentation takes its ``draw`` too).

        Must be differentiable with respect to ``x``: saliency differentiates through it.
        """


class SSPMethod(nn.Module):
    """A self-supervised method: a loss, a head and any momentum or queue state as buffers.

    The core owns the loop (optimiser, schedule, batches, devices); the method only says what
    one step's loss is. ``params`` must be a :class:`TrainingParams` (or a subclass).
    """

    params: TrainingParams

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return the scalar loss for a batch of positive pairs."""
        raise NotImplementedError

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step, e.g. for a momentum-encoder update.

        ``progress`` is the share of training done before this step, ``step / total_steps``: 0
        at the first step, below 1 at the last. A schedule over training (BYOL's moving-average
        coefficient) reads it; the number of steps depends on the dataset, which a method never sees.
        """

    def before_training(self, pairs: Iterator[tuple[Tensor, Tensor]]) -> None:
        """Called once before the first step, in training mode and without gradient; the default reads nothing.

        ``pairs`` yields the training pairs ``(view1, view2)`` as training steps see them (shuffled
        batches of the training images at the training batch size, views drawn as for training),
        pass after pass without end, from streams of their own: the steps that follow draw the same
        batches whether or not a method reads any. A method whose state is built from data reads
        what it needs here; MoCo v2 fills its queue of negatives with real keys when asked to.
        """

    def placeholder_negatives(self) -> float | None:
        """The share of the method's stored negatives that were not keys of training images when training ended.

        None (the default) for a method that stores no negatives. MoCo's queue starts as random
        unit vectors, easy negatives that lower its loss until real keys replace them, and how many
        are replaced by the last epoch depends on the dataset's size: the core stores the share per
        cell and warns once per run when a cell ends above 0.
        """
        return None

    def embed(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return the embedding whose pair similarity the method optimises, [N, D]."""
        raise NotImplementedError

    def represent(self, x: Tensor) -> Tensor:
        """Return the encoder's representation of ``x`` [N, D]: before any head, unnormalised.

        What downstream tasks read and what the embedding-norm metrics measure. The default is
        ``self.encoder(x)``, for a method that keeps its pre-trained encoder as ``encoder``.
        """
        return self.encoder(x)


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


@dataclass(frozen=True)
class MetricInputs:
    """Everything a metric may look at for one cell.

    Saliency, masks and images are the evaluation split. ``embed`` is the pre-trained method's
    frozen embedding (no gradient, eval mode) and ``augment`` makes the cell's pair ``(x, R_theta
    x)`` (through a random augmentation, a fresh draw from a generator seeded by the cell on each
    call), so probe metrics can train on ``train_images`` and test on ``images``; ``represent``
    is the frozen encoder's representation before any head (:meth:`SSPMethod.represent`).
    ``seed`` is the cell's seed, for any randomness a metric needs.

    ``objective`` is the function the maps explain (the pair similarity, with the cell's fixed
    draws; :class:`Objective`), for faithfulness metrics that perturb the images and score them
    again; ``explain(method)`` gives the maps the cell's saliency method (same noise, same
    draws) makes for another trained method of the same kind, for sanity checks such as
    model-parameter randomisation.

    ``train_masks`` are the masks of ``train_images``, for downstream tasks that fine-tune on
    labelled training images. ``encoder`` is the pre-trained encoder itself (the method's
    ``encoder`` attribute, in eval mode; ``None`` for a method that keeps none), whose optional
    ``feature_map(x)`` dense tasks decode: a metric that trains on it trains a deep copy
    (``copy.deepcopy``) and leaves it unchanged, since later metrics read it too.

    Every tensor, the encoder's weights, and what ``embed`` and ``augment`` take and return, are
    on the device the cell runs on.
    """

    saliency: Tensor  # [N, H, W], non-negative; all NaN where undefined (identical views, theta = 0)
    masks: Tensor  # bool [N, H, W]
    images: Tensor  # [N, C, H, W]
    epoch_loss: Tensor  # [epochs], mean SSP loss per epoch
    theta: float
    train_images: Tensor  # [M, C, H, W]
    embed: Callable[[Tensor], Tensor]
    augment: Callable[[Tensor], tuple[Tensor, Tensor]]
    seed: int
    represent: Callable[[Tensor], Tensor]
    train_masks: Tensor  # bool [M, H, W], the masks of train_images
    encoder: nn.Module | None  # the pre-trained encoder, eval mode; None when the method keeps no `encoder`
    objective: Objective  # the explained objective of the evaluation images: objective(rows, index) -> [R]
    explain: Callable[[SSPMethod], Tensor]  # maps [N, H, W] of the evaluation images for another trained method


@runtime_checkable
class Metric(Protocol):
    """A metric computed per image (``scope="image"``, returns [N]) or per cell (returns a scalar).

    An image metric follows two NaN rules: an image with an undefined (NaN) map gets NaN, and so
    does one with an empty mask. A metric that does not score the maps sets ``reads_saliency =
    False`` (a downstream segmentation, say) and one that does not read the masks sets
    ``reads_masks = False`` (an embedding norm sets both); the rule is then not its to follow.
    Without the attributes a metric is taken to read both.

    A metric may also say which way is better: ``higher_is_better = True`` (Dice),
    ``False`` (a deletion AUC), or ``None``, the default, when neither is (an embedding norm).
    The cube records it, and ``benchsuite compare`` and the report then say "better" or "worse"
    rather than only "larger" or "smaller".
    """

    scope: Literal["image", "cell"]

    def __call__(self, inputs: MetricInputs) -> Tensor:
        """Return the values. Images where the metric is undefined (e.g. empty mask) get NaN."""


def check_metric_output(metric: Metric, values: object, n_images: int) -> Tensor:
    """The metric output contract; returns ``values`` or raises :class:`PluginError` naming the broken rule.

    ``scope`` is ``"image"`` or ``"cell"``; ``higher_is_better``, if set, is True, False or None;
    the values are a floating-point tensor of shape ``[n_images]`` for an image metric and
    ``[]`` for a cell metric.
    """
    scope = getattr(metric, "scope", None)
    if scope not in ("image", "cell"):
        raise PluginError(f"has scope {scope!r}, not 'image' or 'cell'")
    direction = getattr(metric, "higher_is_better", None)
    if not isinstance(direction, bool | None):
        raise PluginError(f"has higher_is_better {direction!r}, not True, False or None")
    if not (isinstance(values, Tensor) and values.is_floating_point()):
        raise PluginError(f"returned {type(values).__name__} {getattr(values, 'dtype', '')}, not a floating-point tensor")
    expected = (n_images,) if scope == "image" else ()
    if tuple(values.shape) != expected:
        raise PluginError(f"returned shape {tuple(values.shape)} for scope '{scope}', expected {expected}")
    return values


class CellTask(Protocol):
    """The core's work for a group of cells; an executor calls it as ``task(group, device)`` and gets
    one result per cell of the group, in order. A group of several cells trains as one stacked model.

    The task pickles (registry as plugin names, settings such as the data root as values), so an
    executor may call it in another process or on another machine with the same plugins
    installed. ``run_dir`` is the run directory, where an executor that outlives the driver
    (Slurm) keeps its records. Cells are opaque to executors except for ``cell.key``, a string
    that names the cell's content and is the same in every run.
    """

    run_dir: str

    def __call__(self, group: Sequence[Any], device: torch.device) -> list[Any]: ...


def run_on_worker(task: CellTask, group: Sequence[Any], gpu: bool, threads: int) -> list[Any]:
    """The body of a remote worker's job: ``task(group, device)`` with ``threads`` torch threads, on
    the GPU the scheduler gave the worker (``CUDA_VISIBLE_DEVICES`` makes it ``cuda``) or the CPU."""
    torch.set_num_threads(threads)
    return task(group, torch.device("cuda" if gpu else "cpu"))


@dataclass(frozen=True)
class LostGroup:
    """What an executor yields, in place of results, for a group whose task died and was not retried further.

    For failures of the machinery (worker process killed, node lost, out of host memory), not
    for exceptions the task raised: those propagate. The core stores every other result, then
    reports the lost cells with ``cause`` and a rerun runs them again.
    """

    cells: Sequence[Any]
    cause: str


GPU_STACK = 64
"""The stack size of ``stack: auto`` on a GPU: where ResNet-18's stacked throughput levelled off
on an H200 (K = 32: 3.96x, K = 64: 4.18x the serial rate, 38 GiB), while small CNNs still gained.
On a CPU ``auto`` is 1: there a stack measured 0.7-1.0x the speed of cells one after another."""


Count = Annotated[int, Field(ge=1, le=4096)]
"""A whole number of cells, workers or the like, 1 to 4096; ``Count | Literal["auto"]`` adds the default choice."""


class ExecutorParams(Params):
    """Parameters every executor that trains stacked groups shares; an executor's model extends this."""

    stack: Count | Literal["auto"] = Field(
        "auto",
        description="Cells of a sweep trained together as one stacked model (cells that differ only in theta and "
        "seed). 1 trains each cell alone. 'auto' is 1 on a CPU, where a stack measured 0.7-1.0x the speed of "
        f"cells one after another, and {GPU_STACK} on a GPU, where 64 stacked ResNet-18 cells trained 4.2x and 64 "
        "small CNNs 18x faster on an H200; a stack that does not fit in memory trains as two halves. Results "
        "agree with training alone to rounding (docs/design.md).",
    )


def stack_size(stack: int | Literal["auto"], on_gpu: bool) -> int:
    """The number of cells per group for an executor's ``stack`` setting on a GPU or a CPU."""
    if stack == "auto":
        return GPU_STACK if on_gpu else 1
    return stack


def cut_groups(families: Sequence[Sequence[Any]], stack: int) -> list[list[Any]]:
    """Each family cut, in order, into groups of at most ``stack`` cells: the units executors run."""
    return [list(family[i : i + stack]) for family in families for i in range(0, len(family), stack)]


class Executor(Protocol):
    """Runs cells somewhere and streams their results back to the core, which stores them.

    It may also expose what ``benchsuite estimate`` reads to time and project a suite as it
    would run: ``device`` (a :class:`torch.device`), ``stack`` (cells per group), ``threads``
    (torch CPU threads per worker) and ``slots`` (one device per worker running at once).
    """

    def run(self, task: CellTask, families: Sequence[Sequence[Any]]) -> Iterator[Any]:
        """Run every cell of ``families`` and yield each cell's result as soon as it is ready, in any order.

        A family holds cells that differ only in theta and seed. The executor cuts each family
        into groups of any size it likes (one cell each, or as many as fit on its device;
        :func:`cut_groups`) and calls ``task(group, device)`` for each; grouping is an execution
        detail that does not change results beyond the tolerance of stacked training
        (docs/design.md). A group whose task died without raising is yielded as a
        :class:`LostGroup`.
        """
