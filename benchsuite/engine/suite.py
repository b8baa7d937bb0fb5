"""The suite file: a pydantic schema, YAML loading with line numbers, and plugin resolution.

A suite is data, never code. Loading happens in two passes: the schema checks the shape of the
file, then :func:`resolve` checks every plugin name and its ``params`` against the plugin's own
model. Both passes report every problem at once, each with its key and line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator

from benchsuite.api import Params
from benchsuite.engine.kinds import KINDS, Kind
from benchsuite.engine.registry import ParamsError, PluginRegistry
from benchsuite.results.cube import AXES
from benchsuite.results.errors import BenchsuiteError, SuiteError, did_you_mean, validation_problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentSpec(_Strict):
    """A plugin and its parameters. A bare string is shorthand for ``{plugin: NAME}``."""

    plugin: str = Field(description="Registered name of the plugin component.")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters, checked against the plugin's model.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"plugin": value} if isinstance(value, str) else value


class NamedComponentSpec(ComponentSpec):
    """A component in a list (a metric): ``name`` labels it in the results cube and defaults to the plugin name."""

    name: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Variable name in the cube.")

    @property
    def label(self) -> str:
        return self.name or self.plugin


class ThetaRange(_Strict):
    """Evenly spaced angles from ``start`` up to, not including, ``stop`` (like ``range``)."""

    start: float = Field(0.0, ge=0, le=360, description="First angle in degrees.")
    stop: float = Field(ge=0, le=360, description="End of the range in degrees (excluded).")
    step: float = Field(gt=0, le=360, description="Spacing in degrees.")

    @model_validator(mode="after")
    def _nonempty(self) -> ThetaRange:
        if self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be greater than start ({self.start})")
        return self

    def values(self) -> list[float]:
        count = int(np.ceil((self.stop - self.start) / self.step - 1e-9))
        # Rounding keeps 0.1-degree steps from turning into 29.999999999999996.
        return [round(self.start + i * self.step, 9) for i in range(count)]


class DataSettings(_Strict):
    """How every dataset of the suite is sized and split."""

    size: int = Field(32, ge=8, le=1024, description="Images are resized to size x size pixels.")
    eval_images: int = Field(32, ge=1, le=100_000, description="Held-out evaluation images per dataset; the rest train.")
    split_seed: int = Field(0, ge=0, description="Seed of the fixed train/evaluation split (the same for every cell).")
    examples: int = Field(4, ge=0, le=64, description="Evaluation images whose saliency maps are kept for the report.")
    orientation_bins: int = Field(
        36, ge=4, le=3600, description="Bins over 0-360 degrees of each dataset's gradient-orientation histogram."
    )


class AnalysisSettings(_Strict):
    """How the analysis reads θ: as a categorical factor on a coarse grid, as a periodic curve on a dense one."""

    dense_above: int = Field(
        36,
        ge=2,
        description="Above this many angles θ is modelled as a periodic curve (harmonic regression) rather than a "
        "categorical factor, and Tukey HSD compares binned angles.",
    )
    harmonics: int | Literal["auto"] = Field(
        "auto",
        description="Harmonics K of the periodic curve (sin kθ, cos kθ for k = 1..K); 'auto' chooses K by AIC.",
    )

    @field_validator("harmonics")
    @classmethod
    def _harmonics(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 60:
            raise ValueError(f"harmonics must lie in 1..60 or be 'auto', got {value}")
        return value


class RecordSettings(_Strict):
    """What is kept in full for a sample of each θ-curve's cells. It changes no result, so it is not in the cell keys."""

    detail_angles: int = Field(
        12,
        ge=1,
        le=3600,
        description="Angles per curve, evenly spread, whose cells keep their saliency examples in the cube and their "
        "step-by-step training curves and saliency overlays in TensorBoard; every cell keeps its metrics.",
    )


