"""A small float64 network and the objectives the saliency tests explain, and checks every saliency method passes.

Not a test module: ``test_gradients.py``, ``test_network.py`` and ``test_perturbation.py`` import it.
Captum, which defines the methods for the field, hooks these modules as the tests compare against it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor, nn

from benchsuite.engine.registry import default_registry
from tests.conftest import component

N, C, SIZE = 4, 2, 12


class Encoder(nn.Module):
    """Two convolutions with (not in-place) ReLUs, a named last block, global average pooling."""

    cam_layer = "block"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(C, 6, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.stem(x)).mean(dim=(2, 3))


class Method(nn.Module):
    """The trained method's role: an encoder and an embedding with a ReLU head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = Encoder()
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))

    def embed(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class PairObjective(nn.Module):
    """cos(f(x), f(rot90 x)) with ``model``, as the pipeline's objective; a module, so Captum can hook it."""

    def __init__(self, model: Method) -> None:
        super().__init__()
        self.model = model

    def forward(self, rows: Tensor, index: Tensor) -> Tensor:
        turned = torch.rot90(rows, 1, dims=(-2, -1))
        return torch.cosine_similarity(self.model.embed(rows), self.model.embed(turned), dim=1)


class ImageObjective(PairObjective):
    """cos(f(x), t_i), a target per image chosen by ``index``: the layer runs once per call, as Captum's layer methods want."""

    def forward(self, rows: Tensor, index: Tensor) -> Tensor:
        targets = torch.linspace(-1, 1, 4 * N, dtype=rows.dtype).view(N, 4)
        return torch.cosine_similarity(self.model.embed(rows), targets[index], dim=1)


method = functools.partial(component, "saliency_methods")


def images() -> Tensor:
    return torch.rand(N, C, SIZE, SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def objective(kind: type[PairObjective] = PairObjective) -> PairObjective:
    return kind(Method().double()).eval()


INDEX = torch.arange(N)


def g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def assert_stacked_equals_alone(name: str) -> None:
    """Three models' objectives as one stacked objective: each model's maps as alone."""
    fs, x = [PairObjective(Method().double()).eval() for _ in range(3)], images()
    for k, f in enumerate(fs):
        with torch.no_grad():
            for p in f.model.parameters():
                p.mul_(1 + 0.1 * k)

    def stacked(rows: Tensor, index: Tensor) -> Tensor:
        return torch.stack([f(rows[k], index) for k, f in enumerate(fs)])

    saliency = method(name, chunk_size=5) if name != "occlusion" else method(name, perturbations_per_eval=7)
    together = saliency.stacked(stacked, x, [g(), g(), g()])
    for k, f in enumerate(fs):
        torch.testing.assert_close(together[k], saliency(f, x, g()), rtol=1e-9, atol=1e-12)


# -- in a run

SUITE = """\
name: attribution
data: {size: 16, eval_images: 4, examples: 1}
datasets:
  shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 20}}
theta: [0, 45]
seeds: [0, 1]
methods:
  moco: {plugin: moco_v2, params: {epochs: 1, batch_size: 8, queue_size: 16}}
encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}
saliency: SALIENCY
metrics: [pointing_game, top_k_intersection, relevance_rank_accuracy, randomisation_correlation, deletion_auc]
executor: {plugin: local, params: {stack: STACK}}
"""


def run_suite(tmp_path, saliency: str, stack: int):
    from benchsuite.engine.runner import run_cells
    from benchsuite.engine.suite import load_suite
    from benchsuite.results.cube import open_cube

    path = tmp_path / f"{saliency}-{stack}.yaml"
    path.write_text(SUITE.replace("SALIENCY", saliency).replace("STACK", str(stack)))
    summary = run_cells(load_suite(path, default_registry()), default_registry(), tmp_path / f"runs-{stack}", progress=False)
    return open_cube(summary.run_dir)


def assert_runs_with_the_sanity_metrics(tmp_path, saliency: str) -> None:
    """``saliency`` gives finite non-negative maps in a run, and every sanity metric a value where the views differ."""
    cube = run_suite(tmp_path, saliency, 1)
    maps = cube["saliency_example"].sel(example_theta=45.0).values
    assert np.isfinite(maps).all() and (maps >= 0).all() and maps.sum() > 0
    turned = cube.sel(theta=45.0)
    for name in ("pointing_game", "top_k_intersection", "relevance_rank_accuracy", "deletion_auc"):
        assert np.isfinite(turned[name].values).all(), name
    # A rank correlation is undefined for a constant map, which Grad-CAM's ReLU gives a random model at times.
    correlation = turned["randomisation_correlation"].values
    assert np.isfinite(correlation).mean() >= 0.5 and (np.abs(correlation[np.isfinite(correlation)]) <= 1).all()
    for name in ("pointing_game", "top_k_intersection", "relevance_rank_accuracy", "randomisation_correlation", "deletion_auc"):
        assert np.isnan(cube[name].sel(theta=0.0).values).all(), name  # identical views: no maps


def assert_a_stacked_run_gives_the_numbers_of_cells_alone(tmp_path, saliency: str) -> None:
    """A run of stacks of 4 cells stores what the cells give trained alone."""
    alone, stacked = run_suite(tmp_path, saliency, 1), run_suite(tmp_path, saliency, 4)
    assert (stacked["stack_size"] == 4).all()
    for name in ("saliency_example", "top_k_intersection", "randomisation_correlation", "deletion_auc"):
        np.testing.assert_allclose(stacked[name].values, alone[name].values, rtol=1e-3, atol=1e-4)
