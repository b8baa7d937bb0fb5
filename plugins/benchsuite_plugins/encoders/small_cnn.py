"""Encoder backbones: ``small_cnn`` for CPU-sized sweeps, and torchvision ``resnet18`` / ``resnet50``.

Every encoder maps [N, C, H, W] to features [N, out_dim] and carries ``out_dim``. An encoder may
also offer ``feature_map(x) -> [N, out_dim, h, w]``, the output of its last block before
pooling, such that ``forward(x)`` is that map's global average pool: dense downstream tasks (the
``segmentation_dice`` metric) decode it. It may name the module that computes that map as
``cam_layer``, a module path inside it, which ``grad_cam`` hooks by default. All built-in
encoders offer both. ImageNet weights are read only from the local torch hub cache; nothing is
ever downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

import torch
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import Params, PluginError, Registry, hookimpl

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum


class SmallCNNParams(Params):
    """Parameters of ``small_cnn``."""

    width: int = Field(16, ge=1, le=1024, description="Channels of the first block; each later block doubles them.")
    depth: int = Field(3, ge=1, le=6, description="Number of blocks; each halves the resolution.")
    out_dim: int | None = Field(
        None, ge=1, le=8192, description="Channels of the last block, i.e. the feature size. Default: width * 2**(depth - 1)."
    )
    norm: Literal["group", "batch", "none"] = Field(
        "group",
        description=(
            "Normalisation after each convolution. Group norm (about 16 channels per group) is the "
            "default because BatchNorm lets MoCo on one device without shuffle-BN cheat through "
            "batch statistics."
        ),
    )


class SmallCNN(nn.Module):
    """A few conv blocks and global average pooling; fast enough for CPU sweeps at 32-64 px.

    Each block is a strided 3x3 convolution that halves the resolution and a 3x3 convolution at
    that resolution, each followed by the normalisation and a ReLU. Downsampling in the first
    convolution keeps the full-resolution work small, which dominates the cost on a CPU.
    """

    def __init__(self, params: SmallCNNParams, in_channels: int):
        super().__init__()
        widths = [params.width * 2**i for i in range(params.depth)]
        if params.out_dim is not None:
            widths[-1] = params.out_dim
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True):
            layers += _conv_norm_relu(c_in, c_out, stride=2, norm=params.norm)
            layers += _conv_norm_relu(c_out, c_out, stride=1, norm=params.norm)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[-1]
        self.cam_layer = "features"  # its output is the feature map

    def feature_map(self, x: Tensor) -> Tensor:
        """Return the last block's output [N, out_dim, H / 2**depth, W / 2**depth] (rounded up), before pooling."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """Return features [N, out_dim] for images [N, C, H, W]: the feature map's global average."""
        return self.pool(self.feature_map(x)).flatten(1)


def _conv_norm_relu(c_in: int, c_out: int, *, stride: int, norm: str) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none")]
    if norm == "group":
        # About 16 channels per group, which Wu & He (2018) found as good as 32 groups; in
        # narrow layers a fixed group count would degrade to instance norm, whose statistics
        # erase most of what global average pooling passes on. gcd keeps it a divisor of c_out.
        layers.append(nn.GroupNorm(math.gcd(c_out, max(1, c_out // 16)), c_out))
    elif norm == "batch":
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class ResNetParams(Params):
    """Parameters of the torchvision ResNets."""

    weights: Literal["none", "imagenet"] = Field(
        "none",
        description=(
            "Initial weights: random, or torchvision's IMAGENET1K_V1 (the classic `pretrained=True`) "
            "read from the local torch hub cache; they are never downloaded."
        ),
    )


def _cached_weights(weights: WeightsEnum) -> dict[str, Tensor]:
    """The state dict of ``weights`` from the torch hub cache, or a PluginError saying how to get it."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not path.is_file():
        raise PluginError(
            f"ImageNet weights {weights} are expected at {path}, but the file is missing; "
            "benchsuite never downloads weights. Fetch them once on a machine with internet, e.g. "
            f"`curl -L --create-dirs -o {path} {weights.url}`, or run "
            f"`python -c \"import torchvision; torchvision.models.get_weight('{weights}').get_state_dict()\"` "
            "there and copy the file to this path (set TORCH_HOME to change the cache location)."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def _adapt_conv1(conv1: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """A copy of the RGB stem ``conv1`` that takes ``in_channels`` inputs."""
    conv = nn.Conv2d(
        in_channels,
        conv1.out_channels,
        conv1.kernel_size,
        stride=conv1.stride,
        padding=conv1.padding,
        bias=False,
    )
    if pretrained:
        # Summing the RGB filters (spread evenly over the new channels) makes a grey image
        # repeated on every input channel excite the stem exactly as the RGB grey image would.
        summed = conv1.weight.detach().sum(dim=1, keepdim=True) / in_channels
        conv.weight.data.copy_(summed.expand_as(conv.weight))
    else:
        # torchvision's own initialisation for ResNet convolutions.
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without its classifier: ``feature_map`` (stem and layer1-4) and its average pool.

    The torchvision net's modules become this module's own (``conv1``, ``bn1``, ..., ``layer4``,
    ``avgpool``), so parameter names and ``state_dict`` keys are torchvision's, less ``fc``, and
    ``forward`` computes exactly what torchvision's ``forward`` does with ``fc = Identity``.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.out_dim: int = net.fc.in_features
        self.cam_layer = "layer4"
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"):
            self.add_module(name, getattr(net, name))

    def feature_map(self, x: Tensor) -> Tensor:
        """Return layer4's output [N, out_dim, H / 32, W / 32] (rounded up), before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """Return features [N, out_dim] for images [N, C, H, W]: the feature map's global average."""
        return torch.flatten(self.avgpool(self.feature_map(x)), 1)


def _resnet_factory(arch: str) -> Callable[[ResNetParams, int], ResNetEncoder]:
    def factory(params: ResNetParams, in_channels: int) -> ResNetEncoder:
        # Imported here: torchvision.models pulls in torch._dynamo, about 3 s of every start-up,
        # which suites without a ResNet (and `benchsuite validate`) should not pay.
        from torchvision import models

        pretrained = params.weights == "imagenet"
        state = _cached_weights(models.get_model_weights(arch).IMAGENET1K_V1) if pretrained else None
        model = models.get_model(arch, weights=None)
        if state is not None:
            model.load_state_dict(state)
        if in_channels != 3:
            model.conv1 = _adapt_conv1(model.conv1, in_channels, pretrained)
        return ResNetEncoder(model)

    factory.__doc__ = f"torchvision {arch} for ``in_channels`` inputs, features [N, out_dim] (no fc), with ``feature_map``."
    return factory


@hookimpl
def benchsuite_register_encoders(registry: Registry) -> None:
    """Register ``small_cnn``, ``resnet18`` and ``resnet50``."""
    registry.add(
        "small_cnn",
        SmallCNN,
        params=SmallCNNParams,
        description="Small strided CNN with group norm and average pooling, for CPU-sized sweeps.",
    )
    registry.add(
        "resnet18",
        _resnet_factory("resnet18"),
        params=ResNetParams,
        description="torchvision ResNet-18 without fc (512 features), optionally ImageNet weights from the local cache.",
    )
    registry.add(
        "resnet50",
        _resnet_factory("resnet50"),
        params=ResNetParams,
        description="torchvision ResNet-50 without fc (2048 features), optionally ImageNet weights from the local cache.",
    )
