"""The SSP method contract: a loss, a head and any state, trained by the core's loop."""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from benchsuite.api.params import TrainingParams


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
