"""The ``attribution`` entry point: registers the methods that look inside the network (``network.py``)
and ``occlusion`` (``perturbation.py``).

The gradient methods register themselves through the ``saliency`` entry point (``gradients.py``).
"""

from __future__ import annotations

from benchsuite.api import Registry, SaliencyFactory, hookimpl
from benchsuite_plugins.saliency import network, perturbation


@hookimpl
def benchsuite_register_saliency_methods(registry: Registry[SaliencyFactory]) -> None:
    """Register ``guided_backprop``, ``grad_cam`` and ``occlusion``."""
    network.register(registry)
    perturbation.register(registry)
