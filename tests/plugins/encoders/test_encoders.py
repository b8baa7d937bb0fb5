"""Encoders: [N, C, H, W] -> [N, out_dim], pooled from feature_map; ImageNet weights only from the local hub cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from benchsuite.api import PluginError
from benchsuite.engine.registry import default_registry

RESNET18_FILE = "resnet18-f37072fd.pth"  # basename of torchvision's IMAGENET1K_V1 URL


def make_encoder(name: str, in_channels: int, **params) -> nn.Module:
    component = default_registry().get("encoders", name)
    return component.factory(component.params.model_validate(params), in_channels)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def cached_resnet18(empty_torch_home) -> dict[str, torch.Tensor]:
    """A random torchvision resnet18 saved where the ImageNet weights are expected."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    path = empty_torch_home / "hub" / "checkpoints" / RESNET18_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [32, 64])
def test_small_cnn_maps_images_to_out_dim_features(in_channels, size):
    encoder = make_encoder("small_cnn", in_channels)
    features = encoder(torch.rand(4, in_channels, size, size))
    assert features.shape == (4, encoder.out_dim)
    assert encoder.out_dim == 16 * 2**2  # width * 2**(depth - 1) with the defaults


def test_small_cnn_out_dim_param_sets_the_feature_size():
    encoder = make_encoder("small_cnn", 1, width=8, depth=2, out_dim=24)
    assert encoder.out_dim == 24
    assert encoder(torch.rand(2, 1, 32, 32)).shape == (2, 24)


def test_small_cnn_default_norm_keeps_samples_independent_in_training_mode():
    # MoCo without shuffle-BN can cheat through batch statistics; group norm cannot.
    torch.manual_seed(0)
    encoder = make_encoder("small_cnn", 1).train()
    batch = torch.rand(4, 1, 32, 32)
    torch.testing.assert_close(encoder(batch)[:1], encoder(batch[:1]))


def test_small_cnn_batch_norm_mixes_samples_in_training_mode():
    torch.manual_seed(0)
    encoder = make_encoder("small_cnn", 1, norm="batch").train()
    batch = torch.rand(4, 1, 32, 32)
    assert not torch.allclose(encoder(batch)[:2], encoder(batch[:2]))


def test_small_cnn_without_norm_has_no_normalisation_layers():
    encoder = make_encoder("small_cnn", 1, norm="none")
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in encoder.modules())


def test_small_cnn_passes_gradients_to_the_input():
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    make_encoder("small_cnn", 1)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "out_dim", "in_channels"), [("resnet18", 512, 1), ("resnet18", 512, 3), ("resnet50", 2048, 1)])
def test_resnet_maps_images_to_out_dim_features(name, out_dim, in_channels):
    encoder = make_encoder(name, in_channels).eval()
    assert encoder.out_dim == out_dim
    assert not hasattr(encoder, "fc")
    with torch.no_grad():
        assert encoder(torch.rand(2, in_channels, 32, 32)).shape == (2, out_dim)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_missing_imagenet_weights_raise_a_plugin_error_naming_the_file(name, empty_torch_home):
    with pytest.raises(PluginError, match=rf"{empty_torch_home / 'hub' / 'checkpoints' / name}-\w+\.pth") as error:
        make_encoder(name, 1, weights="imagenet")
    assert "https://download.pytorch.org/models/" in str(error.value)
    assert not any(empty_torch_home.rglob("*.pth")), "nothing may be downloaded"


def test_cached_imagenet_weights_are_loaded_for_rgb_input(cached_resnet18):
    encoder = make_encoder("resnet18", 3, weights="imagenet")
    loaded = encoder.state_dict()
    for key, value in cached_resnet18.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_cached_imagenet_weights_sum_rgb_filters_for_grey_input(cached_resnet18):
    encoder = make_encoder("resnet18", 1, weights="imagenet")
    expected = cached_resnet18["conv1.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(encoder.conv1.weight, expected)
    torch.testing.assert_close(encoder.layer4[1].conv2.weight, cached_resnet18["layer4.1.conv2.weight"])


def test_grey_encoder_sees_a_grey_image_like_the_rgb_model_sees_it_in_colour(cached_resnet18):
    grey = make_encoder("resnet18", 1, weights="imagenet").eval()
    rgb = torchvision.models.resnet18()
    rgb.load_state_dict(cached_resnet18)
    rgb.fc = nn.Identity()
    rgb.eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "params", "stride"), [("small_cnn", {}, 8), ("small_cnn", {"depth": 2, "out_dim": 24}, 4), ("resnet18", {}, 32)]
)
def test_forward_is_the_global_average_of_the_feature_map(name, params, stride):
    torch.manual_seed(0)
    encoder = make_encoder(name, 1, **params).eval()
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        fmap = encoder.feature_map(x)
        assert fmap.shape == (3, encoder.out_dim, 64 // stride, 64 // stride)
        torch.testing.assert_close(encoder(x), fmap.mean(dim=(2, 3)))


@pytest.mark.parametrize(("arch", "in_channels"), [("resnet18", 1), ("resnet18", 3), ("resnet50", 3)])
def test_resnet_encoder_computes_what_torchvision_computes_without_fc(arch, in_channels):
    torch.manual_seed(0)
    encoder = make_encoder(arch, in_channels).eval()
    reference = torchvision.models.get_model(arch, weights=None)
    reference.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    reference.fc = nn.Identity()
    reference.load_state_dict(encoder.state_dict())  # torchvision's keys, less fc's
    reference.eval()
    x = torch.rand(2, in_channels, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), reference(x), rtol=0, atol=0)
