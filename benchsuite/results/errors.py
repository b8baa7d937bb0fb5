"""The errors a user can cause. The CLI prints them as one paragraph and exits non-zero.

Anything else that escapes is a bug in benchsuite or in a plugin, and is reported as such.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


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


# The names pydantic gives the members of a union in an error's location ('constrained-int',
# "literal['auto']", 'list[float]'): not keys of the input, so a message leaves them out.
_UNION_MEMBERS = {"int", "str", "float", "bool", "none", "list", "dict", "constrained-int", "constrained-float",
                  "constrained-str", "function-after", "function-before", "function-wrap", "function-plain"}  # fmt: skip


def validation_problems(errors: Iterable[Mapping[str, Any]]) -> list[tuple[tuple[Any, ...], str, str]]:
    """pydantic's ``ValidationError.errors()`` as a reader wants them: (location, message, type).

    Locations lose the names of union members. The errors of one location are joined: a value
    that fits no member of ``int >= 1 | 'auto'`` reads "Input should be greater than or equal to
    1 or 'auto'". A member whose type the input does not have ("Input should be a valid list")
    is dropped when another member got further into the input (a mapping checked key by key).
    """
    cleaned = [
        (tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p in _UNION_MEMBERS))), e["msg"], e["type"])
        for e in errors
    ]
    deeper = {loc[:depth] for loc, _, _ in cleaned for depth in range(len(loc))}
    kept = [(loc, msg, kind) for loc, msg, kind in cleaned if not (kind.endswith("_type") and loc in deeper)]
    by_loc: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
    for loc, msg, kind in kept:
        by_loc.setdefault(loc, []).append((msg, kind))
    problems = []
    for loc, found in by_loc.items():
        (first, kind), rest = found[0], [msg.removeprefix("Input should be ") for msg, _ in found[1:]]
        problems.append((loc, " or ".join(dict.fromkeys([first, *rest])), kind))
    return problems


def make_output_folder(folder: Path) -> Path:
    """Create ``folder`` and its parents for a command's output: a user's choice of place, so failing is a user error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchsuiteError(
            f"cannot create the output folder {folder} ({exc.strerror or exc}); choose another with --out."
        ) from exc
    return folder
