"""Any timm model as an encoder: ``{plugin: timm, params: {model: NAME, weights: none|imagenet}}``.

The timm model is built without its classifier for the dataset's channel count (timm's
``in_chans``; with ImageNet weights timm adapts the RGB stem, a grey input summing its filters)
and, when it is built for one input size (ViT, Swin: timm's ``fixed_input_size``), for the
suite's image size (``img_size``); a model that takes any size is built as it is.
``feature_map(x)`` is timm's ``forward_features`` as a grid [N, out_dim, h, w]: a convolutional
map as is, Swin's channels-last map moved to channels first, and a transformer's tokens, less its
prefix tokens (class, register, distillation), put back on their patch grid. ``forward(x)`` is
that map's global average, so a ViT's representation is its mean patch token rather than its
class token, and timm's head (pooling, ConvNeXt's head norm, classifier) is not used. The module
``grid`` outputs the map; it is the default ``cam_layer`` of ``grad_cam``.

ImageNet weights are read only from the local Hugging Face hub cache, where timm keeps them;
nothing is ever downloaded. docs/plugins.md lists which encoders train as a stack.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from torch import Tensor, nn

from benchsuite.api import EncoderFactory, Params, PluginError, Registry, hookimpl

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

KwargValue = int | float | bool | str | list[int] | list[float] | list[str]
RESERVED = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "num_classes", "in_chans", "img_size"})


class TimmParams(Params):
    """Parameters of ``timm``."""

    model: str = Field(
        description="timm model name, optionally with a weights tag after a dot ('resnet18', 'resnet18.tv_in1k'); "
        "`timm.list_models()` lists the names."
    )
    weights: Literal["none", "imagenet"] = Field(
        "none",
        description="Initial weights: random, or timm's pretrained weights for the name (the default tag unless the "
        "name gives one: ImageNet-1k, some first trained on ImageNet-21k) read from the local Hugging Face hub "
        "cache; they are never downloaded.",
    )
    kwargs: dict[str, KwargValue] = Field(
        default_factory=dict,
        description="More keyword arguments of timm.create_model, i.e. of the model's constructor, e.g. "
        "{depth: 2} for a ViT, {depths: [1, 1, 1, 1]} for a Swin or ConvNeXt, {drop_path_rate: 0.1}; lists become "
        "tuples. Not the keys the plugin sets itself: " + ", ".join(sorted(RESERVED)) + ".",
    )

    @field_validator("kwargs")
    @classmethod
    def _not_reserved(cls, kwargs: dict[str, KwargValue]) -> dict[str, KwargValue]:
        taken = sorted(RESERVED & kwargs.keys())
        if taken:
            raise ValueError(f"{', '.join(taken)} are set by the plugin (img_size: the suite's data size)")
        return kwargs


class TokenGrid(nn.Module):
    """``forward_features``' output as a map [N, C, h, w]; hooked by ``grad_cam`` as the encoder's ``cam_layer``."""

    def __init__(self, channels_last: bool, prefix_tokens: int):
        super().__init__()
        self.channels_last = channels_last  # a [N, h, w, C] map (Swin)
        self.prefix_tokens = prefix_tokens  # class, register and distillation tokens ahead of the patches

    def forward(self, features: Tensor, height: int, width: int) -> Tensor:
        """Return the map of ``features`` (a map, or tokens [N, T, C]) computed from images of ``height`` x ``width`` pixels."""
        if features.ndim == 4:
            return features.permute(0, 3, 1, 2) if self.channels_last else features
        patches = features[:, self.prefix_tokens :]
        # Rows and columns of the patch grid from the token count and the image's aspect ratio:
        # the patch size is not an attribute every token model has under one name.
        rows = max(round(math.sqrt(patches.shape[1] * height / width)), 1)
        columns = patches.shape[1] // rows
        if rows * columns != patches.shape[1]:
            raise PluginError(
                f"the timm model gave {patches.shape[1]} patch tokens for {height}x{width} images, which is no grid of "
                "that aspect ratio"
            )
        return patches.transpose(1, 2).reshape(len(patches), -1, rows, columns)


class TimmEncoder(nn.Module):
    """A timm model without its head: ``feature_map`` (its ``forward_features`` as a grid) and that map's average."""

    def __init__(self, name: str, body: nn.Module):
        super().__init__()
        self.name = name
        self.body = body
        self.grid = TokenGrid(getattr(body, "output_fmt", "NCHW") == "NHWC", getattr(body, "num_prefix_tokens", 0))
        self.out_dim: int = body.num_features
        self.cam_layer = "grid"
        embed = getattr(body, "patch_embed", None)
        # A model built for one input size (timm asserts it deep inside the patch embedding).
        self.input_size: tuple[int, int] | None = tuple(embed.img_size) if getattr(embed, "strict_img_size", False) else None

    def feature_map(self, x: Tensor) -> Tensor:
        """Return ``forward_features`` as a map [N, out_dim, h, w] (prefix tokens dropped), before pooling."""
        height, width = x.shape[-2:]
        if self.input_size is not None and (height, width) != self.input_size:
            raise PluginError(
                f"timm model '{self.name}' was built for {self.input_size[0]}x{self.input_size[1]} images and got "
                f"{height}x{width}"
            )
        return self.grid(self.body.forward_features(x), height, width)

    def forward(self, x: Tensor) -> Tensor:
        """Return features [N, out_dim] for images [N, C, H, W]: the feature map's global average."""
        return self.feature_map(x).mean(dim=(2, 3))


