"""Suite text to a schema-checked :class:`Suite`, every problem located by its key and YAML line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from benchsuite.engine.suite.schema import Suite
from benchsuite.results.errors import SuiteError, did_you_mean, validation_problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """Refuses duplicate keys, which plain YAML silently lets the last one win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (each key may appear once)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _line_of(root: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """The 1-based line of the deepest YAML node that ``loc`` (a pydantic error path) reaches."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                continue  # union tags such as 'list[float]' name no key; stay on this node
            key_node, node = match[0]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def where(path: str, root: yaml.Node | None, loc: Sequence[Any]) -> str:
    line = _line_of(root, loc)
    key = ".".join(str(p) for p in loc)
    return f"{path}:{line}: '{key}'" if line else f"{path}: '{key}'"


def _schema_problems(error: ValidationError, path: str, root: yaml.Node | None) -> list[str]:
    problems = []
    for loc, message, kind in validation_problems(error.errors()):
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            hint = did_you_mean(str(loc[-1]), model.model_fields) if model else ""
            problems.append(f"{where(path, root, loc)} is not a known key.{hint}")
        elif kind == "missing":
            problems.append(f"{where(path, root, loc)} is required but missing.")
        else:
            problems.append(f"{where(path, root, loc)}: {message}.")
    return problems


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The schema model that owns the keys at ``loc``, for suggesting a misspelt key."""
    model: type[BaseModel] = Suite
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            continue  # a label (dict key) or a union tag
        annotation = field.annotation
        nested = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return None
        model = nested[-1]
    return model


def parse_suite(text: str, path: str = "<suite>") -> tuple[Suite, yaml.Node | None]:
    """Parse and schema-check suite text; :class:`SuiteError` lists every problem with its line."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(
            f"{where}: the file is not valid YAML: {problem}. Check the indentation and the ':' after each key."
        ) from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else "a list" if isinstance(data, list) else "a single value"
        raise SuiteError(f"{path}: a suite must be a YAML mapping with keys such as name, datasets, theta, seeds; got {found}.")
    try:
        return Suite.model_validate(data), root
    except ValidationError as exc:
        problems = _schema_problems(exc, path, root)
        raise SuiteError(problems_text(path, problems) + " See docs/suites.md for every key.") from None


def problems_text(path: str, problems: Sequence[str]) -> str:
    return f"{path} has {len(problems)} problem{'s' * (len(problems) != 1)}: " + " ".join(problems)
