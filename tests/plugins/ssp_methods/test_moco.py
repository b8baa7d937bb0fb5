"""MoCo v2: InfoNCE against a queue, momentum key network, resumable queue state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchsuite.api import SSPMethod, TrainingParams
from benchsuite.engine.registry import ParamsError, default_registry


def make_moco(seed: int = 0, **params):
    """A MoCo v2 on a tiny small_cnn, both built through the registry."""
    registry = default_registry()
    torch.manual_seed(seed)
    encoders = registry.get("encoders", "small_cnn")
    encoder = encoders.factory(encoders.params(width=8, depth=2), 1, 32)
    moco = registry.get("ssp_methods", "moco_v2")
    return moco.factory(moco.params.model_validate(params), encoder)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_moco_v2_is_registered_with_training_params():
    component = default_registry().get("ssp_methods", "moco_v2")
    assert issubclass(component.params, TrainingParams)
    method = make_moco(queue_size=32)
    assert isinstance(method, SSPMethod)
    assert method.params.queue_size == 32


@pytest.mark.parametrize(("field", "value"), [("temperature", 0.0), ("temperature", -0.1), ("queue_size", 0)])
def test_out_of_range_params_are_refused(field, value):
    with pytest.raises(ParamsError, match=field):
        default_registry().parse_params("ssp_methods", "moco_v2", {field: value})


def test_initial_loss_is_of_the_order_of_log_queue_size_plus_one():
    method = make_moco(queue_size=1024, temperature=0.2)
    loss = method(images(8, seed=1), images(8, seed=2)).item()
    # Logits are cosines / T, so any positive can move the loss by at most 1/T from chance.
    assert abs(loss - math.log(1025)) < 1 / 0.2


def test_loss_is_infonce_of_query_against_key_and_queue():
    method = make_moco(queue_size=16, temperature=0.5)
    view1, view2 = images(4, seed=1), images(4, seed=2)
    queue = method.queue.clone()
    with torch.no_grad():
        q = F.normalize(method.head(method.encoder(view1)), dim=1)
        k = F.normalize(method.key_head(method.key_encoder(view2)), dim=1)
    similarities = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.5
    expected = -(similarities[:, 0].exp() / similarities.exp().sum(1)).log().mean()
    torch.testing.assert_close(method(view1, view2), expected)


def test_queue_starts_as_unit_keys():
    method = make_moco(queue_size=16, proj_dim=8)
    assert method.queue.shape == (16, 8)
    torch.testing.assert_close(method.queue.norm(dim=1), torch.ones(16))


def test_queue_pointer_advances_and_wraps_when_batch_does_not_divide_queue():
    method = make_moco(queue_size=10)
    pointers, batches = [], [images(4, seed=s) for s in range(3)]
    for batch in batches:
        method(batch, batch)
        pointers.append(method.queue_ptr.item())
    assert pointers == [4, 8, 2]
    last_keys = F.normalize(method.key_head(method.key_encoder(batches[-1])), dim=1)
    torch.testing.assert_close(method.queue[[8, 9, 0, 1]], last_keys)


def test_batch_larger_than_queue_keeps_only_the_latest_keys():
    method = make_moco(queue_size=3)
    batch = images(4, seed=0)
    method(batch, batch)
    keys = F.normalize(method.key_head(method.key_encoder(batch)), dim=1)
    # As if written one by one into a ring of 3: key 3 overwrites key 0.
    torch.testing.assert_close(method.queue, keys[[3, 1, 2]])
    assert method.queue_ptr.item() == 1


def test_evaluation_mode_does_not_touch_the_queue():
    method = make_moco(queue_size=10).eval()
    queue = method.queue.clone()
    method(images(4, seed=0), images(4, seed=1))
    assert torch.equal(method.queue, queue)
    assert method.queue_ptr.item() == 0


def test_key_network_gets_no_gradient_and_moves_only_by_momentum():
    method = make_moco(queue_size=16, encoder_momentum=0.9)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    key_before = [p.detach().clone() for p in method.key_encoder.parameters()]

    method(images(4, seed=0), images(4, seed=1)).backward()
    optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in method.key_encoder.parameters())
    assert all(torch.equal(p, before) for p, before in zip(method.key_encoder.parameters(), key_before, strict=True))

    method.after_step(0.5)  # MoCo v2's momentum is constant: progress does not change it
    for key, before, query in zip(method.key_encoder.parameters(), key_before, method.encoder.parameters(), strict=True):
        torch.testing.assert_close(key, 0.9 * before + 0.1 * query)
    assert any(not torch.equal(p, before) for p, before in zip(method.key_encoder.parameters(), key_before, strict=True))


def gratings(n: int, generator: torch.Generator, size: int = 16) -> torch.Tensor:
    """Sine gratings of random orientation, frequency, phase and contrast: easy to tell apart."""
    angle, frequency, phase, contrast = torch.rand(4, n, 1, 1, generator=generator)
    coords = torch.arange(size, dtype=torch.float32)
    direction = coords[None, :] * (angle * math.pi).cos() + coords[:, None] * (angle * math.pi).sin()
    wave = torch.sin((0.2 + 0.8 * frequency) * direction + 2 * math.pi * phase)
    return ((0.5 + contrast) * wave).unsqueeze(1)


def test_loss_decreases_with_training():
    method = make_moco(queue_size=32, encoder_momentum=0.99)
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(40):
        batch = gratings(16, generator)
        loss = method(batch, batch + 0.1 * torch.randn(batch.shape, generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(step / 40)
        losses.append(loss.item())
    # From step 2 on the queue holds real keys instead of its random initial ones.
    assert sum(losses[-5:]) < 0.85 * sum(losses[2:7])


def test_state_dict_round_trip_restores_queue_pointer_and_loss():
    trained = make_moco(seed=0, queue_size=10)
    for s in range(3):
        trained(images(4, seed=s), images(4, seed=s + 10))
    restored = make_moco(seed=1, queue_size=10)
    restored.load_state_dict(trained.state_dict())
    assert torch.equal(restored.queue, trained.queue)
    assert restored.queue_ptr.item() == trained.queue_ptr.item() == 2
    view1, view2 = images(4, seed=20), images(4, seed=21)
    torch.testing.assert_close(restored(view1, view2), trained(view1, view2))
    assert torch.equal(restored.queue, trained.queue)


def test_embed_returns_unit_vectors_of_projection_size():
    embedding = make_moco(proj_dim=12).embed(images(5, seed=0))
    assert embedding.shape == (5, 12)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(5))


def test_symmetric_loss_does_not_depend_on_the_order_of_the_views():
    method = make_moco(queue_size=16, symmetric=True).eval()
    view1, view2 = images(4, seed=0), images(4, seed=1)
    torch.testing.assert_close(method(view1, view2), method(view2, view1))


def test_symmetric_loss_enqueues_the_keys_of_both_views():
    method = make_moco(queue_size=16, symmetric=True)
    method(images(4, seed=0), images(4, seed=1))
    assert method.queue_ptr.item() == 8


def test_placeholder_negatives_is_the_share_of_the_queue_no_real_key_has_replaced_yet():
    method = make_moco(queue_size=10)
    assert method.placeholder_negatives() == 1.0
    shares = []
    for s in range(3):
        method(images(4, seed=s), images(4, seed=s + 10))
        shares.append(method.placeholder_negatives())
    # The pointer wraps after 10 keys; the count of keys does not, so a full queue stays full.
    assert shares == [0.6, 0.2, 0.0]
    assert (method.queue_ptr.item(), method.keys_seen.item()) == (2, 12)


def test_the_default_random_queue_reads_no_training_pair_before_the_first_step():
    method = make_moco(queue_size=8)
    queue = method.queue.clone()
    method.before_training(iter(()))  # an empty iterator: reading it would raise StopIteration
    assert torch.equal(method.queue, queue)
    assert method.placeholder_negatives() == 1.0


def test_queue_init_keys_fills_the_queue_with_the_key_networks_keys_of_training_pairs_and_reads_no_more():
    method = make_moco(queue_size=10, queue_init="keys")
    batches = [(images(4, seed=s), images(4, seed=s + 10)) for s in range(5)]
    pairs = iter(batches)
    method.before_training(pairs)
    assert next(pairs) is batches[3]  # three batches of 4 keys fill 10 slots; the fourth was not read
    with torch.no_grad():
        keys = torch.cat([F.normalize(method.key_head(method.key_encoder(view2)), dim=1) for _, view2 in batches[:3]])
    # Written as training writes them, around the ring: keys 10 and 11 overwrite keys 0 and 1.
    torch.testing.assert_close(method.queue, keys[[10, 11, 2, 3, 4, 5, 6, 7, 8, 9]])
    assert method.placeholder_negatives() == 0.0


def test_a_symmetric_queue_is_filled_with_the_keys_of_both_views():
    method = make_moco(queue_size=16, queue_init="keys", symmetric=True)
    pairs = iter([(images(4, seed=s), images(4, seed=s + 10)) for s in range(3)])
    method.before_training(pairs)
    assert len(list(pairs)) == 1  # two batches give 16 keys
    assert method.placeholder_negatives() == 0.0
