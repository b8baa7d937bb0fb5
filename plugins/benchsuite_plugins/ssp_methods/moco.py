"""MoCo v2 (Chen et al. 2020): a momentum key encoder, a queue of negative keys and an MLP head.

The query network is the encoder plus a 2-layer MLP head; the key network is a copy of both
that follows the query network by an exponential moving average of its parameters. The queue
of normalised keys and its write pointer are buffers, so a ``state_dict`` resumes a run
exactly. The key network's own buffers (BatchNorm statistics, if any) come from its forward
passes, as in the reference implementation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import Registry, SSPMethod, SSPMethodFactory, TrainingParams, hookimpl
from benchsuite_plugins.ssp_methods._heads import follow_, projection_head


class MoCoV2Params(TrainingParams):
    """Training and method parameters of ``moco_v2``."""

    queue_size: int = Field(1024, ge=1, le=1_048_576, description="Number of negative keys kept in the queue.")
    encoder_momentum: float = Field(
        0.99, ge=0, le=1, description="Momentum of the key network's moving average (1 freezes it, 0 copies the query network)."
    )
    temperature: float = Field(0.2, gt=0, le=10, description="Softmax temperature of the InfoNCE loss.")
    proj_hidden_dim: int = Field(128, ge=1, le=65_536, description="Hidden width of the 2-layer projection head.")
    proj_dim: int = Field(64, ge=1, le=65_536, description="Output size of the projection head: the embedding the loss sees.")
    queue_init: Literal["random", "keys"] = Field(
        "random",
        description=(
            "What the queue holds before the first step. 'random': random unit vectors, as in the reference code. "
            "Real keys replace them a batch a step, so a cell that enqueues fewer than queue_size keys in all "
            "(about training images x epochs) ends with part of its negatives random and easy and its loss lower, "
            "the more so the smaller its dataset. 'keys': the key network's keys of training pairs (batches and "
            "views drawn as training draws them), the queue as it stands after one pass over a dataset at least as "
            "large as the queue; a smaller dataset is passed over until the queue is full, so the queue holds "
            "several keys of each image, an anchor's own among its negatives, as training would reach later, and "
            "the loss is then higher the smaller the dataset. Neither makes final_loss compare datasets of "
            "different sizes; heldout_infonce does."
        ),
    )
    symmetric: bool = Field(
        False,
        description=(
            "Also score view2's query against view1's key and average the two losses (keys of both "
            "views are enqueued). The published MoCo v2 is asymmetric; the symmetric loss makes "
            "theta and 360 - theta equivalent for rotation-invariant data."
        ),
    )


class MoCoV2(SSPMethod):
    """MoCo v2 on the pair ``(view1, view2)``: queries from view1, keys from view2."""

    params: MoCoV2Params

    def __init__(self, params: MoCoV2Params, encoder: nn.Module):
        super().__init__()
        self.params = params
        self.encoder = encoder
        self.head = projection_head(encoder.out_dim, params.proj_hidden_dim, params.proj_dim)
        self.key_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)
        # Random unit keys stand in for negatives until real keys arrive, as in the reference code.
        self.register_buffer("queue", F.normalize(torch.randn(params.queue_size, params.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        # Keys enqueued so far: the pointer wraps around, and whether the random ones are gone is in the count.
        self.register_buffer("keys_seen", torch.zeros((), dtype=torch.long))

    def embed(self, x: Tensor) -> Tensor:
        """Return the L2-normalised query projection [N, proj_dim]."""
        return F.normalize(self.head(self.encoder(x)), dim=1)

    @torch.no_grad()
    def _keys(self, x: Tensor) -> Tensor:
        return F.normalize(self.key_head(self.key_encoder(x)), dim=1)

    def _info_nce(self, queries: Tensor, keys: Tensor) -> Tensor:
        # Cosines near 1 differ in the third digit, which bf16 would round away: use float32.
        with torch.autocast(queries.device.type, enabled=False):
            queries, keys = queries.float(), keys.float()
            positive = (queries * keys).sum(dim=1, keepdim=True)
            # A copy: backward needs the queue as it was here, after forward has enqueued new keys.
            negative = queries @ self.queue.to(torch.float32, copy=True).T
            logits = torch.cat([positive, negative], dim=1) / self.params.temperature
            target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
            return F.cross_entropy(logits, target)

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:
        """Return the InfoNCE loss of the batch; in training mode, then enqueue its keys.

        Outside training mode (e.g. when the core scores held-out images) the queue is left
        untouched, so evaluation does not change what training sees next.
        """
        keys = self._keys(view2)
        loss = self._info_nce(self.embed(view1), keys)
        if self.params.symmetric:
            keys_of_view1 = self._keys(view1)
            loss = (loss + self._info_nce(self.embed(view2), keys_of_view1)) / 2
            keys = torch.cat([keys, keys_of_view1])
        if self.training:
            self._enqueue(keys)
        return loss

    @torch.no_grad()
    def before_training(self, pairs: Iterator[tuple[Tensor, Tensor]]) -> None:
        """With ``queue_init: keys``, enqueue the keys of training pairs until no random key is left.

        The keys are those a training step would enqueue (of view2, and of view1 when symmetric).
        """
        if self.params.queue_init == "random":
            return
        while self.keys_seen < self.params.queue_size:
            view1, view2 = next(pairs)
            keys = self._keys(view2)
            self._enqueue(torch.cat([keys, self._keys(view1)]) if self.params.symmetric else keys)

    def placeholder_negatives(self) -> float:
        """The share of the queue still holding the random unit vectors it started with."""
        size = self.params.queue_size
        return max(size - int(self.keys_seen), 0) / size

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        # Written as if the keys went in one by one, wrapping around the ring: only the last
        # queue_size of them survive, and the pointer advances by the full count.
        size, count = self.params.queue_size, len(keys)
        kept = keys[-size:]
        offsets = torch.arange(count - len(kept), count, device=keys.device)
        self.queue[(self.queue_ptr + offsets) % size] = kept.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + count) % size)
        self.keys_seen.add_(count)

    def after_step(self, progress: float) -> None:
        """Move the key network towards the query network: key = m * key + (1 - m) * query.

        ``m`` is constant over training, as in MoCo v2 (``progress`` is not read).
        """
        follow_((self.key_encoder, self.key_head), (self.encoder, self.head), 1.0 - self.params.encoder_momentum)


@hookimpl
def benchsuite_register_ssp_methods(registry: Registry[SSPMethodFactory]) -> None:
    """Register the ``moco_v2`` SSP method."""
    registry.add(
        "moco_v2",
        MoCoV2,
        params=MoCoV2Params,
        description="MoCo v2: momentum key encoder, queue of negatives, MLP head, InfoNCE loss.",
    )
