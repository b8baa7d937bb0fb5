"""The timm encoder: the follow-up study's eight models build, train and explain at CPU sizes; weights only from the local cache.

Shrunk where the published size would dominate the test's time, keeping each architecture's kind
of blocks, stem, patch size and window: ViT-B/16 and Swin-T at 32 px (4 patch tokens; Swin's
windows then span its whole map) with one block per stage, ConvNeXt-T with one block per stage,
WRN-50-2 with one bottleneck per stage. ResNet-18, EfficientNet-B0, RegNetY-400MF and
MobileNetV2 are built as published. Every image is 32 px: the CNNs' maps are 1x1.
"""

from __future__ import annotations

import copy
from pathlib import Path

import huggingface_hub
import pydantic
import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub import constants

from benchsuite.api import PluginError
from benchsuite.engine.pipeline import PairSimilarity
from benchsuite.engine.registry import default_registry
from benchsuite.engine.stacking import train_stacked
from benchsuite.engine.training import pretrain
from benchsuite.engine.views import FixedPair
from benchsuite_plugins.augmentations.rotation import Rotation, RotationParams
from benchsuite_plugins.encoders.timm import TimmEncoder
from tests.conftest import component, metric_inputs

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

SIZE = 32
ROTATION = Rotation(RotationParams())
SHRUNK = {
    "resnet18": {},
    "convnext_tiny": {"kwargs": {"depths": [1, 1, 1, 1]}},
    "vit_base_patch16_224": {"kwargs": {"depth": 1}},
    "efficientnet_b0": {},
    "regnety_004": {},
    "wide_resnet50_2": {"kwargs": {"layers": [1, 1, 1, 1]}},
    "mobilenetv2_100": {},
    "swin_tiny_patch4_window7_224": {"kwargs": {"depths": [1, 1, 1, 1]}},
}
MODELS = list(SHRUNK)


def make_encoder(model: str, in_channels: int = 1, image_size: int = SIZE, **params) -> TimmEncoder:
    found = default_registry().get("encoders", "timm")
    return found.factory(found.params.model_validate({"model": model, **params}), in_channels, image_size)


def shrunk(model: str, in_channels: int = 1, seed: int = 0, **params) -> TimmEncoder:
    torch.manual_seed(seed)
    return make_encoder(model, in_channels, **SHRUNK[model], **params)


