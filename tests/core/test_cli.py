"""The command line as a user meets it: help, exit codes, one-paragraph errors, kill and resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchsuite.cli import _say
from benchsuite.results.cube import EPOCH_TIME, PROVENANCE, open_cube
from tests.conftest import stored_keys, write_distribution
from tests.core.test_runner import TINY

EXPLODING_METRIC = """
from benchsuite.api import Params, hookimpl

class Explodes:
    scope = "cell"
    def __init__(self, params):
        pass
    def __call__(self, inputs):
        return 1 / 0

@hookimpl
def benchsuite_register_metrics(registry):
    registry.add("explodes", Explodes, params=Params)
"""


def benchsuite(*args: str, cwd: Path, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchsuite", *args], cwd=cwd, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=600, **kw)  # fmt: skip


def flat(text: str) -> str:
    """The message with the terminal line wrapping undone."""
    return " ".join(text.split())


def write(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("command", ["run", "validate", "estimate", "plugins", "analyze", "report"])
def test_every_subcommand_explains_itself(tmp_path, command):
    done = benchsuite(command, "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "Usage: benchsuite " + command in done.stdout and len(done.stdout.splitlines()) > 5


PARAMETERISED_METRIC = """
from pydantic import Field

from benchsuite.api import Params, hookimpl

class CutoffParams(Params):
    cutoff: float = Field(description="No default: the suite must give it.")
    classes: list[int] = Field(default_factory=lambda: [1, 2], description="Made by a factory.")

@hookimpl
def benchsuite_register_metrics(registry):
    registry.add("cutoff_metric", lambda params: None, params=CutoffParams)
"""


def test_plugins_params_shows_required_and_factory_defaults(tmp_path):
    site = write_distribution(tmp_path / "site", "bs-cutoff", "0.1", {"bs_cutoff": PARAMETERISED_METRIC}, {"cutoff": "bs_cutoff"})
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = benchsuite("plugins", "--kind", "metrics", "--params", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "cutoff = required  No default" in done.stdout
    assert "classes = [1, 2]  Made by a factory." in done.stdout
    assert "PydanticUndefined" not in done.stdout


DESCRIBED_METRIC = """
from benchsuite.api import Params, hookimpl

@hookimpl
def benchsuite_register_metrics(registry):
    registry.add("tiny", lambda params: None, params=Params, description="A metric from a long-named distribution.")
