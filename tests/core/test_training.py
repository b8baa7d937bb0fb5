"""What a method sees before its first step: the training pairs, from streams of their own."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from benchsuite.api import TrainingParams
from benchsuite.engine.registry import default_registry
from benchsuite.engine.training import NonFiniteLoss, Schedule, before_training, pretrain, training_pairs
from benchsuite.engine.views import draw_generator
from benchsuite_plugins.encoders.small_cnn import SmallCNN, SmallCNNParams
from benchsuite_plugins.ssp_methods.simclr import SimCLR, SimCLRParams


def random_views():
    found = default_registry().get("augmentations", "random_views")
    return found.factory(found.params())


def simclr(seed: int = 0) -> SimCLR:
    torch.manual_seed(seed)
    return SimCLR(SimCLRParams(epochs=2, batch_size=8, lr=0.05), SmallCNN(SmallCNNParams(width=8, depth=2), 1))


def labelled_images(n: int) -> torch.Tensor:
    """Image i is constant i / n, so a view's image can be read back from its pixels."""
    return (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()


def test_training_pairs_go_pass_after_pass_each_a_fresh_shuffle_of_whole_batches():
    n, batch = 20, 8
    rotation = default_registry().get("augmentations", "rotation")
    augment = rotation.factory(rotation.params())
    schedule = Schedule.of(TrainingParams(batch_size=batch), n)
    pairs = training_pairs(augment, 90.0, labelled_images(n), schedule, torch.Generator().manual_seed(0), None)
    passes = [list(itertools.islice(pairs, 2)) for _ in range(3)]  # 20 // 8 = 2 batches a pass, 4 images dropped
    seen = [torch.cat([view1[:, 0, 0, 0] for view1, _ in one_pass]) * n for one_pass in passes]
    for one_pass, images in zip(passes, seen, strict=True):
        assert len(set(images.round().tolist())) == 2 * batch  # distinct images within a pass
        for view1, view2 in one_pass:
            torch.testing.assert_close(view2, torch.rot90(view1, 1, dims=(-2, -1)))
    assert not torch.equal(seen[0], seen[1])  # each pass shuffled anew


def pairs_read(seed: int, data: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The first ``count`` pairs a method reads before training a cell of ``seed``, flattened to their views."""
    method, taken = simclr(), []
    method.before_training = lambda pairs: taken.extend(itertools.islice(pairs, count))
    before_training(method, random_views(), 30.0, data, seed=seed)
    return [view for pair in taken for view in pair]


def test_the_pairs_before_training_are_the_cells_own_and_leave_the_training_steps_as_they_were():
    data = torch.rand(24, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    first, again, other = pairs_read(7, data, 5), pairs_read(7, data, 5), pairs_read(8, data, 5)
    assert [tuple(v.shape) for v in first] == [(8, 1, 16, 16)] * 10  # more than a pass of 24 // 8 = 3 batches
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, other, strict=True))

    # Training draws from streams of its own: reading pairs first changes none of its steps.
    augment, read, untouched = random_views(), simclr(), simclr()
    read.before_training = lambda pairs: list(itertools.islice(pairs, 5))
    curves = []
    for method in (read, untouched):
        before_training(method, augment, 30.0, data, seed=7)
        views = draw_generator(7, "training", data.device)
        curves.append(pretrain(method, augment, 30.0, data, torch.Generator().manual_seed(7), views=views).step_loss)
    assert curves[0].tolist() == curves[1].tolist()


def test_before_training_runs_in_training_mode_without_gradient():
    method, modes = simclr().eval(), []
    method.before_training = lambda pairs: modes.append((method.training, torch.is_grad_enabled()))
    before_training(method, random_views(), 30.0, torch.rand(10, 1, 16, 16), seed=0)
    assert modes == [(True, False)]


def test_the_schedule_takes_whole_batches_and_anneals_the_rate_to_zero_over_every_step():
    params = TrainingParams(epochs=3, batch_size=8, lr=0.1)
    schedule = Schedule.of(params, images=20)  # 20 // 8 = 2 batches an epoch, 4 images dropped
    assert (schedule.batch, schedule.steps_per_epoch, schedule.total) == (8, 2, 6)
    rates = [schedule.lr_at(step) for step in range(schedule.total + 1)]
    assert rates[0] == 0.1 and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert rates == sorted(rates, reverse=True)
    assert Schedule.of(params, images=5).batch == 5  # fewer images than a batch: one batch of them all
    constant = Schedule.of(params.model_copy(update={"schedule": "constant"}), images=20)
    assert {constant.lr_at(step) for step in range(constant.total)} == {0.1}


def test_a_cell_trained_alone_records_the_schedules_rates_and_one_loss_per_step():
    method, data = simclr(), torch.rand(20, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    order, views = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    curves = pretrain(method, random_views(), 30.0, data, order, views=views)
    schedule = Schedule.of(method.params, len(data))
    assert curves.step_lr.tolist() == [schedule.lr_at(step) for step in range(schedule.total)]
    assert curves.step_loss.shape == (schedule.total,) and np.isfinite(curves.step_loss).all()
    assert curves.epoch_loss.tolist() == curves.step_loss.reshape(method.params.epochs, -1).mean(axis=1).tolist()


def test_a_nan_loss_names_its_epoch():
    method, data = simclr(), torch.full((16, 1, 8, 8), float("nan"))
    rotation = default_registry().get("augmentations", "rotation")
    with pytest.raises(NonFiniteLoss, match="in epoch 1"):
        pretrain(method, rotation.factory(rotation.params()), 90.0, data, torch.Generator().manual_seed(0))
