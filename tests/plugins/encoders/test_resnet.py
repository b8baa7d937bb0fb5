"""The ResNets: torchvision's computation without fc, pooled from feature_map; ImageNet weights only from the local hub cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from benchsuite.api import PluginError
from tests.conftest import build_encoder

RESNET18_FILE = "resnet18-f37072fd.pth"  # basename of torchvision's IMAGENET1K_V1 URL


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


@pytest.mark.parametrize(("name", "out_dim", "in_channels"), [("resnet18", 512, 1), ("resnet18", 512, 3), ("resnet50", 2048, 1)])
def test_resnet_maps_images_to_out_dim_features(name, out_dim, in_channels):
    encoder = build_encoder(name, in_channels).eval()
    assert encoder.out_dim == out_dim
    assert not hasattr(encoder, "fc")
    with torch.no_grad():
        assert encoder(torch.rand(2, in_channels, 32, 32)).shape == (2, out_dim)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_missing_imagenet_weights_raise_a_plugin_error_naming_the_file(name, empty_torch_home):
    with pytest.raises(PluginError, match=rf"{empty_torch_home / 'hub' / 'checkpoints' / name}-\w+\.pth") as error:
        build_encoder(name, 1, weights="imagenet")
    assert "https://download.pytorch.org/models/" in str(error.value)
    assert not any(empty_torch_home.rglob("*.pth")), "nothing may be downloaded"


def test_cached_imagenet_weights_are_loaded_for_rgb_input(cached_resnet18):
    encoder = build_encoder("resnet18", 3, weights="imagenet")
    loaded = encoder.state_dict()
    for key, value in cached_resnet18.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_cached_imagenet_weights_sum_rgb_filters_for_grey_input(cached_resnet18):
    encoder = build_encoder("resnet18", 1, weights="imagenet")
    expected = cached_resnet18["conv1.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(encoder.conv1.weight, expected)
    torch.testing.assert_close(encoder.layer4[1].conv2.weight, cached_resnet18["layer4.1.conv2.weight"])


def test_grey_encoder_sees_a_grey_image_like_the_rgb_model_sees_it_in_colour(cached_resnet18):
    grey = build_encoder("resnet18", 1, weights="imagenet").eval()
    rgb = torchvision.models.resnet18()
    rgb.load_state_dict(cached_resnet18)
    rgb.fc = nn.Identity()
    rgb.eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)


def test_forward_is_the_global_average_of_the_feature_map():
    torch.manual_seed(0)
    resnet = build_encoder("resnet18", 1).eval()
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        fmap = resnet.feature_map(x)
        assert fmap.shape == (3, resnet.out_dim, 2, 2)  # stride 32
        torch.testing.assert_close(resnet(x), fmap.mean(dim=(2, 3)))


@pytest.mark.parametrize(("arch", "in_channels"), [("resnet18", 1), ("resnet18", 3), ("resnet50", 3)])
def test_resnet_encoder_computes_what_torchvision_computes_without_fc(arch, in_channels):
    torch.manual_seed(0)
    encoder = build_encoder(arch, in_channels).eval()
    reference = torchvision.models.get_model(arch, weights=None)
    reference.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    reference.fc = nn.Identity()
    reference.load_state_dict(encoder.state_dict())  # torchvision's keys, less fc's
    reference.eval()
    x = torch.rand(2, in_channels, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), reference(x), rtol=0, atol=0)
