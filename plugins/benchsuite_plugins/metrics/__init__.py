"""The ``metrics`` entry point: registers the saliency-vs-mask metrics (``localisation.py``) and
the training diagnostic ``final_loss`` (``training_loss.py``).

The other metric modules are entry points of their own.
"""

from __future__ import annotations

from benchsuite.api import MetricFactory, Registry, hookimpl
from benchsuite_plugins.metrics import localisation, training_loss


@hookimpl
def benchsuite_register_metrics(registry: Registry[MetricFactory]) -> None:
    """Register the saliency-vs-mask metrics and ``final_loss``."""
    localisation.register(registry)
    training_loss.register(registry)
