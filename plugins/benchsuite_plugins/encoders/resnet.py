"""The torchvision ResNet encoders ``resnet18`` and ``resnet50``, without their classifier.

ImageNet weights are read only from the local torch hub cache; nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

import torch
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import EncoderFactory, Params, PluginError, Registry

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum


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


def _resnet_factory(arch: str) -> Callable[[ResNetParams, int, int], ResNetEncoder]:
    def factory(params: ResNetParams, in_channels: int, image_size: int) -> ResNetEncoder:
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

    factory.__doc__ = f"torchvision {arch} for ``in_channels`` inputs of any size: features [N, out_dim], ``feature_map``."
    return factory


def register(registry: Registry[EncoderFactory]) -> None:
    """Register ``resnet18`` and ``resnet50``; called by the ``encoders`` entry point (``__init__.py``)."""
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
