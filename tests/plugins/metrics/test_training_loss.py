"""``final_loss``: the last epoch's loss as a scalar, NaN without any epoch."""

from __future__ import annotations

import math

import torch

from benchsuite.api import Metric
from tests.conftest import component, metric_inputs


def final_loss(epoch_loss: torch.Tensor) -> torch.Tensor:
    return component("metrics", "final_loss")(metric_inputs(saliency=torch.zeros(2, 4, 4), epoch_loss=epoch_loss))


def test_final_loss_is_registered_per_cell() -> None:
    m = component("metrics", "final_loss")
    assert isinstance(m, Metric)
    assert m.scope == "cell"


def test_final_loss_is_the_last_epochs_loss_as_a_scalar() -> None:
    got = final_loss(torch.tensor([3.0, 2.5, 1.75]))
    assert got.ndim == 0
    assert got.item() == 1.75


def test_final_loss_is_nan_without_any_epoch() -> None:
    assert math.isnan(final_loss(torch.empty(0)).item())