class _SuiteSettings(_Strict):
    """The suite's own keys; :data:`Suite` adds one key per component kind (``benchsuite.engine.kinds``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Names the run directory OUT/NAME/.")
    description: str = Field("", description="Free text, kept with the results.")
    data: DataSettings = Field(default_factory=DataSettings, description="Image size and split.")
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings, description="How the analysis models θ.")
    record: RecordSettings = Field(default_factory=RecordSettings, description="What is kept in full for a sample of cells.")
    theta: list[float] | ThetaRange = Field(description="Grid axis: rotation angles in degrees, a list or {start, stop, step}.")
    seeds: list[int] = Field(min_length=1, description="Grid axis: replicate seeds (weight init, data order, saliency noise).")
    outcome: str | None = Field(
        None,
        description="The metric, by its name under metrics, that answers the study's question; the report names it "
        "the outcome and reads the others as diagnostics. Where datasets or methods are compared, heldout_infonce "
        "scores every cell by one protocol, which final_loss (each method's own training loss) does not.",
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Grid axes over any component parameter: PATH -> values, PATH being KEY.params.FIELD for the "
        "augmentation or saliency method, or KEY.LABEL.params.FIELD for a labelled one (methods.moco.params.epochs, "
        "metrics.dice.params.percentile). Each becomes a dimension of the cube and a factor of the analysis; its "
        "values replace any value the component's params give.",
    )

    @field_validator("theta")
    @classmethod
    def _angles(cls, value: list[float] | ThetaRange) -> list[float] | ThetaRange:
        if isinstance(value, list):
            if not value:
                raise ValueError("at least one angle is needed")
            bad = [t for t in value if not 0 <= t <= 360]
            if bad:
                raise ValueError(f"angles must lie in [0, 360] degrees, got {bad}")
            if len(set(value)) != len(value):
                raise ValueError("angles must be unique")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("seeds must be unique")
        if any(s < 0 for s in value):
            raise ValueError("seeds must be non-negative")
        return value

    @field_validator("sweep")
    @classmethod
    def _sweep_values(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in value.items():
            if not values:
                raise ValueError(f"'{path}' needs at least one value")
            if any(isinstance(v, (list, dict, bool)) or v is None for v in values):
                raise ValueError(f"the values of '{path}' must be numbers or strings, since they label a dimension of the cube")
            if len({json.dumps(v) for v in values}) != len(values):
                raise ValueError(f"the values of '{path}' must be unique")
        return value

    @field_validator(*(k.suite_key for k in KINDS if k.shape == "list"), check_fields=False)
    @classmethod
    def _distinct_names(cls, value: list[NamedComponentSpec], info: ValidationInfo) -> list[NamedComponentSpec]:
        labels = [m.label for m in value]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            what = next(k.label for k in KINDS if k.suite_key == info.field_name)
            raise ValueError(f"{what} names must be unique, {twice} appear twice; give one a different 'name'")
        return value

    @property
    def thetas(self) -> list[float]:
        return self.theta.values() if isinstance(self.theta, ThetaRange) else [float(t) for t in self.theta]


def _kind_field(kind: Kind) -> tuple[Any, Any]:
    if kind.shape == "axis":
        return dict[str, ComponentSpec], Field(min_length=1, description=kind.description)
    if kind.shape == "list":
        return list[NamedComponentSpec], Field(min_length=1, description=kind.description)
    return ComponentSpec, Field(ComponentSpec(plugin=kind.default), description=kind.description)


Suite = create_model(
    "Suite",
    __base__=_SuiteSettings,
    __doc__="A suite file. Grid axes are ``datasets`` x ``theta`` x ``seeds`` x ``methods`` x ``encoders``, then any ``sweep``.",
    **{kind.suite_key: _kind_field(kind) for kind in KINDS},
)


@dataclass(frozen=True)
class ResolvedComponent:
    """A component whose plugin exists and whose params passed its model."""

    plugin: str
    params: Params
    distribution: str
    version: str

    def config(self) -> dict[str, Any]:
        """JSON-ready form: what a cell carries to wherever it runs, and what its hash covers."""
        return {
            "plugin": self.plugin,
            "params": self.params.model_dump(mode="json"),
            "distribution": self.distribution,
            "version": self.version,
        }


@dataclass(frozen=True)
class Sweep:
    """One swept parameter: a grid dimension over the values of one parameter of one component."""

    dim: str
    """The cube dimension: the parameter's name, or ``LABEL_FIELD`` where two sweeps share it."""
    path: str
    """As the suite wrote it: ``augmentation.params.strength``."""
    kind: str
    label: str
    """The component's label within its kind (the suite key for a kind of shape ``one``)."""
    field: str
    values: tuple[Any, ...]
    """Each value as the parameter model validated it, in JSON form."""


