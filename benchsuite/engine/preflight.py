"""What is checked before the first cell trains, by ``benchsuite run`` and ``benchsuite validate --data`` alike.

Every dataset the cells use builds and can serve the study, every metric has the masks it reads,
and the saliency method can explain each model: bad data or a misfit metric or method is bad
input (exit code 2), found before any cell has paid for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from benchsuite.api import PluginError
from benchsuite.engine.building import build, build_method
from benchsuite.engine.data import DatasetSummary, check_datasets, load_dataset
from benchsuite.engine.grid import Cell, canonical_json
from benchsuite.engine.registry import PluginRegistry
from benchsuite.results.errors import SuiteError, sentence


def preflight(cells: Sequence[Cell], registry: PluginRegistry, *, progress: bool = False) -> list[DatasetSummary]:
    """Check every dataset ``cells`` use (:func:`check_datasets`), then :func:`check_masks` and :func:`check_saliency`.

    Returns the datasets' summaries; raises what those checks raise, and :class:`CellFailure`
    when building a model fails (what the cell itself would have met).
    """
    summaries = check_datasets(cells, registry, progress=progress)
    check_masks(cells, registry)
    check_saliency(cells, registry)
    return summaries


def check_masks(cells: Sequence[Cell], registry: PluginRegistry, *, load: bool = True) -> None:
    """Refuse a metric that reads masks on a dataset that has none, as a :class:`SuiteError`.

    A dataset has none when its set's ``masks`` is None (``load``: the dataset is built, from the
    cache when it can be) or, without loading it, when its factory declares ``has_masks =
    False`` (`benchsuite validate` without --data). A metric reads masks unless it declares
    ``reads_masks = False``; every such metric and dataset is named at once, with the metrics
    that could score the dataset instead.
    """
    problems, seen = [], set()
    for cell in cells:
        dataset, metrics = cell.component("datasets"), cell.components("metrics")
        key = canonical_json([cell.dataset, dataset.config, [metric.config for metric in metrics.values()]])
        if key in seen:
            continue
        seen.add(key)
        if load:
            if load_dataset(dataset, cell.data.size, registry).masks is not None:
                continue
        elif getattr(registry.get("datasets", dataset.plugin).factory, "has_masks", True):
            continue
        readers = [
            f"'{name}' ({metric.plugin})"
            for name, metric in metrics.items()
            if getattr(build(registry, cell, "metrics", component=metric), "reads_masks", True)
        ]
        if readers:
            which = (
                f"metrics {', '.join(readers[:-1])} and {readers[-1]} read" if len(readers) > 1 else f"metric {readers[0]} reads"
            )
            problems.append(f"{which} masks, but dataset '{cell.dataset}' (plugin '{dataset.plugin}') has none.")
    if problems:
        free = sorted(
            name for name, found in registry.components["metrics"].items() if not getattr(found.factory, "reads_masks", True)
        )
        raise SuiteError(
            " ".join(problems) + " Leave out the metrics that read masks, or score the dataset in a suite of its own with "
            f"metrics that read none: {', '.join(free)}."
        )


def check_saliency(cells: Sequence[Cell], registry: PluginRegistry) -> None:
    """Let the saliency method refuse a model it cannot explain (Grad-CAM's layer, say) before any cell trains.

    A method that offers ``check(model)`` is shown an untrained model, on the CPU, of each
    combination of dataset, SSP method and encoder the cells use; a :class:`PluginError` it
    raises becomes a :class:`SuiteError`, bad input that no cell has paid for.
    """
    seen = set()
    for cell in cells:
        kinds = ("datasets", "ssp_methods", "encoders", "saliency_methods")
        key = canonical_json([cell.component(kind).config for kind in kinds])
        if key in seen:
            continue
        seen.add(key)
        saliency = build(registry, cell, "saliency_methods")
        if not hasattr(saliency, "check"):
            continue
        channels = load_dataset(cell.component("datasets"), cell.data.size, registry).images.shape[1]
        try:
            saliency.check(build_method(cell, registry, channels, torch.device("cpu")))
        except PluginError as exc:
            raise SuiteError(
                f"saliency method '{cell.component('saliency_methods').plugin}' cannot explain the {cell.method} / "
                f"{cell.encoder} model: {sentence(str(exc))}"
            ) from None
