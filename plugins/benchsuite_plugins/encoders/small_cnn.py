"""The ``small_cnn`` encoder: a few strided conv blocks, sized for CPU sweeps at 32-64 px.

It offers the encoder contract's ``feature_map`` and names its ``cam_layer``, as every built-in
encoder does (see ``docs/plugins.md``).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import EncoderFactory, Params, Registry


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


def small_cnn(params: SmallCNNParams, in_channels: int, image_size: int) -> SmallCNN:
    """``small_cnn`` for ``in_channels`` inputs; it takes images of any size, so ``image_size`` is not needed."""
    return SmallCNN(params, in_channels)


def register(registry: Registry[EncoderFactory]) -> None:
    """Register ``small_cnn``; called by the ``encoders`` entry point (``__init__.py``)."""
    registry.add(
        "small_cnn",
        small_cnn,
        params=SmallCNNParams,
        description="Small strided CNN with group norm and average pooling, for CPU-sized sweeps.",
    )