def images(n: int, in_channels: int = 1) -> torch.Tensor:
    return torch.rand(n, in_channels, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def method(name: str, encoder: TimmEncoder, **training):
    found = default_registry().get("ssp_methods", name)
    heads = {"proj_hidden_dim": 16, "proj_dim": 8} | ({"queue_size": 8} if name == "moco_v2" else {})
    return found.factory(found.params(epochs=1, batch_size=4, lr=0.01, **heads, **training), encoder)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("model", MODELS)
def test_each_model_maps_images_to_the_average_of_its_feature_map(model, in_channels):
    encoder = shrunk(model, in_channels).eval()
    x = images(2, in_channels)
    with torch.no_grad():
        fmap = encoder.feature_map(x)
        assert fmap.shape[:2] == (2, encoder.out_dim)
        torch.testing.assert_close(encoder(x), fmap.mean(dim=(2, 3)))
    assert encoder.get_submodule(encoder.cam_layer) is encoder.grid


@pytest.mark.parametrize(("model", "grid"), [("vit_base_patch16_224", 2), ("swin_tiny_patch4_window7_224", 1)])
def test_transformer_maps_are_the_patch_tokens_on_their_grid(model, grid):
    encoder = shrunk(model).eval()
    with torch.no_grad():
        tokens = encoder.body.forward_features(images(2))
        fmap = encoder.feature_map(images(2))
    assert fmap.shape == (2, encoder.out_dim, grid, grid)
    if model.startswith("vit"):  # [N, 1 + 4, D]: the class token, then the patches row by row
        torch.testing.assert_close(fmap[:, :, 0, 1], tokens[:, 2])
        torch.testing.assert_close(fmap[:, :, 1, 0], tokens[:, 3])
    else:  # Swin's map is channels-last
        torch.testing.assert_close(fmap, tokens.permute(0, 3, 1, 2))


@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_a_step_and_gives_a_grad_cam_map(model):
    # MoCo v2 and SimCLR, the follow-up study's methods, in turn.
    ssp = method("moco_v2" if MODELS.index(model) % 2 else "simclr", shrunk(model))
    before = copy.deepcopy(ssp.encoder.state_dict())
    curves = pretrain(ssp, ROTATION, 90.0, images(4), torch.Generator().manual_seed(0))
    assert torch.isfinite(torch.as_tensor(curves.step_loss)).all()
    assert any(not torch.equal(before[key], value) for key, value in ssp.encoder.state_dict().items())

    grad_cam = component("saliency_methods", "grad_cam")
    grad_cam.check(ssp)
    x = images(3)
    maps = grad_cam(PairSimilarity(ssp.eval(), FixedPair(ROTATION, x, 90.0, torch.Generator())), x, torch.Generator())
    assert maps.shape == (3, SIZE, SIZE)
    assert torch.isfinite(maps).all() and (maps >= 0).all()


@pytest.mark.parametrize("model", ["vit_base_patch16_224", "swin_tiny_patch4_window7_224"])
def test_segmentation_dice_decodes_a_transformer_feature_map(model):
    x = images(12)
    masks = torch.zeros(12, SIZE, SIZE, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    inputs = metric_inputs(images=x[:4], masks=masks[:4], train_images=x, train_masks=masks, encoder=shrunk(model).eval())
    dice = component("metrics", "segmentation_dice", fraction=1.0, epochs=1, batch_size=4, freeze_encoder=True)(inputs)
    assert dice.shape == (4,) and torch.isfinite(dice).all()


def test_stacked_training_of_a_vit_matches_training_each_model_alone():
    methods = [method("simclr", shrunk("vit_base_patch16_224", seed=seed)) for seed in (1, 2)]
    alone = [copy.deepcopy(m) for m in methods]
    thetas = [30.0, 90.0]
    stacked = train_stacked(methods, ROTATION, thetas, images(8), [torch.Generator().manual_seed(s) for s in (1, 2)])
    for m, theta, seed, curves in zip(alone, thetas, (1, 2), stacked, strict=True):
        serial = pretrain(m, ROTATION, theta, images(8), torch.Generator().manual_seed(seed))
        torch.testing.assert_close(torch.as_tensor(curves.step_loss), torch.as_tensor(serial.step_loss))
    for m, n in zip(methods, alone, strict=True):
        for a, b in zip(m.parameters(), n.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def stacked_swins(**kwargs) -> list:
    """Train two shrunk Swins as a stack, built with the extra timm ``kwargs``."""
    params = {**SHRUNK["swin_tiny_patch4_window7_224"], "kwargs": {**SHRUNK["swin_tiny_patch4_window7_224"]["kwargs"], **kwargs}}
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(method("simclr", make_encoder("swin_tiny_patch4_window7_224", 1, **params)))
    return train_stacked(models, ROTATION, [30.0, 90.0], images(4), [torch.Generator().manual_seed(s) for s in (1, 2)])


def test_swin_stochastic_depth_is_what_keeps_it_from_training_as_a_stack():
    # timm's Swin drops paths at rate 0.1 by default: a random op, which vmap refuses; the pipeline
    # sees "vmap" in the error and runs the cells one at a time.
    with pytest.raises(RuntimeError, match="vmap: called random operation"):
        stacked_swins()
    assert len(stacked_swins(drop_path_rate=0.0)) == 2


# Weights from a temporary Hugging Face hub cache.

REVISION = "0" * 40


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache in place of the user's (huggingface_hub reads the constant at each look-up)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def cache_checkpoint(cache: Path, repo_id: str, state: dict[str, torch.Tensor]) -> None:
    """Put ``state`` where the hub keeps ``repo_id``'s model.safetensors at its main revision."""
    repo = cache / huggingface_hub.file_download.repo_folder_name(repo_id=repo_id, repo_type="model")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "snapshots" / REVISION).mkdir(parents=True)
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in state.items()}, repo / "snapshots" / REVISION / "model.safetensors"
    )


@pytest.fixture
def cached_resnet18(hub_cache) -> dict[str, torch.Tensor]:
    """A random timm resnet18 with its classifier, saved as the default tag's weights (timm/resnet18.a1_in1k)."""
    torch.manual_seed(0)
    state = timm.create_model("resnet18").state_dict()
    cache_checkpoint(hub_cache, "timm/resnet18.a1_in1k", state)
    return state


