"""What a cell produced, as plain numpy: what the runner hands to the store and the logs.

Torch-free, so that the results layer (store, logs) never imports the training engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # a name in annotations only: the grid's module imports the plugin contract, and with it torch
    from benchsuite.engine.grid import Cell


@dataclass(frozen=True)
class TrainingCurves:
    """Loss and wall time per epoch, and loss and learning rate per step."""

    epoch_loss: np.ndarray
    epoch_seconds: np.ndarray
    step_loss: np.ndarray
    step_lr: np.ndarray


@dataclass(frozen=True)
class CellResult:
    """Everything a cell produced; the store turns it into one shard of the cube."""

    cell: Cell
    image_metrics: dict[str, np.ndarray]  # name -> [n_eval]
    cell_metrics: dict[str, float]
    higher_is_better: dict[str, bool]  # metric name -> its direction, for the metrics that declare one
    curves: TrainingCurves
    identical_views: bool  # the pair's two views were equal, so the cell has no saliency (NaN maps)
    example_saliency: np.ndarray  # [examples, H, W]
    example_images: np.ndarray  # [examples, C, H, W]
    example_masks: np.ndarray  # [examples, H, W]
    orientation_hist: np.ndarray  # [bins], the dataset's gradient-orientation histogram
    wall_time_s: float
    peak_memory_mb: float
    device: str
    threads: int
    stack_size: int  # cells trained together as one stacked model, this one included
    placeholder_negatives: float | None = None  # SSPMethod.placeholder_negatives() after training; None: it stores none