"""


def test_plugins_lines_up_its_columns_across_every_kind(tmp_path):
    # A third-party distribution with a long name and version beside the built-in ones.
    site = write_distribution(tmp_path / "site", "bs-long-named-metrics", "10.2.1", {"bs_long": DESCRIBED_METRIC},
                              {"long": "bs_long"})  # fmt: skip
    done = benchsuite("plugins", cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    starts = set()
    for line in (line for line in done.stdout.splitlines() if line.startswith("  ")):
        name, source, description = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        starts.add((line.index(source, 2 + len(name)), line.rindex(description)))
    assert len(starts) == 1, starts  # every name, source and description starts in the same column


def test_validate_reports_the_grid_size_of_a_good_suite(tmp_path):
    write(tmp_path)
    done = benchsuite("validate", "tiny.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 datasets x 2 angles x 2 seeds x 1 method x 1 encoder = 8 cells" in done.stdout


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (("seeds: [0, 1]", "seeds: [0, 1"), "not valid YAML"),
        (("metrics: [", "metricz: ["), "Did you mean 'metrics'"),
        (("small_cnn", "small_cn"), "Did you mean 'small_cnn'"),
        (("epochs: 2", "epochs: -2"), "greater than or equal to 1"),
    ],
)
def test_bad_suite_is_one_paragraph_and_exit_code_2_without_traceback(tmp_path, mutation, expected):
    write(tmp_path, TINY.replace(*mutation))
    # run and validate share the loading path; run is checked on the first case only, for speed
    for command in ("validate", "run") if "YAML" in expected else ("validate",):
        done = benchsuite(command, "tiny.yaml", cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.startswith("error: ") and expected in flat(done.stderr)
        assert "Traceback" not in done.stderr and "\n\n" not in done.stderr.strip()


def test_missing_suite_file_is_a_clear_error(tmp_path):
    done = benchsuite("run", "nope.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "suite file 'nope.yaml' does not exist" in flat(done.stderr)
    (tmp_path / "suites").mkdir()
    write(tmp_path / "suites")
    done = benchsuite("validate", "suites", cwd=tmp_path)
    assert done.returncode == 2 and "'suites' is a folder, not a suite file; name a .yaml file (in it: tiny.yaml)" in flat(
        done.stderr
    )


def test_a_data_root_that_does_not_exist_is_refused_before_anything_runs(tmp_path):
    write(tmp_path)
    done = benchsuite("run", "tiny.yaml", "--data-root", "nowhere", cwd=tmp_path)
    assert done.returncode == 2 and "Directory 'nowhere' does not exist" in flat(done.stderr)
    assert not (tmp_path / "runs").exists()


def test_analyze_without_a_cube_says_what_to_do(tmp_path):
    done = benchsuite("analyze", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "run a suite first" in flat(done.stderr)


def test_an_output_folder_that_cannot_be_made_is_bad_input_not_a_crash(tmp_path):
    write(tmp_path)
    (tmp_path / "afile").write_text("")
    done = benchsuite("run", "tiny.yaml", "--out", "afile/runs", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "cannot create the output folder afile/runs/tiny (Not a directory); choose another with --out" in flat(done.stderr)


def test_plugin_that_fails_inside_a_cell_is_named_and_stored_cells_survive(tmp_path):
    site = write_distribution(
        tmp_path / "site", "bs-explodes", "0.2", {"bs_explodes": EXPLODING_METRIC}, {"explodes": "bs_explodes"}
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    write(tmp_path, TINY.replace("metrics: [dice, auroc, mass_in_mask, final_loss]", "metrics: [final_loss, explodes]"))
    done = benchsuite("run", "tiny.yaml", "--no-progress", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "metric 'explodes' (explodes) failed for cell dataset=shapes theta=0" in flat(done.stderr)
    assert "ZeroDivisionError" in done.stderr and "Traceback" not in done.stderr
    assert "ZeroDivisionError" in (tmp_path / "runs" / "tiny" / "error.log").read_text()


SLOWER = TINY.replace("epochs: 2,", "epochs: 60,")
"""TINY with cells long enough (about half a second each) that a kill lands between two stored cells:
the store writes a part once results pause, and TINY's cells follow each other without a pause."""