@dataclass(frozen=True)
class ResolvedSuite:
    """A suite whose every plugin reference has been checked, plus the text it came from."""

    suite: Suite
    text: str
    components: dict[str, dict[str, ResolvedComponent]]
    """Per kind name, label -> component. The only label of a kind of shape ``one`` is its suite key."""
    sweeps: tuple[Sweep, ...] = ()

    @property
    def name(self) -> str:
        return self.suite.name

    def single(self, kind: str) -> ResolvedComponent:
        """The component of a kind of shape ``one`` (the augmentation, the executor, ...)."""
        (component,) = self.components[kind].values()
        return component

    def levels(self) -> dict[str, list[Any]]:
        """The values of every grid axis, in the cube's axis order."""
        levels: dict[str, list[Any]] = {"theta": self.suite.thetas, "seed": self.suite.seeds}
        levels |= {k.cell_key: list(self.components[k.name]) for k in KINDS if k.shape == "axis"}
        return {axis: levels[axis] for axis in AXES} | {sweep.dim: list(sweep.values) for sweep in self.sweeps}

    def describe(self) -> str:
        """The grid's size, axis by axis: ``2 datasets x 12 angles x 2 seeds x 1 method x 1 encoder = 48 cells``.

        A swept parameter is named by its path, as the report's grid line names it.
        """
        names = {"theta": ("angle", "angles"), "seed": ("seed", "seeds")}
        names |= {k.cell_key: (k.cell_key, k.suite_key) for k in KINDS if k.shape == "axis"}
        names |= {sweep.dim: (f"value of {sweep.path}", f"values of {sweep.path}") for sweep in self.sweeps}
        counts = {axis: len(values) for axis, values in self.levels().items()}
        sizes = " x ".join(f"{n} {names[axis][n != 1]}" for axis, n in counts.items())
        return f"{sizes} = {int(np.prod(list(counts.values())))} cells"


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


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


def _where(path: str, root: yaml.Node | None, loc: Sequence[Any]) -> str:
    line = _line_of(root, loc)
    key = ".".join(str(p) for p in loc)
    return f"{path}:{line}: '{key}'" if line else f"{path}: '{key}'"


def _schema_problems(error: ValidationError, path: str, root: yaml.Node | None) -> list[str]:
    problems = []
    for loc, message, kind in validation_problems(error.errors()):
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            hint = did_you_mean(str(loc[-1]), model.model_fields) if model else ""
            problems.append(f"{_where(path, root, loc)} is not a known key.{hint}")
        elif kind == "missing":
            problems.append(f"{_where(path, root, loc)} is required but missing.")
        else:
            problems.append(f"{_where(path, root, loc)}: {message}.")
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
        raise SuiteError(_problems_text(path, problems) + " See docs/suites.md for every key.") from None


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
            problems.append(f"{_where(path, root, (*loc, 'params'))}: {exc}")
            return None
        except BenchsuiteError as exc:  # an unknown or broken plugin
            problems.append(f"{_where(path, root, (*loc, 'plugin'))}: {exc}")
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
        raise SuiteError(_problems_text(path, found) + (note if named else ""))
    sweeps = _sweeps(suite, registry, components, problems, lambda loc: _where(path, root, loc))
    labels = [spec.label for spec in suite.metrics]
    if suite.outcome is not None and suite.outcome not in labels:
        problems.append(
            f"{_where(path, root, ('outcome',))}: '{suite.outcome}' is not one of the suite's metrics."
            f"{did_you_mean(suite.outcome, labels)} Its metrics: {', '.join(labels)}."
        )
    if problems:
        raise SuiteError(_problems_text(path, problems))
    return ResolvedSuite(suite=suite, text=text, components=components, sweeps=sweeps)


def _problems_text(path: str, problems: Sequence[str]) -> str:
    return f"{path} has {len(problems)} problem{'s' * (len(problems) != 1)}: " + " ".join(problems)


# Names a swept parameter's dimension must not take: the grid axes and the cube's other dimensions.
_TAKEN = {*AXES, "image", "epoch", "step", "example", "channel", "y", "x", "orientation"}


def _sweeps(
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


def canonical_json(value: Any) -> str:
    """Deterministic JSON for hashing and for comparing resolved configurations."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
