"""Generates docs/suites.md from the pydantic models, so the reference cannot drift from the code.

Regenerate with ``python -m benchsuite.reference > docs/suites.md``; a test fails when the file
and the models disagree.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from benchsuite.engine.grid import expand
from benchsuite.engine.kinds import KINDS
from benchsuite.engine.registry import PluginRegistry, default_registry
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


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("benchsuite.engine.suite.", "").replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=True) or value.model_dump()
    return f"`{json.dumps(value)}`"


def _constraints(field: FieldInfo) -> str:
    bounds = []
    for item in field.metadata:
        for attr, symbol in (
            ("ge", ">="),
            ("gt", ">"),
            ("le", "<="),
            ("lt", "<"),
            ("min_length", "length >="),
            ("pattern", "matches"),
        ):
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    return ", ".join(bounds)


def model_table(model: type[BaseModel]) -> str:
    """A markdown table of a model's fields: key, type, default, constraint, description."""
    rows = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        cells = (f"`{name}`", _type_name(field.annotation), _default(field), _constraints(field), field.description or "")
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


def suite_reference(registry: PluginRegistry, suites: Path, distribution: str = "benchsuite") -> str:
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
