"""Projection heads, the precision of their losses and the moving-average update, shared by the built-in SSP methods.

A helper module, not an entry point.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The 2-layer MLP head of MoCo v2 and SimCLR: Linear, ReLU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def batchnorm_mlp(dims: Sequence[int], *, out_bias: bool = True, out_norm: bool = False) -> nn.Sequential:
    """The BatchNorm MLP of BYOL, SimSiam, Barlow Twins and VICReg through the widths ``dims``.

    Every hidden layer is Linear, BatchNorm, ReLU; its Linear has no bias, which the BatchNorm
    would subtract again. The output layer is a Linear, followed by a BatchNorm without affine
    parameters if ``out_norm`` (SimSiam's projector). It has a bias if ``out_bias`` and no
    ``out_norm``: a method whose loss cannot see a constant shift of its embeddings passes
    ``out_bias=False``, since such a bias would never get a gradient.
    """
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims[:-1]):
        layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=out_bias and not out_norm))
    if out_norm:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)


def loss_precision(*tensors: Tensor) -> list[Tensor]:
    """``tensors`` in float32, or in float64 if they are: the precision a loss is computed in.

    Under bf16 autocast the embeddings arrive in bf16, which rounds cosines near 1 in the third
    digit and sums over D^2 terms coarsely; a float64 model keeps its loss in float64.
    """
    return [t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors]


@torch.no_grad()
def follow_(slow: Sequence[nn.Module], fast: Sequence[nn.Module], weight: float) -> None:
    """Move the parameters of ``slow`` towards those of ``fast`` in place: ``slow += weight * (fast - slow)``.

    MoCo's key network and BYOL's target network; in place (``lerp_``) so that a stacked run,
    whose parameters are views of stacked tensors, updates every model's copy.
    """
    slow_params = itertools.chain.from_iterable(m.parameters() for m in slow)
    fast_params = itertools.chain.from_iterable(m.parameters() for m in fast)
    for slow_param, fast_param in zip(slow_params, fast_params, strict=True):
        slow_param.lerp_(fast_param, weight)
