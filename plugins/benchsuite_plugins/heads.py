"""Projection heads shared by the built-in SSP methods (a helper module, not an entry point)."""

from __future__ import annotations

from torch import nn


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The 2-layer MLP head of MoCo v2 and SimCLR: Linear, ReLU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
