"""The errors a user can cause. The CLI prints them as one paragraph and exits non-zero.

Anything else that escapes is a bug in benchsuite or in a plugin, and is reported as such.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class BenchsuiteError(Exception):
    """Bad input or a failed run: the message says what is wrong and how to fix it."""

    exit_code = 2


class SuiteError(BenchsuiteError):
    """The suite file is malformed or names something that does not exist."""


class PluginLoadError(BenchsuiteError):
    """A plugin could not be imported or registered, and something needs it."""


class RunError(BenchsuiteError):
    """A cell failed while running; the cells already stored are kept."""

    exit_code = 1


class DataError(BenchsuiteError):
    """A dataset was built but cannot serve the study (every evaluation mask empty, say)."""


class RunDirInUse(BenchsuiteError):
    """Another process is running in the run directory."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, as a scheduler sends it: handled like Ctrl-C, so finished cells stay stored."""


class PluginWarning(UserWarning):
    """A plugin failed to load or registered a name twice; suites that do not use it still run."""


def sentence(text: str) -> str:
    """``text`` as a finished sentence: a full stop added unless it already ends with one, ? or !."""
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else f"{text}."


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A "did you mean ...?" suffix for ``word`` among ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def make_output_folder(folder: Path) -> Path:
    """Create ``folder`` and its parents for a command's output: a user's choice of place, so failing is a user error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchsuiteError(
            f"cannot create the output folder {folder} ({exc.strerror or exc}); choose another with --out."
        ) from exc
    return folder