def start_run(tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchsuite", "run", "tiny.yaml", "--no-progress", *extra], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_stored(run_dir: Path, count: int, proc: subprocess.Popen) -> int:
    """Wait until ``run_dir`` holds more than ``count`` stored cells (or the run ended); returns how many it holds."""
    deadline = time.monotonic() + 300
    while len(stored_keys(run_dir)) <= count and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(stored_keys(run_dir))


def test_a_run_killed_three_times_resumes_to_the_cube_of_an_uninterrupted_run(tmp_path):
    write(tmp_path, SLOWER)
    run_dir = tmp_path / "runs" / "tiny"
    survivors = 0
    for _ in range(3):  # each run is killed once it has stored cells of its own
        proc = start_run(tmp_path)
        survivors = wait_for_stored(run_dir, survivors, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    survivors = len(stored_keys(run_dir))
    assert 3 <= survivors < 8, "every kill should have come part-way"
    done = benchsuite("run", "tiny.yaml", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{8 - survivors} cells run, {survivors} already stored" in flat(done.stderr)
    outputs = ["results.nc", "report.html", "anova.csv", "mixed.csv", "tukey.csv", "covariate.csv", "summary.json"]
    assert all((run_dir / name).is_file() for name in outputs)
    curves = sorted((run_dir / "tensorboard").glob("*/seed=*/moco/cnn"))  # one TensorBoard run per θ-curve
    assert len(curves) == 4
    for curve in curves:  # each angle once: a cell logged, then killed before it was stored, is not logged again
        assert [point.step for point in EventAccumulator(str(curve)).Reload().Scalars("metrics/dice")] == [0, 900]
    assert "theta:dataset" in done.stdout and "report: runs/tiny/report.html" in done.stdout

    assert benchsuite("run", "tiny.yaml", "--no-progress", "--out", "whole", cwd=tmp_path).returncode == 0
    resumed, whole = open_cube(run_dir), open_cube(tmp_path / "whole" / "tiny")
    compared = [name for name, var in whole.data_vars.items() if var.attrs["role"] != PROVENANCE and name != EPOCH_TIME]
    assert {"dice", "auroc", "final_loss", "ssp_loss_step", "saliency_example"} <= set(compared)
    for name in compared:
        assert resumed[name].equals(whole[name]), f"{name} differs after three kills and a resume"


def test_sigterm_stops_a_run_like_ctrl_c_and_it_resumes(tmp_path):
    write(tmp_path, SLOWER)
    proc = start_run(tmp_path)
    wait_for_stored(tmp_path / "runs" / "tiny", 0, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    stored = len(stored_keys(tmp_path / "runs" / "tiny"))
    assert proc.returncode == 143, stderr
    assert "terminated: stopped by SIGTERM; finished cells are stored" in flat(stderr) and "Traceback" not in stderr
    assert 1 <= stored < 8 and (tmp_path / "runs" / "tiny" / "results.nc").is_file()
    done = benchsuite("run", "tiny.yaml", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0 and f"{8 - stored} cells run, {stored} already stored" in flat(done.stderr)


SWALLOWED_SIGNAL = """
import os, signal
from benchsuite.interrupts import install_interrupt_handlers
from benchsuite.results.errors import Terminated

install_interrupt_handlers()

class Dying:
    def __del__(self):
        os.kill(os.getpid(), signal.{name})
        sum(range(100_000))  # the handler runs here, and what it raises cannot leave a __del__

try:
    Dying()
    sum(range(10_000_000))
    print("ran on")
except Terminated:
    print("terminated")
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize(("name", "stop"), [("SIGTERM", "terminated"), ("SIGINT", "interrupted")])
def test_a_signal_that_lands_in_a_finaliser_still_stops_the_command(tmp_path, name, stop):
    # As in a run that CI once saw ignore SIGTERM: the handler's exception was raised inside a
    # weakref callback, where Python prints "Exception ignored" and goes on.
    done = subprocess.run([sys.executable, "-c", SWALLOWED_SIGNAL.format(name=name)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.strip() == stop, done.stderr
    assert "Exception ignored" not in done.stderr


FAILING_COMMAND = """
import sys
from benchsuite import cli

@cli.cli.command()
def boom():
    1 / 0

sys.argv = ["benchsuite", "boom"]
cli.main()
"""


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_exits_3_with_its_traceback_in_a_crash_log_or_printed_when_debugging(tmp_path, debug):
    env = dict(os.environ, BENCHSUITE_DEBUG="1") if debug else {k: v for k, v in os.environ.items() if k != "BENCHSUITE_DEBUG"}
    done = subprocess.run([sys.executable, "-c", FAILING_COMMAND], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 3
    if debug:
        assert "Traceback" in done.stderr and "ZeroDivisionError" in done.stderr
    else:
        assert "internal error: ZeroDivisionError: division by zero. This is a bug" in flat(done.stderr)
        log = Path(flat(done.stderr).split("the traceback is in ")[1].split(" (set")[0])
        assert "Traceback" not in done.stderr and "in boom\nZeroDivisionError" in log.read_text()
        log.unlink()


def test_output_closed_early_ends_quietly_like_other_command_line_tools(tmp_path):
    # As `benchsuite plugins | head -1` once head has gone: the first write meets a closed pipe.
    read_end, write_end = os.pipe()
    os.close(read_end)
    done = subprocess.run([sys.executable, "-m", "benchsuite", "plugins"], stdout=write_end, stderr=subprocess.PIPE,
                          cwd=tmp_path, text=True, timeout=120)  # fmt: skip
    os.close(write_end)
    assert done.returncode == 141 and done.stderr == ""


def test_messages_are_finished_sentences_wrapped_between_words_only(capsys):
    path = "/very-long-folder-name/with-many-hyphens/in-it/that-must-stay-whole/images-of-the-first-study"
    _say("error", f"the images folder {path} does not exist (shape (16,))")
    printed = capsys.readouterr().err
    assert path in printed.splitlines()[1] or path in printed.splitlines()[0], printed
    assert printed.rstrip().endswith("(shape (16,)).")
