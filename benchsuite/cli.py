"""The ``benchsuite`` command line.

Exit codes: 0 success, 1 a run failed, 2 bad input, 3 internal error, 130 interrupted (Ctrl-C),
141 output closed early (``| head``), 143 terminated (SIGTERM, as schedulers send it).

Each command parses its arguments and calls the library; heavy modules (torch, the plugins) are
imported inside the commands that need them, so ``analyze`` and ``report`` never load torch.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import textwrap
import traceback
import warnings
from pathlib import Path

import click

from benchsuite import __version__
from benchsuite.engine.kinds import NAMES as KIND_NAMES
from benchsuite.interrupts import install_interrupt_handlers
from benchsuite.results.errors import BenchsuiteError, PluginWarning, Terminated, sentence

_STRICT = click.option("--strict", is_flag=True, help="Treat a plugin that fails to load as an error instead of a warning.")


def _say(kind: str, message: str) -> None:
    # Paths hold hyphens and can be long: wrap between words only, so a path can be copied whole.
    text = f"{kind}: {sentence(message)}"
    click.echo(textwrap.fill(text, width=100, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False), err=True)


class _OutputClosed(Exception):
    """The reader of our output went away (``benchsuite ... | head``)."""


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        # click turns a broken pipe into a silent exit 1, which reads as a failure; it is
        # taken out of click's hands here so that main() can end the way command-line tools do.
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _OutputClosed from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="benchsuite")
def cli() -> None:
    """Benchmark self-supervised pre-training on medical images: the rotation-angle study.

    A suite YAML names datasets, rotation angles, seeds, SSP methods, encoders, a saliency
    method and metrics. `benchsuite run` pre-trains one encoder per grid cell on pairs
    (x, R_theta x), scores saliency against foreground masks, stores everything in one xarray
    cube, tests the theta x dataset interaction, writes an HTML report and TensorBoard logs.
    Start with:

        benchsuite run suites/rotation.yaml

    Compare two runs with `benchsuite compare RUN_A RUN_B`.

    Docs, in the repository: docs/design.md (how it fits together; read first), docs/suites.md
    (every suite key), docs/datasets.md (data layouts, --data-root), docs/saliency.md
    (attribution methods and metrics), docs/cluster.md (Ray, Slurm, GPUs), docs/plugins.md
    (write a plugin).
    """


_DATA_ROOT = click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="BENCHSUITE_DATA_ROOT",
    show_envvar=True,
    help="Folder that relative dataset paths in the suite are taken from (default: the working directory).",
)


_TYPE = click.option("--type", "typ", type=click.Choice(["2", "3"]), default="2", show_default=True,
                     help="ANOVA sums of squares: Type II, or Type III (sum contrasts are always used).")  # fmt: skip


@cli.command()
@click.argument("suite", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Parent directory; results go to OUT/<suite name>/.")  # fmt: skip
@click.option(
    "--force",
    is_flag=True,
    help="Rerun cells that are already stored (each is replaced atomically when its new result is ready).",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars over cells and epochs.")
@click.option(
    "--executor",
    metavar="YAML",
    help="Run the cells with this executor instead of the suite's: a plugin name or YAML such as "
    "'{plugin: ray, params: {address: auto}}'. The cells, their keys and the run directory stay the same.",
)
@_DATA_ROOT
@_TYPE
@_STRICT
def run(
    suite: Path, out: Path, force: bool, progress: bool, executor: str | None, data_root: Path | None, typ: str, strict: bool
) -> None:
    """Run SUITE, resuming where an earlier run stopped, then analyse it and write the report.

    Every dataset is built and checked first (as `validate --data` does), so bad data stops the
    run before anything trains. Cells already stored under OUT/<suite name>/parts/ are skipped,
    so a killed run continues where it stopped. A suite or plugin version that changed since
    those cells were stored is refused (use a new --out, or --force), as is a second run on a
    directory that is in use. Writes results.nc (the cube), tensorboard/ (one run per theta curve: view with
    `tensorboard --logdir OUT/<suite name>/tensorboard --samples_per_plugin scalars=10000`), the analysis tables (anova.csv,
    mixed.csv, periodicity.csv, tukey.csv, orientation_autocorr.csv, covariate.csv,
    summary.json) and report.html with its figures, then prints the analysis.
    """
    from benchsuite.study import run as run_study

    result = run_study(
        suite, out=out, force=force, progress=progress, data_root=data_root, anova_type=int(typ), strict=strict,
        executor=executor, log=lambda line: click.echo(line, err=True),
    )  # fmt: skip
    click.echo(f"{result.summary}\n\nreport: {result.report}")


@cli.command()
@click.argument("suite", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "check_data",
    is_flag=True,
    help="Also build every dataset (or read it from the cache) without training, check it and print, per dataset, "
    "its images, train/evaluation split, size, pixel range and mask coverage.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar over the datasets.")
@_DATA_ROOT
@_STRICT
def validate(suite: Path, check_data: bool, progress: bool, data_root: Path | None, strict: bool) -> None:
    """Check SUITE without running it: its keys, every plugin name and every plugin's params, and no metric
    that reads masks on a dataset whose plugin says it has none.

    With --data, also what `benchsuite run` checks before the first cell trains: every dataset
    builds, has enough images for data.eval_images, and has foreground in its evaluation masks,
    and the saliency method can explain each model (Grad-CAM's layer exists, say).
    """
    from benchsuite.engine.data import format_datasets, set_data_root
    from benchsuite.engine.grid import expand
    from benchsuite.engine.preflight import check_masks, preflight
    from benchsuite.engine.registry import installed_plugins
    from benchsuite.engine.suite import load_suite

    if data_root is not None:
        set_data_root(data_root)
    registry = installed_plugins(strict=strict)
    resolved = load_suite(suite, registry)
    cells = expand(resolved)
    check_masks(cells, registry)  # what the plugins declare; --data builds the datasets to know
    click.echo(f"{suite}: valid. {resolved.describe()}.")
    if check_data:
        summaries = preflight(cells, registry, progress=progress)
        click.echo(f"\n{format_datasets(summaries)}")


@cli.command()
@click.argument("suite", type=click.Path(path_type=Path))
@click.option(
    "--device",
    help="auto, cpu, cuda or cuda:N to time on, in place of the executor's device setting. Default: the device the "
    "suite's executor would use.",
)
@click.option(
    "--stack", type=click.IntRange(1, 4096), help="Cells per stacked group. Default: what the suite's executor would use."
)
@click.option(
    "--steps",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="Optimisation steps timed (after one warm-up); more than an epoch holds are rounded up to whole epochs.",
)
@_DATA_ROOT
@_STRICT
def estimate(suite: Path, device: str | None, stack: int | None, steps: int, data_root: Path | None, strict: bool) -> None:
    """Project how long SUITE takes and how much memory a group needs, without running it.

    Counts the cells and the groups of cells that train together as one stacked model, times a
    few optimisation steps of one group and one cell's saliency and metrics on the device, and
    prints the projected wall time of the suite, the peak memory of a group and the stack size.
    Use it to size a cluster job, or to pick --stack for the executor.
    """
    from benchsuite.engine.data import set_data_root
    from benchsuite.engine.estimate import estimate as project
    from benchsuite.engine.estimate import sizing_executor
    from benchsuite.engine.registry import installed_plugins
    from benchsuite.engine.suite import load_suite

    if data_root is not None:
        set_data_root(data_root)
    registry = installed_plugins(strict=strict)
    resolved = load_suite(suite, registry)
    executor, on = sizing_executor(resolved, registry, device)
    # The executor's torch threads per worker (the local executor's ``threads``), as its cells run.
    found = project(
        resolved,
        registry,
        device=on,
        stack=stack or getattr(executor, "stack", 1),
        threads=getattr(executor, "threads", None),
        # The local executor's worker slots; a cluster's size is not known here, so one at a time.
        workers=len(getattr(executor, "slots", ())) or 1,
        steps=steps,
    )
    click.echo(found.describe())


@cli.command()
@click.option("--kind", type=click.Choice(KIND_NAMES), help="Only this kind of component.")
@click.option("--params", "show_params", is_flag=True, help="Also list each component's parameters with defaults.")
@_STRICT
def plugins(kind: str | None, show_params: bool, strict: bool) -> None:
    """List installed plugin components with their distribution and version, and plugins that failed to load."""
    from benchsuite.engine.registry import installed_plugins, listing

    registry = installed_plugins(strict=strict)
    for line in listing(registry, [kind] if kind else KIND_NAMES, params=show_params):
        click.echo(line)
    for broken in registry.broken:
        _say("broken", broken.describe())


@cli.command()
@click.option("--clear", is_flag=True, help="Remove every cached dataset (they are built again when next needed).")
@_STRICT
def cache(clear: bool, strict: bool) -> None:
    """List the dataset cache (where it is, each entry and whether it is current), or --clear it.

    A dataset is built once and kept as tensors. An entry is rebuilt when the plugin's source or
    anything its build read (the data files, the folders it listed) has changed. Set
    BENCHSUITE_CACHE to put the cache elsewhere.
    """
    from benchsuite.engine import cache as datasets
    from benchsuite.engine.registry import installed_plugins

    if clear:
        removed, freed = datasets.clear()
        plural = "s" * (removed != 1)
        click.echo(f"removed {removed} cached dataset{plural} ({freed / 2**20:.1f} MiB) from {datasets.cache_dir()}")
        return
    found = datasets.entries()
    click.echo(f"dataset cache: {datasets.cache_dir()} ({len(found)} entr{'ies' if len(found) != 1 else 'y'}, "
               f"{sum(e.size_bytes for e in found) / 2**20:.1f} MiB)")  # fmt: skip
    registry = installed_plugins(strict=strict)
    for entry in found:
        plugin = entry.meta["dataset"]["plugin"]
        try:
            sources = datasets.source_hash(registry.get("datasets", plugin).factory)
        except BenchsuiteError:
            sources = None  # not installed here: only its data can be checked
        why = entry.stale_because(sources)
        params = ", ".join(f"{k}={v}" for k, v in entry.meta["dataset"]["params"].items())
        click.echo(
            f"  {entry.path.stem}  {plugin}({params}) at {entry.meta['size']} px: {entry.meta['images']} images, "
            f"{entry.size_bytes / 2**20:.1f} MiB, built {entry.meta['created']}; "
            + (f"stale ({why}), rebuilt when next used" if why else "current")
        )


def _harmonics(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise click.BadParameter(f"{value!r} is neither 'auto' nor a whole number of at least 1.")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_TYPE
@click.option("--harmonics", type=_harmonics, metavar="K|auto",
              help="Harmonics of theta's curve on a dense grid (more than the suite's analysis.dense_above angles); "
              "overrides the suite's analysis.harmonics. 'auto' chooses K by AIC.")  # fmt: skip
def analyze(run_dir: Path, typ: str, harmonics: int | str | None) -> None:
    """Analyse the cube in RUN_DIR and write the tables beside it. Reads only results.nc.

    Writes anova.csv (ANOVA per metric on per-cell means; on a dense theta grid the harmonic
    regression's F-tests), mixed.csv (per-image mixed model), periodicity.csv (Fourier power of
    metric(theta) per dataset), tukey.csv (post hoc theta comparisons), orientation_autocorr.csv
    and covariate.csv (the gradient-orientation shortcut test), curve_test.csv (do the datasets'
    whole curves differ), signature_similarity.csv and signature_prediction.csv (the curve
    signatures) and summary.json, and prints the headline numbers. A results.nc copied from
    another machine gives the same tables.
    """
    from benchsuite.analysis.terminal import analyze_run

    click.echo(analyze_run(run_dir, typ=int(typ), harmonics=harmonics))


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_TYPE
@click.option(
    "--compare",
    "other",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Another run directory of the same study: adds a section comparing this run (B) with it (A), as "
    "`benchsuite compare` does.",
)
def report(run_dir: Path, typ: str, other: Path | None) -> None:
    """Write RUN_DIR/report.html, a self-contained page (figures embedded, no network needed), from the cube alone.

    Interaction plots (line and polar) per metric, the ANOVA with the theta x dataset reading,
    a saliency gallery, gradient-orientation rose plots, training curves and provenance. The
    figures are also saved as PNG under RUN_DIR/figures/. The tables are those `benchsuite
    analyze` wrote into RUN_DIR; when they are missing or older than the cube, the analysis is
    run and they are written first.
    """
    from benchsuite.report import analysis_tables, write_report
    from benchsuite.results.cube import open_cube

    cube = open_cube(run_dir)
    tables = analysis_tables(run_dir, cube, typ=int(typ))
    notes = {}
    if other is not None:
        from benchsuite.analysis.compare import compare_cubes, display_table, header_lines, legend

        comparison = compare_cubes(open_cube(other), cube, names=(str(other), str(run_dir)))
        tables["compare"] = display_table(comparison)
        notes["compare"] = [*header_lines(comparison), legend(1 - comparison.confidence)]
    click.echo(write_report(cube, tables, run_dir, notes=notes))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to write compare.csv to.",
)
@click.option(
    "--confidence",
    type=click.FloatRange(0.5, 0.999),
    default=0.95,
    show_default=True,
    help="Level of the confidence intervals; a difference is marked + or - at p below 1 - confidence.",
)
def compare(run_dirs: tuple[Path, ...], out: Path, confidence: float) -> None:
    """Compare runs of the same study: every RUN_DIR after the first (B) against the first (A).

    The cubes are aligned on their grid coordinates. Per metric it prints A, B, their ratio and
    B - A with a confidence interval and a t-test across seeds, the replicates: paired on the
    seeds both runs have, else Welch's test. It lists the cells only one run has, and writes
    every row to OUT/compare.csv. Reads only the cubes (results.nc).
    """
    from benchsuite.analysis.compare import compare_runs

    click.echo(compare_runs(list(run_dirs), out=out, confidence=confidence))


def main() -> None:
    """Entry point: user errors become one paragraph on stderr and a non-zero exit code."""
    warnings.simplefilter("default", PluginWarning)
    warnings.showwarning = lambda message, category, *args, **kw: _say("warning", str(message))
    install_interrupt_handlers()
    try:
        cli.main(prog_name="benchsuite", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):  # click wraps it in Abort
            _say("terminated", "stopped by SIGTERM; finished cells are stored, rerun the same command to resume")
            sys.exit(128 + signal.SIGTERM)
        _say("interrupted", "finished cells are stored; rerun the same command to resume")
        sys.exit(130)
    except _OutputClosed:
        # Stop quietly with the status of a tool that SIGPIPE ended. Output still buffered for the
        # closed pipe would fail again at exit, so it goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BenchsuiteError as exc:  # bad input, a plugin's PluginError included, or a failed run
        _say("error", str(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug, reported as one with exit code 3
        if os.environ.get("BENCHSUITE_DEBUG"):
            traceback.print_exc()
            sys.exit(3)
        with tempfile.NamedTemporaryFile("w", prefix="benchsuite-crash-", suffix=".log", delete=False) as log:
            traceback.print_exc(file=log)
        _say("internal error", f"{type(exc).__name__}: {exc}. This is a bug in benchsuite or in a plugin, not in "
             f"your input; the traceback is in {log.name} (set BENCHSUITE_DEBUG=1 to print it).")  # fmt: skip
        sys.exit(3)
