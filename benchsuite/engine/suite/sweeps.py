"""The suite's ``sweep`` entries: each path resolved to one component parameter, and named as a cube dimension."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from benchsuite.engine.kinds import KINDS, Kind
from benchsuite.engine.registry import ParamsError, PluginRegistry
from benchsuite.engine.suite.resolved import ResolvedComponent, Sweep
from benchsuite.engine.suite.schema import ComponentSpec, Suite
from benchsuite.results.cube import AXES, DIMS
from benchsuite.results.errors import did_you_mean

# Names a swept parameter's dimension must not take: the grid axes and the cube's other dimensions.
_TAKEN = {*AXES, *DIMS}


def resolve_sweeps(
    suite: Suite,
    registry: PluginRegistry,
    components: dict[str, dict[str, ResolvedComponent]],
    problems: list[str],
    where: Callable[[tuple[Any, ...]], str],
) -> tuple[Sweep, ...]:
    """The suite's ``sweep`` entries, each path resolved to a component parameter and each value validated by its model."""
    found: list[Sweep] = []
    for path, values in suite.sweep.items():
        at = where(("sweep", path))
        target = _sweep_target(suite, path, components)
        if isinstance(target, str):
            problems.append(f"{at}: {target}")
            continue
        kind, label, field, spec = target
        model = registry.get(kind.name, spec.plugin).params
        if field not in model.model_fields:
            hint = did_you_mean(field, model.model_fields)
            problems.append(f"{at}: {kind.label} '{spec.plugin}' has no parameter '{field}'.{hint} Its parameters: "
                            f"{', '.join(model.model_fields) or 'none'}.")  # fmt: skip
            continue
        validated = []
        for value in values:
            try:
                params = registry.parse_params(kind.name, spec.plugin, {**spec.params, field: value})
            except ParamsError as exc:
                problems.append(f"{at}: value {value!r}: {exc}")
                continue
            validated.append(params.model_dump(mode="json")[field])
        if len(validated) == len(values):
            found.append(Sweep(field, path, kind.name, label, field, tuple(validated)))
    return _named(found, problems, where)


_PATH_FORMS = "KEY.params.FIELD (augmentation, saliency) or KEY.LABEL.params.FIELD (datasets, methods, encoders, metrics)"


def _sweep_target(
    suite: Suite, path: str, components: dict[str, dict[str, ResolvedComponent]]
) -> tuple[Kind, str, str, ComponentSpec] | str:
    """The kind, component label, parameter and component spec a sweep path names, or what is wrong with the path."""
    parts = path.split(".")
    by_key = {k.suite_key: k for k in KINDS if k.cell_key is not None}
    kind = by_key.get(parts[0])
    if kind is None:
        if parts[0] == "executor":
            return "the executor decides where cells run, not what they compute, so it cannot be swept."
        return f"'{parts[0]}' names no component key.{did_you_mean(parts[0], by_key)} A path is {_PATH_FORMS}."
    labelled = kind.shape != "one"
    if len(parts) != (4 if labelled else 3) or parts[-2] != "params":
        return f"'{path}' is not a parameter path; a path is {_PATH_FORMS}."
    label = parts[1] if labelled else kind.suite_key
    if label not in components[kind.name]:
        return f"'{label}' is not a label of {kind.suite_key}.{did_you_mean(label, components[kind.name])}"
    if kind.shape == "axis" and len(components[kind.name]) > 1:
        return (
            f"sweeping a parameter of {kind.suite_key} '{label}' needs '{label}' to be the suite's only entry of "
            f"{kind.suite_key}: the cells of the others would repeat the same computation at every value."
        )
    given = getattr(suite, kind.suite_key)
    spec = given if kind.shape == "one" else given[label] if kind.shape == "axis" else next(c for c in given if c.label == label)
    return kind, label, parts[-1], spec


def _named(sweeps: list[Sweep], problems: list[str], where: Callable[[tuple[Any, ...]], str]) -> tuple[Sweep, ...]:
    """Each sweep under its parameter's name as its dimension, or ``LABEL_FIELD`` where that name is taken."""
    counts = Counter(s.field for s in sweeps)
    named = []
    for sweep in sweeps:
        dim = sweep.field if counts[sweep.field] == 1 and sweep.field not in _TAKEN else f"{sweep.label}_{sweep.field}"
        if dim in _TAKEN or dim in {s.dim for s in named}:
            problems.append(f"{where(('sweep', sweep.path))}: its dimension would be named '{dim}', which is taken.")
            continue
        named.append(replace(sweep, dim=dim))
    return tuple(named)
