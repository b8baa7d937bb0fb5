"""What is checked before the first cell trains, by ``benchsuite run`` and ``benchsuite validate --data`` alike.

Every dataset the cells use builds and can serve the study, every metric has the masks it reads,
and the saliency method can explain each model: bad data or a misfit metric or method is bad
input (exit code 2), found before any cell has paid for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from benchsuite.api import PluginError
from benchsuite.engine.building import CellFailure, build, build_method
from benchsuite.engine.data import DatasetSummary, check_datasets, dataset_key
from benchsuite.engine.grid import Cell, canonical_json
from benchsuite.engine.registry import PluginRegistry
from benchsuite.results.errors import SuiteError, sentence


def preflight(cells: Sequence[Cell], registry: PluginRegistry, *, progress: bool = False) -> list[DatasetSummary]:
    """Check every dataset ``cells`` use (:func:`check_datasets`), then :func:`check_masks` and :func:`check_saliency`.

    The datasets are built (or read from the cache) once; the later checks read their summaries.
    Returns the summaries; raises what those checks raise, and :class:`CellFailure` when building
    a model fails other than by a plugin refusing its configuration (a bug the cell would have met).
    """
    summaries = check_datasets(cells, registry, progress=progress)
    by_key = {summary.key: summary for summary in summaries}
    check_masks(cells, registry, by_key)
    check_saliency(cells, registry, by_key)
    return summaries


def check_masks(cells: Sequence[Cell], registry: PluginRegistry, datasets: Mapping[str, DatasetSummary] | None = None) -> None:
    """Refuse a metric that reads masks on a dataset that has none, as a :class:`SuiteError`.

    A dataset has none when its summary in ``datasets`` (by :func:`dataset_key`) says so or,
    without summaries, when its factory declares ``has_masks = False`` (`benchsuite validate`
    without --data, which builds no dataset). A metric reads masks unless it declares
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
        if datasets is not None:
            if datasets[dataset_key(cell)].has_masks:
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


def check_saliency(cells: Sequence[Cell], registry: PluginRegistry, datasets: Mapping[str, DatasetSummary]) -> None:
    """Let the saliency method refuse a model it cannot explain (Grad-CAM's layer, say) before any cell trains.

    A method that offers ``check(model)`` is shown an untrained model, on the CPU, of each
    combination of input channels (from the dataset's summary in ``datasets``), SSP method and
    encoder the cells use. A :class:`PluginError` that the saliency method raises, or that a
    plugin raises while the model is built (an encoder refusing the suite's image size, say),
    becomes a :class:`SuiteError`: bad input that no cell has paid for.
    """
    seen = set()
    for cell in cells:
        channels = datasets[dataset_key(cell)].shape[0]
        configs = [cell.component(kind).config for kind in ("ssp_methods", "encoders", "saliency_methods")]
        key = canonical_json([channels, cell.data.size, *configs])
        if key in seen:
            continue
        seen.add(key)
        saliency = build(registry, cell, "saliency_methods")
        if not hasattr(saliency, "check"):
            continue
        model = f"the {cell.method} / {cell.encoder} model"
        try:
            saliency.check(build_method(cell, registry, channels, torch.device("cpu")))
        except CellFailure as failure:
            if not isinstance(failure.cause, PluginError):
                raise
            raise SuiteError(f"{failure.stage} cannot build {model}: {sentence(str(failure.cause))}") from None
        except PluginError as exc:
            raise SuiteError(
                f"saliency method '{cell.component('saliency_methods').plugin}' cannot explain {model}: {sentence(str(exc))}"
            ) from None
