"""Checking a parsed suite against the installed plugins, and loading a suite file: parse, then resolve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from benchsuite.engine.kinds import KINDS, Kind
from benchsuite.engine.registry import ParamsError, PluginRegistry
from benchsuite.engine.suite.parsing import parse_suite, problems_text, where
from benchsuite.engine.suite.resolved import ResolvedComponent, ResolvedSuite
from benchsuite.engine.suite.schema import ComponentSpec, Suite
from benchsuite.engine.suite.sweeps import resolve_sweeps
from benchsuite.results.errors import BenchsuiteError, SuiteError, did_you_mean


def resolve(
    suite: Suite, registry: PluginRegistry, *, text: str = "", path: str = "<suite>", root: yaml.Node | None = None
) -> ResolvedSuite:
    """Check every plugin name and its params; :class:`SuiteError` lists every problem at once."""
    problems: list[str] = []

    def one(kind: Kind, spec: ComponentSpec, loc: tuple[Any, ...]) -> ResolvedComponent | None:
        try:
            component = registry.get(kind.name, spec.plugin)
            params = registry.parse_params(kind.name, spec.plugin, spec.params)
        except ParamsError as exc:
            problems.append(f"{where(path, root, (*loc, 'params'))}: {exc}")
            return None
        except BenchsuiteError as exc:  # an unknown or broken plugin
            problems.append(f"{where(path, root, (*loc, 'plugin'))}: {exc}")
            return None
        return ResolvedComponent(spec.plugin, params, component.distribution, component.version)

    components: dict[str, dict[str, ResolvedComponent]] = {}
    for kind in KINDS:
        given = getattr(suite, kind.suite_key)
        if kind.shape == "axis":
            named = [(label, spec, (kind.suite_key, label)) for label, spec in given.items()]
        elif kind.shape == "list":
            named = [(spec.label, spec, (kind.suite_key, i)) for i, spec in enumerate(given)]
        else:
            named = [(kind.suite_key, given, (kind.suite_key,))]
        components[kind.name] = {label: r for label, spec, loc in named if (r := one(kind, spec, loc)) is not None}
    if problems:
        # Every unknown name would repeat which plugins failed to load and why: say it once, last.
        note = registry.broken_note()
        named = bool(note) and any(note in problem for problem in problems)
        found = [problem.replace(note, "") for problem in problems] if named else problems
        raise SuiteError(problems_text(path, found) + (note if named else ""))
    sweeps = resolve_sweeps(suite, registry, components, problems, lambda loc: where(path, root, loc))
    labels = [spec.label for spec in suite.metrics]
    if suite.outcome is not None and suite.outcome not in labels:
        problems.append(
            f"{where(path, root, ('outcome',))}: '{suite.outcome}' is not one of the suite's metrics."
            f"{did_you_mean(suite.outcome, labels)} Its metrics: {', '.join(labels)}."
        )
    if problems:
        raise SuiteError(problems_text(path, problems))
    return ResolvedSuite(suite=suite, text=text, components=components, sweeps=sweeps)


def load_suite(path: str | Path, registry: PluginRegistry, *, executor: str | None = None) -> ResolvedSuite:
    """Read, schema-check and resolve a suite file.

    ``executor`` (YAML: a plugin name or ``{plugin: ..., params: {...}}``) replaces the suite's
    executor: where cells run is not part of what they compute, so the same suite file goes to a
    cluster unchanged, with the same cells, keys and run directory.
    """
    file = Path(path)
    if file.is_dir():
        shown = ", ".join(sorted(p.name for p in file.glob("*.yaml"))) or "none"
        raise SuiteError(f"'{file}' is a folder, not a suite file; name a .yaml file (in it: {shown}).")
    if not file.is_file():
        hint = did_you_mean(file.name, [p.name for p in file.parent.glob("*.yaml")]) if file.parent.is_dir() else ""
        raise SuiteError(f"suite file '{file}' does not exist.{hint} Suites shipped with benchsuite live in suites/.")
    text = file.read_text(encoding="utf-8")
    suite, root = parse_suite(text, str(file))
    if executor is not None:
        suite = suite.model_copy(update={"executor": _executor_override(executor, registry)})
    return resolve(suite, registry, text=text, path=str(file), root=root)


def _executor_override(text: str, registry: PluginRegistry) -> ComponentSpec:
    """The executor given on the command line, checked here so that its errors name the option, not the file."""
    try:
        spec = ComponentSpec.model_validate(yaml.safe_load(text))
        registry.get("executors", spec.plugin)
        registry.parse_params("executors", spec.plugin, spec.params)
    except yaml.YAMLError as exc:
        raise SuiteError(
            f"--executor {text!r} is not valid YAML ({getattr(exc, 'problem', None) or exc}). "
            "Give a plugin name or {plugin: NAME, params: {...}}."
        ) from None
    except ValidationError as exc:
        raise SuiteError(
            f"--executor {text!r} must be a plugin name or {{plugin: NAME, params: {{...}}}}: {exc.errors()[0]['msg']}."
        ) from None
    except BenchsuiteError as exc:
        raise SuiteError(f"--executor {text!r}: {exc}") from None
    return spec
