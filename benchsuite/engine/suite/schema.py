"""The suite file's schema: pydantic models of every key, one per component kind from ``KINDS``.

They check the shape of the file; :mod:`.resolution` then checks plugin names and params.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator, model_validator

from benchsuite.engine.kinds import KINDS, Kind


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
