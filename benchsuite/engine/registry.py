"""Finds plugins through the ``benchsuite`` entry-point group and keeps what they register.

Each entry point is imported and registered inside its own ``try``: a broken plugin becomes a
warning that names it, and an error only when a suite uses a name it might have provided.
A component can always be named ``distribution:name``, so two distributions that register
the same name do not disable each other. A bare name that benchsuite's own distribution
registers stays benchsuite's (installing a plugin never breaks a suite that works); a bare
name that only third-party distributions share is ambiguous and must be qualified.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import re
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy
from pydantic import ValidationError

from benchsuite import api
from benchsuite.api import PROJECT, Params, PluginError
from benchsuite.engine import hookspecs
from benchsuite.engine.kinds import BY_NAME, KINDS
from benchsuite.results.errors import PluginLoadError, PluginWarning, SuiteError, did_you_mean, sentence, validation_problems


@dataclass(frozen=True)
class Component:
    """One registered component: a factory, its parameter model and where it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    params: type[Params]
    description: str
    plugin: str
    distribution: str
    version: str

    @property
    def origin(self) -> str:
        return f"plugin '{self.plugin}' from {self.distribution} {self.version}"

    @property
    def qualified_name(self) -> str:
        return f"{self.distribution}:{self.name}"


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that failed to import or to register."""

    plugin: str
    distribution: str
    version: str
    error: str
    traceback: str

    def describe(self) -> str:
        return sentence(f"plugin '{self.plugin}' from {self.distribution} {self.version} failed to load: {self.error}")


def _canonical(distribution: str) -> str:
    """A distribution name as PEP 503 compares them: case-insensitive, runs of ``-``, ``_`` and ``.`` alike."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


BUILT_IN = "benchsuite"
"""The distribution whose components keep their bare names when another distribution registers the same name."""


def _built_in(component: Component) -> bool:
    return _canonical(component.distribution) == BUILT_IN


class _KindRegistry:
    """The ``api.Registry`` handed to one plugin's hook for one kind."""

    def __init__(self, owner: PluginRegistry, kind: str, plugin: str, distribution: str, version: str):
        self._owner, self._kind = owner, kind
        self._plugin, self._distribution, self._version = plugin, distribution, version

    def add(self, name: str, factory: Callable[..., Any], *, params: type[Params] = Params, description: str = "") -> None:
        if ":" in name:  # the colon separates a qualified name's distribution from the component's name
            raise ValueError(f"{self._kind} name '{name}' contains ':', which benchsuite reserves for 'distribution:name'.")
        if not (isinstance(params, type) and issubclass(params, Params)):
            raise TypeError(f"params for {self._kind} '{name}' must subclass benchsuite.api.Params, got {params!r}.")
        if not callable(factory):
            raise TypeError(f"factory for {self._kind} '{name}' is not callable: {factory!r}.")
        self._owner._add(
            Component(self._kind, name, factory, params, description, self._plugin, self._distribution, self._version)
        )


