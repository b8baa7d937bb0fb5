"""Linear mixed model of the per-image values of each image-scope metric.

The ANOVA of :mod:`benchsuite.analysis.anova` averages the evaluation images of a cell away.
The images are repeated measures, though: the same held-out images are scored under every θ,
seed, method, encoder and swept parameter. A mixed model keeps every per-image value and lets
each image carry its own random offset, so a dataset with a few hard images does not blur the
θ effect.

The model, fitted by REML with statsmodels' ``MixedLM``, is::

    value ~ C(theta, Sum) [* C(<swept>, Sum)] * C(dataset, Sum) [* C(method, Sum) * C(encoder, Sum)]
            + image (random, nested in dataset) + run (random, nested in dataset)

with the factors of :func:`benchsuite.results.cube.factors` that vary. A *run* is one training of one
grid cell (dataset, θ, seed, method, encoder and any swept parameter). Its random
effect is what keeps the model honest: every image of a cell is scored with the same trained
network, so the images of a cell share that network's luck. Without the run effect, θ would be
tested against the image-level noise with hundreds of degrees of freedom, when θ is only
replicated by seeds; that is the pseudo-replication :mod:`anova` avoids by averaging. Image
and run are crossed within a dataset, which MixedLM expresses as variance components inside
one group per dataset (statsmodels' recipe for crossed random effects). The dataset term is
tested against the image variance, since images are nested in datasets.

Each fixed-effect term is tested jointly by a Wald χ² test over its sum-contrast coefficients
(``MixedLMResults.wald_test_terms``), the study's interactions (θ × dataset, each swept
parameter × dataset) among them. On a balanced design χ²/df of θ and θ × dataset equals the F
of the ANOVA on cell means. The χ² reference distribution treats the estimated variances
as known, though, so with few seeds its p-value is smaller than the ANOVA's F-test gives for
the same statistic (statsmodels offers no Kenward-Roger or Satterthwaite degrees of freedom).
What the mixed model adds is the split of the variance into image, run and residual parts,
and a per-image fit that stays valid when images are missing from some cells.

On a dense θ grid (:mod:`benchsuite.analysis.harmonic`) θ enters as its K harmonics instead,
one term of 2K columns (``harmonics``, ``harmonics:dataset``, ...), with the K the harmonic
regression of the cell means chose. The model holds one random effect per run and per image in
dense matrices, so its size is estimated before fitting (:mod:`benchsuite.analysis.guard`):
a cube too large for it is skipped with the size in the reason.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
import xarray as xr
from scipy import stats
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from benchsuite.analysis.anova import RESIDUAL, cell_means, factorial_formula, placeholders, readable_term, varying_factors
from benchsuite.analysis.guard import AnalysisTooLarge, check_memory, design_bytes
from benchsuite.analysis.harmonic import harmonic_anova, harmonic_basis
from benchsuite.analysis.settings import HARMONIC_TERM
from benchsuite.results.cube import DATASET, IMAGE, METRIC, ROLE, THETA, grid_axes
from benchsuite.results.cube import factors as cube_factors
from benchsuite.results.errors import BenchsuiteError

MIXED_COLUMNS = [
    "metric", "term", "chi2", "df", "p",
    "image_var", "run_var", "residual_var",
    "n_obs", "n_images", "n_runs", "converged", "note",
]  # fmt: skip

# statsmodels flags a variance component below 0.01 in absolute terms as "on the boundary". The
# metrics here live in [0, 1] and their variances are routinely below that, so the flag says
# nothing about the fit; the estimated variances are reported instead.
_BOUNDARY_WARNING = "The MLE may be on the boundary of the parameter space."


MAX_RANDOM_COLUMNS = 300
"""The most random effects (images and runs) per dataset the model is fitted with. A fit's time
grows with their cube: on the 2-core development machine one metric took 20 s at 152 of them
(72 angles × 2 seeds, 8 images), so about 2.5 minutes at 300; every shipped suite stays below
(``fingerprint``, 72 angles × 2 seeds and 64 images, has 208)."""


class MixedModelError(BenchsuiteError, ValueError):
    """The metric or the design cannot support the mixed model; the message says why."""


@dataclass(frozen=True)
class MixedFit:
    """The fitted mixed model of one metric, reduced to what the report needs.

    ``terms`` is indexed by readable term names (``theta``, ``dataset``, ``theta:dataset``, ...)
    with columns ``chi2, df, p``. Variances are on the metric's squared scale.
    """

    terms: pd.DataFrame
    image_var: float
    run_var: float
    residual_var: float
    n_obs: int
    n_images: int
    n_runs: int
    converged: bool
    note: str


def image_values(cube: xr.Dataset, metric: str) -> pd.DataFrame:
    """One row per scored image: the grid dimensions (with any swept parameter), ``image`` and ``value``; NaN images dropped."""
    variable = _image_variable(cube, metric)
    frame = variable.reset_coords(drop=True).transpose(*grid_axes(cube), IMAGE).to_dataframe(name="value")
    frame = frame.reset_index()
    return frame[frame["value"].notna()].reset_index(drop=True)


def fit_mixed(frame: pd.DataFrame, factors: Sequence[str], harmonics: int | None = None) -> MixedFit:
    """Fit the mixed model to per-image values (the columns of :func:`image_values`).

    ``factors`` are the fixed effects, crossed in full with sum contrasts; with ``harmonics`` K,
    θ enters as sin kθ, cos kθ (k = 1..K), one term named ``harmonics``. Every column but
    ``image`` and ``value`` is a grid dimension, and a run is one combination of their levels. Raises
    :class:`MixedModelError` when a factor has a single level or a combination of factor
    levels has no observation. A fit that does not converge is returned with
    ``converged=False`` and the optimiser's complaint in ``note``.
    """
    factors = list(factors)
    _check_design(frame, factors)
    grid = [column for column in frame.columns if column not in (IMAGE, "value")]
    names = placeholders(factors)
    formula, labels = factorial_formula(names), dict(names)
    if harmonics is not None and THETA in factors:
        theta = next(p for p, f in names.items() if f == THETA)
        # One patsy term of 2K columns, so that Wald tests it and its interactions as wholes.
        formula = formula.replace(f"C({theta}, Sum)", f"{HARMONIC_TERM}({theta})")
        labels[f"{HARMONIC_TERM}({theta})"] = HARMONIC_TERM
    data = frame.assign(**{p: frame[f] for p, f in names.items()})
    # Image numbers restart in every dataset and runs are nested in datasets, so within a
    # dataset group these codes identify the random effects.
    data["run"] = data.groupby([d for d in grid if d != DATASET], sort=False).ngroup()
    model = smf.mixedlm(
        formula,
        data,
        groups=DATASET,
        re_formula="0",
        vc_formula={"image": f"0 + C({IMAGE})", "run": "0 + C(run)"},
        eval_env={} if harmonics is None else {HARMONIC_TERM: functools.partial(harmonic_basis, k=harmonics)},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=re.escape(_BOUNDARY_WARNING))
        result = model.fit(reml=True)
    notes = dict.fromkeys(str(w.message) for w in caught)

    wald = result.wald_test_terms(scalar=True).summary_frame().drop(index="Intercept")
    terms = pd.DataFrame(
        {
            "chi2": wald["chi2"].astype(float).to_numpy(),
            "df": wald["df constraint"].astype(int).to_numpy(),
            "p": wald["P>chi2"].astype(float).to_numpy(),
        },
        index=pd.Index([readable_term(term, labels) for term in wald.index], name="term"),
    )
    variances = dict(zip(model.exog_vc.names, np.atleast_1d(result.vcomp), strict=True))
    return MixedFit(
        terms=terms,
        image_var=float(variances["image"]),
        run_var=float(variances["run"]),
        residual_var=float(result.scale),
        n_obs=len(data),
        n_images=int(data.groupby([DATASET, IMAGE]).ngroups),
        n_runs=int(data.groupby(grid).ngroups),
        converged=bool(result.converged),
        note=" ".join(notes),
    )


def mixed_table(
    cube: xr.Dataset, metrics: Sequence[str] | None = None, harmonics: Mapping[str, int] | None = None
) -> pd.DataFrame:
    """The mixed model of every per-image metric in ``cube``, in long form.

    ``metrics`` defaults to every metric with an ``image`` dimension; cell-scope metrics such as
    ``final_loss`` have one value per run and nothing for an image effect to explain. The fixed
    factors are the cube's (:func:`benchsuite.results.cube.factors`: θ, any swept parameter, the dataset,
    the method, the encoder) with more than one level, so every study interaction the cube
    varies (``theta:dataset``, ``<swept>:dataset``) is a term. ``harmonics`` maps each metric to
    the K of its θ curve (:func:`benchsuite.analysis.harmonic.harmonic_table`'s choice) when θ is
    dense; a metric without one is skipped with a warning.

    Columns: ``metric, term, chi2, df, p`` (the Wald test of the term), then per metric the
    variances ``image_var, run_var, residual_var``, the counts ``n_obs, n_images, n_runs``,
    ``converged`` and ``note`` (optimiser warnings, empty when there were none). A metric that
    cannot be fitted is skipped with a warning naming it and the reason; a name that is not a
    per-image metric is a mistake and raises :class:`MixedModelError`. A metric whose model would
    not fit in memory is refused before its fit (:class:`~benchsuite.analysis.guard.AnalysisTooLarge`):
    with a warning when another metric could be fitted, else by raising that error.
    """
    names = _image_metrics(cube) if metrics is None else list(metrics)
    for name in names:
        _image_variable(cube, name)
    blocks, refused = [], []
    for name in names:
        try:
            if harmonics is not None and name not in harmonics:
                raise MixedModelError("the harmonic regression of its cell means did not run, so its θ curve has no K.")
            fit = _fit_metric(cube, name, None if harmonics is None else harmonics[name])
        except AnalysisTooLarge as error:
            refused.append((name, error))
            continue
        # AnovaError and statsmodels' ValueError for degenerate fits are both ValueErrors.
        except (MixedModelError, np.linalg.LinAlgError, ValueError) as error:
            warnings.warn(f"mixed model of metric {name!r} skipped: {error}", stacklevel=2)
            continue
        block = fit.terms.reset_index()
        block.insert(0, "metric", name)
        for field in fields(fit):
            if field.name != "terms":
                block[field.name] = getattr(fit, field.name)
        blocks.append(block)
    if refused and not blocks:
        raise refused[0][1]
    for name, error in refused:
        warnings.warn(f"mixed model of metric {name!r} skipped: it {error.reason}.", stacklevel=2)
    if not blocks:
        return pd.DataFrame(columns=MIXED_COLUMNS)
    return pd.concat(blocks, ignore_index=True)[MIXED_COLUMNS]


def _fit_metric(cube: xr.Dataset, metric: str, harmonics: int | None) -> MixedFit:
    """The mixed model of one metric: in closed form when θ is a curve and the design balanced, else by statsmodels."""
    if harmonics is not None and (fit := balanced_harmonic_fit(cube, metric, harmonics)) is not None:
        return fit
    _check_size(cube, harmonics)
    frame = image_values(cube, metric)
    if frame.empty:
        raise MixedModelError("every image value is NaN.")
    return fit_mixed(frame, varying_factors(frame, cube_factors(cube)), harmonics=harmonics)


def balanced_harmonic_fit(cube: xr.Dataset, metric: str, harmonics: int) -> MixedFit | None:
    """The REML fit of the mixed model with θ's ``harmonics``, in closed form; None when the design is not balanced.

    Balanced means every run with values has a value for every image, and every dataset has as
    many such runs. Then the model splits into independent parts: within each dataset, the
    run-by-image residuals give the residual variance and the image means the image variance
    (the ANOVA estimators, which are REML's for balanced data), and the run means, the cell means,
    follow the harmonic regression with variance run_var + residual_var / images. So each term's
    Wald χ² is its F from :func:`~benchsuite.analysis.harmonic.harmonic_anova` times its degrees
    of freedom: exactly what statsmodels gives, without the dense matrices of one random effect per
    run (161 GB for a 28,800-cell cube). A variance estimate below 0 is set to 0, as REML bounds it.
    """
    grid = grid_axes(cube)
    n_values = int(np.prod([cube.sizes[d] for d in grid])) * cube.sizes[IMAGE]
    check_memory("mixed model", f"its {n_values:,} per-image values", design_bytes(n_values, 1))
    variable = _image_variable(cube, metric).reset_coords(drop=True)
    values = variable.transpose(DATASET, *(d for d in grid if d != DATASET), IMAGE).values.astype(float)
    n_datasets, n_images = cube.sizes[DATASET], cube.sizes[IMAGE]
    values = values.reshape(n_datasets, -1, n_images)
    scored = ~np.isnan(values)
    ran = scored.any(axis=2)
    runs = ran.sum(axis=1)
    if n_images < 2 or not (scored == ran[..., None]).all() or len(set(runs)) != 1 or runs[0] < 2:
        return None
    y = values[ran].reshape(n_datasets, int(runs[0]), n_images)  # each dataset's runs, in grid order
    run_means, image_means, grand = y.mean(axis=2), y.mean(axis=1), y.mean(axis=(1, 2))
    interaction = y - run_means[..., None] - image_means[:, None, :] + grand[:, None, None]
    residual_var = float(np.sum(interaction**2)) / (n_datasets * (runs[0] - 1) * (n_images - 1))
    image_ms = runs[0] * float(np.sum((image_means - grand[:, None]) ** 2)) / (n_datasets * (n_images - 1))

    frame = cell_means(cube, metric)
    factors = [f for f in varying_factors(frame, cube_factors(cube)) if f != THETA]
    terms = harmonic_anova(frame, factors, harmonics).terms
    residual = terms.loc[RESIDUAL]
    terms = terms.drop(index=RESIDUAL)
    chi2 = terms["F"] * terms["df"]
    return MixedFit(
        terms=pd.DataFrame({"chi2": chi2, "df": terms["df"].astype(int), "p": stats.chi2.sf(chi2, terms["df"])}),
        image_var=max(0.0, (image_ms - residual_var) / runs[0]),
        run_var=max(0.0, residual["sum_sq"] / residual["df"] - residual_var / n_images),
        residual_var=residual_var,
        n_obs=int(y.size),
        n_images=n_datasets * n_images,
        n_runs=n_datasets * int(runs[0]),
        converged=True,
        note="closed form (balanced design)",
    )


def _check_size(cube: xr.Dataset, harmonics: int | None) -> None:
    """Refuse a cube whose per-image model would not fit in memory or in reasonable time, before its frame is made.

    Per dataset, statsmodels holds dense random-effect columns, one per image and one per run,
    for every row of that dataset; the fixed effects are one column per combination of levels
    (θ counting 2K + 1 with harmonics). Each of the optimiser's hundreds of steps solves a
    system of the random-effect columns per dataset, so past :data:`MAX_RANDOM_COLUMNS` the fit
    would take hours even where it fits in memory.
    """
    grid = grid_axes(cube)
    rows = int(np.prod([cube.sizes[d] for d in grid])) * cube.sizes.get(IMAGE, 1)
    levels = {f: cube.sizes[f] for f in cube_factors(cube) if cube.sizes[f] > 1}
    if harmonics is not None and THETA in levels:
        levels[THETA] = 2 * harmonics + 1
    fixed = int(np.prod(list(levels.values())))
    runs_per_dataset = int(np.prod([cube.sizes[d] for d in grid if d != DATASET]))
    random = cube.sizes.get(IMAGE, 1) + runs_per_dataset
    check_memory(
        "mixed model", f"its design of {rows:,} per-image rows × {fixed + random:,} columns", design_bytes(rows, fixed + random)
    )
    if random > MAX_RANDOM_COLUMNS:
        raise AnalysisTooLarge(
            "mixed model",
            f"would solve systems of {random:,} random effects per dataset (one per image and per run) at each of "
            f"hundreds of optimiser steps, more than the {MAX_RANDOM_COLUMNS:,} it fits in minutes; the ANOVA "
            "on cell means tests the same terms",
        )


def _image_metrics(cube: xr.Dataset) -> list[str]:
    return [str(name) for name, var in cube.data_vars.items() if var.attrs.get(ROLE) == METRIC and IMAGE in var.dims]


def _image_variable(cube: xr.Dataset, metric: str) -> xr.DataArray:
    """The variable of a per-image metric; asking for anything else is a mistake, not missing data."""
    if metric not in cube.data_vars:
        raise MixedModelError(f"the cube has no variable {metric!r}; its per-image metrics are {_image_metrics(cube)}.")
    variable = cube[metric]
    if variable.attrs.get(ROLE) != METRIC or IMAGE not in variable.dims:
        raise MixedModelError(
            f"{metric!r} is not a per-image metric (role {variable.attrs.get(ROLE)!r}, dims "
            f"{variable.dims}); the mixed model needs per-image values, which "
            f"{_image_metrics(cube)} have."
        )
    return variable


def _check_design(frame: pd.DataFrame, factors: list[str]) -> None:
    single = [f for f in factors if frame[f].nunique() < 2]
    if single:
        raise MixedModelError(f"factor {single[0]!r} has a single level; leave it out of the factors.")
    n_combinations = int(np.prod([frame[f].nunique() for f in factors]))
    observed = frame.groupby(factors).ngroups
    if observed < n_combinations:
        raise MixedModelError(
            f"only {observed} of the {n_combinations} combinations of ({', '.join(factors)}) have "
            "values, so the full-factorial fixed effects are not estimable: run the missing cells."
        )
