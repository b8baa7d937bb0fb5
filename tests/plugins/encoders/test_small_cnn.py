"""``small_cnn``: [N, C, H, W] -> [N, out_dim], pooled from feature_map; its normalisation options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import build_encoder


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [32, 64])
def test_small_cnn_maps_images_to_out_dim_features(in_channels, size):
    encoder = build_encoder("small_cnn", in_channels)
    features = encoder(torch.rand(4, in_channels, size, size))
    assert features.shape == (4, encoder.out_dim)
    assert encoder.out_dim == 16 * 2**2  # width * 2**(depth - 1) with the defaults


def test_small_cnn_out_dim_param_sets_the_feature_size():
    encoder = build_encoder("small_cnn", 1, width=8, depth=2, out_dim=24)
    assert encoder.out_dim == 24
    assert encoder(torch.rand(2, 1, 32, 32)).shape == (2, 24)


def test_small_cnn_default_norm_keeps_samples_independent_in_training_mode():
    # MoCo without shuffle-BN can cheat through batch statistics; group norm cannot.
    torch.manual_seed(0)
    encoder = build_encoder("small_cnn", 1).train()
    batch = torch.rand(4, 1, 32, 32)
    torch.testing.assert_close(encoder(batch)[:1], encoder(batch[:1]))


def test_small_cnn_batch_norm_mixes_samples_in_training_mode():
    torch.manual_seed(0)
    encoder = build_encoder("small_cnn", 1, norm="batch").train()
    batch = torch.rand(4, 1, 32, 32)
    assert not torch.allclose(encoder(batch)[:2], encoder(batch[:2]))


def test_small_cnn_without_norm_has_no_normalisation_layers():
    encoder = build_encoder("small_cnn", 1, norm="none")
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in encoder.modules())


def test_small_cnn_passes_gradients_to_the_input():
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    build_encoder("small_cnn", 1)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("params", "stride"), [({}, 8), ({"depth": 2, "out_dim": 24}, 4)])
def test_forward_is_the_global_average_of_the_feature_map(params, stride):
    torch.manual_seed(0)
    cnn = build_encoder("small_cnn", 1, **params).eval()
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        fmap = cnn.feature_map(x)
        assert fmap.shape == (3, cnn.out_dim, 64 // stride, 64 // stride)
        torch.testing.assert_close(cnn(x), fmap.mean(dim=(2, 3)))