def test_cached_weights_are_loaded_for_rgb_input_without_the_classifier(cached_resnet18):
    loaded = make_encoder("resnet18", 3, weights="imagenet").body.state_dict()
    assert loaded.keys() == {key for key in cached_resnet18 if not key.startswith("fc.")}
    for key, value in loaded.items():
        torch.testing.assert_close(value, cached_resnet18[key], rtol=0, atol=0)


def test_cached_weights_sum_the_rgb_stem_for_grey_input(cached_resnet18):
    encoder = make_encoder("resnet18", 1, weights="imagenet").eval()
    torch.testing.assert_close(encoder.body.conv1.weight, cached_resnet18["conv1.weight"].sum(dim=1, keepdim=True))
    rgb = make_encoder("resnet18", 3, weights="imagenet").eval()
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)


def test_cached_vit_weights_are_resampled_to_the_image_size(hub_cache):
    torch.manual_seed(0)
    state = timm.create_model("vit_base_patch16_224", depth=1).state_dict()  # 224 px: 14 x 14 patches
    cache_checkpoint(hub_cache, "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", state)
    body = make_encoder("vit_base_patch16_224", 3, weights="imagenet", **SHRUNK["vit_base_patch16_224"]).body
    assert body.pos_embed.shape == (1, 1 + 2 * 2, 768)
    torch.testing.assert_close(body.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"], rtol=0, atol=0)


def test_a_tag_in_the_name_picks_those_weights(hub_cache):
    torch.manual_seed(0)
    state = timm.create_model("resnet18").state_dict()
    cache_checkpoint(hub_cache, "timm/resnet18.tv_in1k", state)
    body = make_encoder("resnet18.tv_in1k", 3, weights="imagenet").body
    torch.testing.assert_close(body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"], rtol=0, atol=0)
    with pytest.raises(PluginError, match=r"resnet18\.a1_in1k"):
        make_encoder("resnet18", 3, weights="imagenet")


def test_missing_weights_say_where_to_put_them_and_nothing_is_downloaded(hub_cache):
    with pytest.raises(PluginError) as error:
        make_encoder("resnet18", 1, weights="imagenet")
    message = str(error.value)
    assert str(hub_cache / "models--timm--resnet18.a1_in1k") in message
    assert "never downloads" in message and "timm.create_model('resnet18.a1_in1k', pretrained=True)" in message
    assert not any(hub_cache.iterdir())


def test_weights_that_do_not_fit_the_shrunk_model_are_a_plugin_error(cached_resnet18):
    with pytest.raises(PluginError, match="do not fit"):
        make_encoder("resnet18", 1, weights="imagenet", kwargs={"layers": [1, 1, 1, 1]})


# Bad input: clear errors, before any training where the parameters alone tell.


def test_a_transformer_is_built_for_the_suites_image_size_and_refuses_another():
    encoder = make_encoder("vit_base_patch16_224", 1, image_size=224, kwargs={"depth": 1})  # timm's own size
    assert encoder.input_size == (224, 224)
    with pytest.raises(PluginError, match=r"built for 224x224 images and got 32x32"):
        encoder(images(1))


@pytest.mark.parametrize(
    ("model", "size", "accepted"), [("vit_base_patch16_224", 40, "16"), ("swin_tiny_patch4_window7_224", 30, "4")]
)
def test_an_image_size_that_is_no_multiple_of_the_patch_names_the_sizes_accepted(model, size, accepted):
    with pytest.raises(PluginError, match=rf"must be a multiple of {accepted} .*not {size}"):
        make_encoder(model, 1, image_size=size, kwargs={"depth": 1} if model.startswith("vit") else {"depths": [1, 1, 1, 1]})


def test_a_model_that_takes_any_size_is_built_as_it_is():
    encoder = make_encoder("resnet18", 1, image_size=SIZE).eval()
    assert encoder.input_size is None
    assert encoder(torch.rand(1, 1, 2 * SIZE, 2 * SIZE)).shape == (1, encoder.out_dim)


def test_an_unknown_model_suggests_close_names():
    with pytest.raises(PluginError, match=r"timm has no model 'resnet81'; did you mean .*resnet18"):
        make_encoder("resnet81")


@pytest.mark.parametrize("key", ["in_chans", "num_classes", "pretrained", "img_size"])
def test_keys_the_plugin_sets_are_refused_in_kwargs(key):
    with pytest.raises(pydantic.ValidationError, match="set by the plugin"):
        default_registry().get("encoders", "timm").params(model="resnet18", kwargs={key: 1})
