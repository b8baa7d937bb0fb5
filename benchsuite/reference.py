"""Generates docs/suites.md from the pydantic models, so the reference cannot drift from the code.

Regenerate with ``python -m benchsuite.reference > docs/suites.md``; a test fails when the file
and the models disagree.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from benchsuite.engine.grid import expand
from benchsuite.engine.kinds import KINDS
from benchsuite.engine.registry import BUILT_IN, PluginRegistry, default_registry
from benchsuite.engine.suite import (
    AnalysisSettings,
    ComponentSpec,
    DataSettings,
    NamedComponentSpec,
    RecordSettings,
    Suite,
    ThetaRange,
    load_suite,
)

_INTRO = """\
# Suite reference

A suite is a YAML file that names the grid and the plugins. `benchsuite validate SUITE` checks
it, plugin names and parameters included, without running anything. Every key below is checked:
a misspelt key is an error that names its line and suggests the right spelling.

*This page is generated from the code by `python -m benchsuite.reference > docs/suites.md`;
a test fails when the two disagree.*

## The grid

The cells are the Cartesian product of five axes: `datasets` x `theta` x `seeds` x `methods` x
`encoders`. Datasets, methods and encoders are mappings from a **label** (your name for it, used
as the coordinate in the results cube) to a **component**. A component is either a plugin name
or a mapping `{plugin: NAME, params: {...}}`; parameters left out take the defaults listed in
[Built-in plugins](#built-in-plugins). Each cell is keyed by a hash of its resolved
configuration and the plugin versions, so changing any of them makes new cells, and resuming
a run directory with a changed suite is refused.

```yaml
name: example
data: {size: 32, eval_images: 32}
datasets:
  shapes: {plugin: symmetric_shapes, params: {k: 4}}
  brain: icbm152
theta: {start: 0, stop: 360, step: 30}   # or a list: [0, 45, 90]
seeds: [0, 1]
methods:
  moco: {plugin: moco_v2, params: {epochs: 10}}
encoders: {cnn: small_cnn}
saliency: {plugin: smoothgrad, params: {samples: 16}}
metrics: [dice, auroc, {plugin: dice, name: dice_otsu, params: {binarize: otsu}}]
```
"""


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥"), ("max_length", "length ≤"),
           ("pattern", "matches"))  # fmt: skip


def _bounds(metadata: Iterable[Any]) -> list[str]:
    """The constraints in pydantic metadata (``Ge(ge=1)``, or a ``Field(...)`` holding some) as a reader writes them: ``≥ 1``."""
    found = []
    for item in metadata:
        if isinstance(item, FieldInfo):  # Annotated[int, Field(ge=1)] keeps its constraints in the Field
            found += _bounds(item.metadata)
        found += [f"{symbol} {value}" for attr, symbol in _BOUNDS if (value := getattr(item, attr, None)) is not None]
    return found


def _type_name(annotation: Any) -> str:
    """A field's type as a reader writes it: ``int ≥ 1 or 'auto'``, ``list[float] or ThetaRange``, ``str or null``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = _bounds(args[1:])
        shown = bounds if len(bounds) < 2 else [f"({', '.join(bounds)})"]  # int ≥ 0, int (≥ 1, ≤ 4096)
        return " ".join([_type_name(args[0]), *shown])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is typing.Literal:
        return " or ".join(repr(arg) for arg in args)
    if annotation is type(None):
        return "null"
    if annotation is Ellipsis:  # tuple[int, ...]
        return "..."
    if origin is not None:  # list[float], dict[str, ComponentSpec], tuple[int, int]
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=True) or value.model_dump()
    return f"`{json.dumps(value)}`"


def model_table(model: type[BaseModel]) -> str:
    """A markdown table of a model's fields: key, type, default, constraint, description."""
    rows = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        cells = (
            f"`{name}`",
            _type_name(field.annotation),
            _default(field),
            ", ".join(_bounds(field.metadata)),
            field.description or "",
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def shipped_suites(folder: Path, registry: PluginRegistry) -> str:
    """A section listing the suites in ``folder``: file, size of the grid and the suite's own description."""
    parts = [
        "## The shipped suites\n\nEach file's comment block names the study it reproduces in miniature, "
        "what was chosen where the study is silent, and its planted known answer."
    ]
    for path in sorted(folder.glob("*.yaml")):
        resolved = load_suite(path, registry)
        cells = len(expand(resolved))
        parts.append(f"### `suites/{path.name}`: {cells:,} cells\n\n{' '.join(resolved.suite.description.split())}")
    return "\n\n".join(parts)


def suite_reference(registry: PluginRegistry, suites: Path, distribution: str = BUILT_IN) -> str:
    """The whole reference page: the schema, the suites in ``suites`` and the parameters of ``distribution``'s components."""
    parts = [_INTRO, shipped_suites(suites, registry), "## Top-level keys", model_table(Suite)]
    for title, model in (("`data`", DataSettings), ("`analysis`", AnalysisSettings), ("`record`", RecordSettings),
                         ("`theta` as a range", ThetaRange), ("A component", ComponentSpec),
                         ("A metric", NamedComponentSpec)):  # fmt: skip
        parts += [f"### {title}", (model.__doc__ or "").strip(), model_table(model)]
    parts.append(
        "## Built-in plugins\n\n`benchsuite plugins --params` lists these for every installed plugin, third-party ones included."
    )
    for kind in KINDS:
        parts.append(f"### {kind.name.replace('_', ' ').capitalize()}")
        for name, component in sorted(registry.components[kind.name].items()):
            if component.distribution != distribution:
                continue
            parts.append(f"#### `{name}`\n\n{component.description}")
            if component.params.model_fields:
                parts.append(model_table(component.params))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    # Run from a source checkout: the shipped suites are the repository's suites/ folder.
    print(suite_reference(default_registry(), Path(__file__).resolve().parent.parent / "suites"), end="")