def build_timm(params: TimmParams, in_channels: int, image_size: int) -> TimmEncoder:
    """The timm model ``params.model`` for ``in_channels`` inputs of ``image_size``, without classifier.

    Its weights come from the local cache when asked.
    """
    # Imported here: timm pulls in torchvision.models (seconds of start-up) that suites without a
    # timm encoder, and `benchsuite validate`, should not pay.
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(params.model):
        close = difflib.get_close_matches(params.model, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `timm.list_models('*pattern*')` lists the names"
        raise PluginError(f"timm has no model '{params.model}'{hint}")
    kwargs = {key: tuple(value) if isinstance(value, list) else value for key, value in params.kwargs.items()}
    if getattr(get_pretrained_cfg(params.model), "fixed_input_size", False):
        kwargs["img_size"] = image_size
    if params.weights == "imagenet":
        kwargs["pretrained_cfg_overlay"] = {"file": str(cached_checkpoint(params.model))}
    try:
        # Built with its classifier, which the weights hold too: timm then loads them strictly, where
        # num_classes=0 would make it skip, with a log line, every tensor that does not fit.
        body = timm.create_model(params.model, pretrained=params.weights == "imagenet", in_chans=in_channels, **kwargs)
    except TypeError as exc:  # a keyword the model's constructor does not take
        raise PluginError(
            f"timm model '{params.model}' refused its arguments ({exc}); kwargs must be arguments of the model's constructor"
        ) from None
    except RuntimeError as exc:
        if params.weights == "none":
            raise
        # The checkpoint's tensors do not fit the model: kwargs changed its shape.
        raise PluginError(
            f"the cached weights of timm model '{params.model}' do not fit the model as built with {params.kwargs}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    body.reset_classifier(0)
    encoder = TimmEncoder(params.model, body)
    patch = getattr(getattr(body, "patch_embed", None), "patch_size", None)
    size = encoder.input_size
    # timm would drop the pixels past the last whole patch without a word.
    if size is not None and patch is not None and (size[0] % patch[0] or size[1] % patch[1]):
        raise PluginError(
            f"timm model '{params.model}' cuts images into {patch[0]}x{patch[1]} patches: the suite's data size must be a "
            f"multiple of {patch[0]} ({', '.join(str(patch[0] * k) for k in (2, 3, 4))}, ...), not {image_size}"
        )
    return encoder


def cached_checkpoint(name: str) -> Path:
    """The local Hugging Face hub cache's file of timm's weights for ``name``, or a PluginError saying how to get it."""
    import huggingface_hub
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    config: PretrainedCfg | None = get_pretrained_cfg(name)
    if config is None or not config.hf_hub_id:
        raise PluginError(f"timm has no pretrained weights on the Hugging Face hub for '{name}'; use weights: none")
    files = [config.hf_hub_filename] if config.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for file in files:
        found = huggingface_hub.try_to_load_from_cache(config.hf_hub_id, file)
        if isinstance(found, str):
            return Path(found)
    folder = Path(constants.HF_HUB_CACHE) / huggingface_hub.file_download.repo_folder_name(
        repo_id=config.hf_hub_id, repo_type="model"
    )
    raise PluginError(
        f"the pretrained weights of timm model '{name}' ({config.hf_hub_id}, {' or '.join(files)}) are not in the local "
        f"Hugging Face hub cache at {folder}; benchsuite never downloads weights. Fetch them once on a machine with "
        f"internet, e.g. `python -c \"import timm; timm.create_model('{config.hf_hub_id.removeprefix('timm/')}', "
        f"pretrained=True)\"`, and copy the folder {folder.name} from that machine's cache (~/.cache/huggingface/hub) "
        "to this path (set HF_HUB_CACHE or HF_HOME to change the cache location)."
    )


@hookimpl
def benchsuite_register_encoders(registry: Registry[EncoderFactory]) -> None:
    """Register ``timm``."""
    registry.add(
        "timm",
        build_timm,
        params=TimmParams,
        description="Any timm model without its classifier (ViT and Swin token maps as grids), optionally with "
        "pretrained weights from the local Hugging Face cache.",
    )