class PluginRegistry:
    """Every component of every kind, plus the plugins that failed to load.

    A registry travels to worker processes as the names of the entry points it loaded, which
    the worker loads again (once per process): factories and pluggy's manager do not pickle,
    and plugins are code, not data.
    """

    def __init__(self) -> None:
        self.broken: list[BrokenPlugin] = []
        self.entry_points: list[str] = []
        # Every registration, so that a name two distributions share keeps both components.
        self._registered: dict[tuple[str, str], list[Component]] = {}
        self._manager = pluggy.PluginManager(PROJECT)
        self._manager.add_hookspecs(hookspecs)

    @property
    def components(self) -> dict[str, dict[str, Component]]:
        """Per kind, each usable component under the name a suite can use for it.

        That is its own name, or ``distribution:name`` where other distributions register the
        same name, except that benchsuite's own component keeps the bare name. A distribution
        that registers a name twice makes its own registrations unusable.
        """
        table: dict[str, dict[str, Component]] = {kind.name: {} for kind in KINDS}
        for (kind, name), found in self._registered.items():
            per_distribution = Counter(_canonical(c.distribution) for c in found)
            for component in found:
                if per_distribution[_canonical(component.distribution)] == 1:
                    bare = len(per_distribution) == 1 or _built_in(component)
                    table[kind][name if bare else component.qualified_name] = component
        return table

    def shadowed(self, component: Component) -> bool:
        """Whether ``component``'s bare name is benchsuite's own, so that a suite reaches it only as ``distribution:name``."""
        return not _built_in(component) and any(_built_in(c) for c in self._registered[(component.kind, component.name)])

    def _add(self, component: Component) -> None:
        found = self._registered.setdefault((component.kind, component.name), [])
        found.append(component)
        twice = [c for c in found if _canonical(c.distribution) == _canonical(component.distribution)]
        if len(twice) > 1:
            warnings.warn(
                f"{BY_NAME[component.kind].label} '{component.name}' is registered more than once by {component.distribution}: "
                + ", ".join(c.origin for c in twice)
                + "; the name is unusable until that distribution registers it once.",
                PluginWarning,
                stacklevel=2,
            )

    def register_module(self, module: object, plugin: str, distribution: str, version: str) -> None:
        """Register one plugin module and run its registration hooks.

        A hook implementation whose name matches no hook of :mod:`benchsuite.engine.hookspecs` (a typo
        such as ``benchsuite_register_dataset``) is an error naming the plugin, not a silent no-op.
        """
        # Known to pluggy by distribution too: two distributions may name their entry points alike.
        qualified = f"{distribution}:{plugin}"
        self._manager.register(module, name=qualified)
        try:
            self._manager.check_pending()
        except pluggy.PluginValidationError as exc:
            self._manager.unregister(name=qualified)
            hooks = [kind.hook for kind in KINDS]
            unknown = [name for name in dir(module) if name.startswith("benchsuite_") and name not in hooks]
            hint = " ".join(f"'{name}' matches no hook.{did_you_mean(name, hooks)}" for name in unknown) or str(exc)
            raise PluginLoadError(f"plugin '{plugin}' implements a hook that benchsuite does not have: {hint}") from None
        for kind in KINDS:
            for impl in getattr(self._manager.hook, kind.hook).get_hookimpls():
                if impl.plugin_name != qualified:
                    continue
                registry = _KindRegistry(self, kind.name, plugin, distribution, version)
                impl.function(**dict.fromkeys(impl.argnames, registry))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reloaded, (tuple(self.entry_points),))

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` (or ``distribution:name``) of ``kind``, or an error that says what to write instead."""
        distribution, colon, bare = name.rpartition(":")
        found = self._registered.get((kind, bare), [])
        if colon:
            found = [c for c in found if _canonical(c.distribution) == _canonical(distribution)]
        elif any(_built_in(c) for c in found):  # a bare name benchsuite registers is benchsuite's, whatever else is installed
            found = [c for c in found if _built_in(c)]
        if len(found) == 1:
            return found[0]
        what = BY_NAME[kind].label
        providers = list({_canonical(c.distribution): c for c in found}.values())
        if len(providers) > 1:
            raise SuiteError(
                f"{what} '{name}' is provided by more than one distribution, "
                + _either([f"{c.distribution} {c.version}" for c in providers], "and")
                + "; name one in the suite as "
                + _either([repr(c.qualified_name) for c in providers], "or")
                + "."
            )
        if found:
            raise PluginLoadError(
                f"{what} '{name}' is registered more than once by {found[0].distribution} ("
                + ", ".join(c.origin for c in found)
                + "); the name is unusable until that distribution registers it once."
            )
        usable = self.components[kind]
        # Qualified names are offered only for a name that has a distribution prefix.
        spellings = [c.qualified_name for c in usable.values()] if ":" in name else list(usable)
        message = f"unknown {what} '{name}'.{did_you_mean(name, spellings)}"
        message += f" Installed {kind.replace('_', ' ')}: {', '.join(sorted(usable)) or 'none'}."
        raise SuiteError(message + self.broken_note())

    def broken_note(self) -> str:
        """What an unknown name's error adds when plugins failed to load: which, and why ('' when none did)."""
        if not self.broken:
            return ""
        return " It may belong to a plugin that failed to load: " + " ".join(b.describe() for b in self.broken)

    def parse_params(self, kind: str, name: str, raw: Mapping[str, Any]) -> Params:
        """Validate ``raw`` against the component's parameter model, and check that model's contract.

        The contract: params survive a JSON round trip (cells carry them as JSON to wherever they
        run) and extend the kind's base class in :mod:`benchsuite.api` (``TrainingParams`` for
        SSP methods, whose optimiser settings the core's training loop reads).
        """
        component = self.get(kind, name)
        try:
            params = component.params.model_validate(dict(raw))
        except ValidationError as exc:
            raise ParamsError(component, exc) from None
        base = getattr(api, BY_NAME[kind].params_base)
        if not isinstance(params, base):
            raise PluginError(f"{component.origin} is broken: the params of '{name}' must extend benchsuite.api.{base.__name__}.")
        if component.params.model_validate(params.model_dump(mode="json")) != params:
            raise PluginError(
                f"{component.origin} is broken: the params of '{name}' do not survive a JSON round trip, "
                "which cells need to travel to workers."
            )
        return params


class ParamsError(SuiteError):
    """A component's ``params`` do not fit its model; carries the pydantic errors for locating."""

    def __init__(self, component: Component, error: ValidationError):
        self.component, self.error = component, error
        fields = component.params.model_fields
        parts = []
        for loc, message, kind in validation_problems(error.errors()):
            key = ".".join(str(p) for p in loc)
            hint = did_you_mean(key, fields) if kind == "extra_forbidden" else ""
            parts.append((f"'{key}': " if key else "") + sentence(message) + hint)
        allowed = ", ".join(fields) or "none"
        label = BY_NAME[component.kind].label
        super().__init__(f"bad params for {label} '{component.name}': " + " ".join(parts) + f" Allowed params: {allowed}.")


def listing(registry: PluginRegistry, kinds: Iterable[str], *, params: bool = False) -> list[str]:
    """The lines ``benchsuite plugins`` prints: per kind, each component's name, source and description, and its params.

    The columns line up down the whole listing, measured on the names as listed (qualified ones included).
    """
    tables = {kind: sorted(registry.components[kind].items()) for kind in kinds}
    rows = [(name, f"{c.distribution} {c.version}") for table in tables.values() for name, c in table]
    width, source = (max((len(row[i]) for row in rows), default=0) for i in (0, 1))
    lines = []
    for kind, table in tables.items():
        lines.append(f"{kind}:")
        for name, c in table:
            shadowed = f"(shadowed: '{c.name}' names benchsuite's own) " if registry.shadowed(c) else ""
            lines.append(f"  {name:<{width}}  {f'{c.distribution} {c.version}':<{source}}  {shadowed}{c.description}")
            if params:
                for field, info in c.params.model_fields.items():
                    default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
                    lines.append(f"      {field} = {default}  {info.description or ''}")
    return lines


def _either(items: list[str], conjunction: str) -> str:
    """Two or more items as prose: ``a and b``, ``a, b and c``."""
    return ", ".join(items[:-1]) + f" {conjunction} {items[-1]}"


def _distribution_of(entry_point: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown distribution", "?"
    return dist.metadata["Name"], dist.version


def load_plugins(entry_points: Iterable[md.EntryPoint] | None = None, *, strict: bool = False) -> PluginRegistry:
    """Import every ``benchsuite`` entry point and collect what it registers.

    With ``strict``, the first broken plugin raises :class:`PluginLoadError` instead of warning.
    """
    registry = PluginRegistry()
    points = md.entry_points(group=PROJECT) if entry_points is None else entry_points
    for ep in sorted(points, key=lambda e: e.name):
        distribution, version = _distribution_of(ep)
        registry.entry_points.append(f"{distribution}:{ep.name}")
        try:
            registry.register_module(ep.load(), ep.name, distribution, version)
        except Exception as exc:
            broken = BrokenPlugin(ep.name, distribution, version, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            if strict:
                raise PluginLoadError(broken.describe() + " --strict turns this warning into an error.") from exc
            registry.broken.append(broken)
            warnings.warn(broken.describe(), PluginWarning, stacklevel=2)
    return registry


@functools.cache
def default_registry() -> PluginRegistry:
    """The registry of the installed plugins, loaded once per process."""
    return load_plugins()


def installed_plugins(*, strict: bool = False) -> PluginRegistry:
    """The installed plugins; with ``strict`` freshly loaded, and a plugin that fails to load is an error."""
    return load_plugins(strict=True) if strict else default_registry()


@functools.cache
def _reloaded(names: tuple[str, ...]) -> PluginRegistry:
    """The registry of the installed entry points ``names`` (``distribution:entry point``), loaded once per (worker) process."""
    installed = {f"{_distribution_of(ep)[0]}:{ep.name}": ep for ep in md.entry_points(group=PROJECT)}
    missing = [name for name in names if name not in installed]
    if missing:
        raise PluginLoadError(
            f"the plugins {missing} are not installed in this worker's environment; install them where cells run."
        )
    return load_plugins([installed[name] for name in names])
