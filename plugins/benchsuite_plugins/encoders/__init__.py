"""The ``encoders`` entry point: registers ``small_cnn`` (``small_cnn.py``) and the ResNets (``resnet.py``).

Every encoder maps [N, C, H, W] to features [N, out_dim] and carries ``out_dim``. An encoder may
also offer ``feature_map(x) -> [N, out_dim, h, w]``, the output of its last block before
pooling, such that ``forward(x)`` is that map's global average pool: dense downstream tasks (the
``segmentation_dice`` metric) decode it. It may name the module that computes that map as
``cam_layer``, a module path inside it, which ``grad_cam`` hooks by default. All built-in
encoders offer both.
"""

from __future__ import annotations

from benchsuite.api import EncoderFactory, Registry, hookimpl
from benchsuite_plugins.encoders import resnet, small_cnn


@hookimpl
def benchsuite_register_encoders(registry: Registry[EncoderFactory]) -> None:
    """Register ``small_cnn``, ``resnet18`` and ``resnet50``."""
    small_cnn.register(registry)
    resnet.register(registry)
