"""Downstream segmentation: fine-tune the pre-trained encoder with a small decoder on a few labelled images.

The reference repository scores its pre-training this way (a U-Net, soft Dice, early stopping).
``segmentation_dice`` takes a share (``fraction``) of the cell's training images with their
masks as the labelled set, holds out part of it (``validation``) for early stopping, and trains
a deep copy of the pre-trained encoder (``MetricInputs.encoder``, which must offer
``feature_map``) with a small decoder on the rest: Adam on the soft Dice loss, one validation
Dice per epoch, the best epoch's weights restored at the end. It reports the hard Dice of each
held-out (evaluation) image, prediction = logit > 0, and NaN where the image's mask is empty.

The decoder has no skip connections: it sees only the encoder's last feature map, so what it
can segment is what that map keeps (a ResNet's stride-32 map of a 32 px image is 1 x 1). Each
stage is a 3x3 convolution, group norm and ReLU, with bilinear x2 upsampling between stages up
to the input size (interpolated to exactly H x W at the end), then a 1x1 convolution to one logit.

Everything random (the labelled subset, the validation hold-out, the batch order and the
decoder's initial weights) is drawn from generators seeded by the cell's seed, without
touching the global random state, so a cell gets the same values on every run of the same
device (a GPU's atomic adds in some backward kernels may differ in the last bits).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import MetricFactory, MetricInputs, Params, PluginError, Registry, hookimpl
from benchsuite_plugins.metrics.localisation import hard_dice

SMOOTH = 1e-5
"""Added to the soft Dice's numerator and denominator (MONAI's ``smooth_nr`` and ``smooth_dr``)."""


class SegmentationParams(Params):
    """Parameters of ``segmentation_dice``."""

    fraction: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share of the cell's training images that are labelled (rounded, at least 3: two to fit, one to validate).",
    )
    validation: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Share of the labelled images held out for early stopping (rounded, at least 1, leaving at least 2 to fit).",
    )
    # With a tenth of a few hundred images an epoch is one or two steps; 5 epochs of patience
    # stopped a seed at Dice 0.75 where 20 reached 0.93 (small CNN, 32 px, about 4 s).
    epochs: int = Field(200, ge=1, le=10_000, description="Maximum passes over the labelled images that are fitted.")
    patience: int = Field(20, ge=1, le=10_000, description="Epochs without a better validation Dice before training stops.")
    lr: float = Field(1e-3, gt=0, le=10, description="Adam learning rate, for the decoder and the fine-tuned encoder.")
    batch_size: int = Field(
        16,
        ge=1,
        le=65_536,
        description="Images per step. An epoch's batches are cut evenly and never hold one image alone, which a "
        "BatchNorm cannot train on.",
    )
    freeze_encoder: bool = Field(
        False, description="Train the decoder alone on the frozen encoder (a probe) instead of fine-tuning both."
    )
    decoder_width: int = Field(32, ge=1, le=1024, description="Channels of every decoder stage.")
    loss: Literal["dice", "dice_bce"] = Field(
        "dice",
        description="Training loss: the soft Dice loss (per image, averaged), as the reference repository trains, "
        "or soft Dice plus binary cross-entropy.",
    )


def soft_dice_loss(logits: Tensor, masks: Tensor) -> Tensor:
    """Mean over images of 1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s), p = sigmoid(logits) [N, H, W], s = 1e-5.

    MONAI's ``DiceLoss(sigmoid=True)`` for one channel: per image, then averaged.
    """
    p, t = torch.sigmoid(logits).flatten(1), masks.flatten(1).to(logits.dtype)
    overlap = (p * t).sum(dim=1)
    return (1 - (2 * overlap + SMOOTH) / (p.sum(dim=1) + t.sum(dim=1) + SMOOTH)).mean()


def _validation_dice(predicted: Tensor, masks: Tensor) -> Tensor:
    """Mean hard Dice over images, an empty mask counting 1 when the prediction is empty too, else 0."""
    empty = ~masks.flatten(1).any(dim=1)
    agree_empty = (~predicted.flatten(1).any(dim=1)).float()
    return torch.where(empty, agree_empty, hard_dice(predicted, masks)).mean()


def _conv_gn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(c_out, 8), c_out), nn.ReLU(inplace=True)]


class Decoder(nn.Module):
    """From a feature map [N, C, h, w] to one logit per pixel [N, H, W]: conv stages with bilinear x2 upsampling."""

    def __init__(self, in_channels: int, width: int, upsamplings: int):
        super().__init__()
        layers = _conv_gn_relu(in_channels, width)
        for _ in range(upsamplings):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), *_conv_gn_relu(width, width)]
        self.stages = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, features: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.stages(features)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.head(x)[:, 0]


class Segmenter(nn.Module):
    """The encoder's feature map, decoded to the input's size."""

    def __init__(self, encoder: nn.Module, decoder: Decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder.feature_map(x), tuple(x.shape[-2:]))


def upsamplings(feature_size: tuple[int, int], image_size: tuple[int, int]) -> int:
    """How many x2 upsamplings take the feature map to at least the image's size."""
    ratio = max(i / f for i, f in zip(image_size, feature_size, strict=True))
    return max(0, math.ceil(math.log2(ratio) - 1e-9))


class SegmentationDice:
    """Hard Dice on each held-out image after fine-tuning the encoder with a decoder on a few labelled images."""

    scope: Literal["image", "cell"] = "image"
    higher_is_better: bool | None = True
    # It reads the masks (NaN for an empty one) but never the saliency maps, which may be all NaN
    # (identical views) without changing its values.
    reads_saliency = False

    def __init__(self, params: SegmentationParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        encoder = _encoder(inputs)
        p = self.params
        device, size = inputs.images.device, tuple(inputs.images.shape[-2:])
        generator = torch.Generator().manual_seed(inputs.seed)  # subset and batch order, on the CPU
        fit, validate = labelled_split(len(inputs.train_images), p.fraction, p.validation, generator)
        fit, validate = fit.to(device), validate.to(device)

        encoder = copy.deepcopy(encoder)  # the cell's encoder stays as it is, for the metrics after this one
        encoder.requires_grad_(not p.freeze_encoder)
        with torch.no_grad():
            channels, *feature_size = encoder.eval().feature_map(inputs.train_images[:1]).shape[1:]
        with torch.random.fork_rng(devices=[]):  # the decoder is made on the CPU; the global state is left alone
            torch.default_generator.manual_seed(inputs.seed)  # torch.manual_seed would reseed every GPU too
            decoder = Decoder(channels, p.decoder_width, upsamplings(tuple(feature_size), size))
        model = Segmenter(encoder, decoder.to(device))
        optimizer = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=p.lr)

        best, best_state, waited = -math.inf, None, 0
        with torch.enable_grad():  # the core may score metrics under no_grad
            for _ in range(p.epochs):
                model.train()
                if p.freeze_encoder:
                    encoder.eval()
                order = fit[torch.randperm(len(fit), generator=generator).to(device)]
                for batch in order.tensor_split(_batches(len(order), p.batch_size)):
                    logits = model(inputs.train_images[batch])
                    loss = self.loss(logits, inputs.train_masks[batch])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                score = float(_validation_dice(self.predict(model, inputs.train_images[validate]), inputs.train_masks[validate]))
                if score > best:
                    best, waited = score, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    waited += 1
                    if waited >= p.patience:
                        break
        model.load_state_dict(best_state)
        return hard_dice(self.predict(model, inputs.images), inputs.masks.bool())

    def loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        loss = soft_dice_loss(logits, masks)
        if self.params.loss == "dice_bce":
            loss = loss + F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype))
        return loss

    def predict(self, model: Segmenter, images: Tensor) -> Tensor:
        """Boolean masks [N, H, W], logit > 0, in eval mode and batches of ``batch_size``."""
        model.eval()
        with torch.no_grad():
            return torch.cat([model(chunk) > 0 for chunk in images.split(self.params.batch_size)])


def _encoder(inputs: MetricInputs) -> nn.Module:
    """The cell's encoder, or a PluginError saying why the metric cannot use it."""
    encoder = inputs.encoder
    if encoder is None:
        raise PluginError(
            "segmentation_dice fine-tunes the pre-trained encoder, but this cell's SSP method keeps no `encoder` "
            "attribute; use a method that does (all built-in ones) or drop the metric from the suite."
        )
    if not callable(getattr(encoder, "feature_map", None)):
        raise PluginError(
            f"segmentation_dice decodes the encoder's spatial features, but encoder {type(encoder).__name__} has no "
            "feature_map(x) -> [N, out_dim, h, w] method; add one (the last block's output before pooling) or use "
            "a built-in encoder (small_cnn, resnet18, resnet50)."
        )
    return encoder


def labelled_split(n: int, fraction: float, validation: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices of the labelled training images to fit on and to validate on, drawn by ``generator``.

    ``round(fraction * n)`` images are labelled, at least 3; ``round(validation * labelled)`` of
    them validate, at least 1 and at most all but two.
    """
    if n < 3:
        raise PluginError(
            f"segmentation_dice needs at least 3 training images (two to fit, as a BatchNorm cannot train on one "
            f"image, and one to validate), got {n}"
        )
    labelled = min(n, max(3, round(fraction * n)))
    held = min(labelled - 2, max(1, round(validation * labelled)))
    chosen = torch.randperm(n, generator=generator)[:labelled]
    return chosen[held:].sort().values, chosen[:held].sort().values


def _batches(images: int, batch_size: int) -> int:
    """How many even batches an epoch of ``images`` (at least 2) is cut into: about ``batch_size`` each, never 1."""
    return max(1, min(math.ceil(images / batch_size), images // 2))


@hookimpl
def benchsuite_register_metrics(registry: Registry[MetricFactory]) -> None:
    """Register ``segmentation_dice``."""
    registry.add(
        "segmentation_dice",
        SegmentationDice,
        params=SegmentationParams,
        description="Dice of each held-out image after fine-tuning the encoder with a small decoder on a few "
        "labelled training images (soft Dice, early stopping), per image.",
    )
