"""The dataset cache: each built dataset once on disk, rebuilt when anything its build read has changed.

An entry is ``<key>.pt`` (the tensors) beside ``<key>.json`` (what was built and from what).
The key covers what the suite says (plugin, params, image size) and the data root. What it
cannot cover is known only once the build has run: which files and folders the plugin read.
So the build is watched through Python's audit events (``open``, ``os.listdir``,
``os.scandir``: every way Python code reads a file or lists a folder), and the entry records
those paths with a fingerprint of their sizes and modification times, and a hash of the
plugin's own source files. An entry whose fingerprint or source hash no longer matches is
stale and is built again. A C library that opens files itself (h5py, say) is not seen; the
folder it was listed from is, with every file in it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import json
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchsuite.api import ImageMaskSet, PluginError


def cache_dir() -> Path:
    """Where built datasets are cached: ``$BENCHSUITE_CACHE`` or ``~/.cache/benchsuite``, under ``datasets/``."""
    root = os.environ.get("BENCHSUITE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "benchsuite"
    return Path(root) / "datasets"


@dataclass(frozen=True)
class Reads:
    """The files a build opened and the folders it listed, as absolute paths."""

    files: tuple[str, ...]
    folders: tuple[str, ...]

    def fingerprint(self) -> str:
        """A hash of every read file's size and modification time and of every listed folder's entries.

        A folder's entries are listed with their sizes and times too, so a file added, removed or
        rewritten there changes the fingerprint even when Python never opened it.
        """
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(f"file {path} {_stat(path)}\n".encode())
        for folder in self.folders:
            try:
                with os.scandir(folder) as entries:
                    listing = sorted(f"{e.name}={_stat(e.path)}" for e in entries)
            except OSError:
                listing = ["missing"]
            digest.update(f"folder {folder} {' '.join(listing)}\n".encode())
        return digest.hexdigest()


def _stat(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


class _Recorder:
    """Collects the paths read while a build runs, from Python's audit events.

    Audit hooks cannot be removed, so one hook is installed for the process and records only
    while a build is being watched; otherwise it returns at its first test.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one watched build at a time
        self._files: set[str] | None = None
        self._folders: set[str] = set()
        self._ignored = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, "/proc", "/sys", "/dev"})
        sys.addaudithook(self._event)

    def _event(self, event: str, args: tuple[Any, ...]) -> None:
        if self._files is None:
            return
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
            if isinstance(path, (str, bytes, os.PathLike)) and not writes:
                self._keep(self._files, path)
        elif event in ("os.listdir", "os.scandir"):
            self._keep(self._folders, args[0] if args[0] is not None else ".")

    def _keep(self, into: set[str], path: str | bytes | os.PathLike[str]) -> None:
        absolute = os.path.abspath(os.fsdecode(path))
        if not absolute.startswith(self._ignored) and not absolute.startswith(str(cache_dir())):
            into.add(absolute)

    @contextlib.contextmanager
    def watching(self) -> Iterator[Callable[[], Reads]]:
        with self._lock:
            self._files, self._folders = set(), set()
            try:
                yield lambda: Reads(tuple(sorted(self._files or ())), tuple(sorted(self._folders)))
            finally:
                self._files = None


@functools.cache
def _recorder() -> _Recorder:
    return _Recorder()


def source_hash(factory: Callable[..., Any]) -> str:
    """A hash of the source files of the package that defines ``factory``: any edit to the plugin changes it.

    The whole top-level package is hashed, not only the factory's module, because a factory
    may call helpers anywhere in its package; an edit elsewhere in it costs one rebuild.
    """
    module = inspect.getmodule(factory)
    try:
        origin = Path(inspect.getfile(importlib.import_module(module.__name__.partition(".")[0])))
    except (AttributeError, TypeError, OSError):  # no module, or one without source files (built in)
        return "unknown"
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(origin.parent)}\n".encode() + path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One cached dataset, as ``benchsuite cache`` lists it."""

    path: Path
    meta: dict[str, Any]

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, self.path.with_suffix(".json")) if p.is_file())

    def stale_because(self, sources: str | None) -> str | None:
        """Why the entry would be rebuilt (data or plugin source changed), or ``None`` when it is current.

        ``sources`` is the plugin's current :func:`source_hash`, ``None`` if it is not installed.
        """
        if not self.path.is_file():
            return "its tensors are missing"
        if sources is not None and sources != self.meta.get("source_hash"):
            return "the plugin's source changed"
        reads = Reads(tuple(self.meta["reads"]["files"]), tuple(self.meta["reads"]["folders"]))
        if reads.fingerprint() != self.meta["reads"]["fingerprint"]:
            return "the data it read changed"
        return None


def entry(key: str) -> Entry | None:
    """The entry stored under ``key``, or ``None``."""
    path = cache_dir() / f"{key}.pt"
    try:
        return Entry(path, json.loads(path.with_suffix(".json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def entries() -> list[Entry]:
    """Every entry in the cache, oldest first."""
    found = [entry(p.stem) for p in cache_dir().glob("*.json")]
    return sorted((e for e in found if e is not None), key=lambda e: e.meta.get("created", ""))


def read(found: Entry) -> ImageMaskSet | None:
    """The tensors of ``found``, or ``None`` if the file cannot be read (cut short, say): then it is built again."""
    try:
        stored = torch.load(found.path, weights_only=True)
        return ImageMaskSet(stored["images"], stored["masks"])
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError, PluginError):
        return None  # an unreadable entry is a cache miss, never an error


def build(key: str, make: Callable[[], ImageMaskSet], factory: Callable[..., Any], meta: dict[str, Any]) -> ImageMaskSet:
    """Run ``make`` while recording what it reads, store the result under ``key`` and return it."""
    with _recorder().watching() as reads_so_far:
        data = make()
        reads = reads_so_far()
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.pt"
    meta = meta | {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "images": len(data),
        "source_hash": source_hash(factory),
        "reads": {"files": list(reads.files), "folders": list(reads.folders), "fingerprint": reads.fingerprint()},
    }
    # Tensors first, then the description that vouches for them: a build killed in between leaves
    # an older description whose fingerprint no longer matches, so the entry is built again.
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"images": data.images, "masks": data.masks}, tmp)
    os.replace(tmp, path)
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path.with_suffix(".json"))
    return data


def clear() -> tuple[int, int]:
    """Remove every entry; returns (entries removed, bytes freed)."""
    removed = entries()
    freed = sum(e.size_bytes for e in removed)
    for found in removed:
        for path in (found.path, found.path.with_suffix(".json")):
            path.unlink(missing_ok=True)
    for orphan in cache_dir().glob("*.pt"):  # tensors without a description (a killed build)
        freed += orphan.stat().st_size
        orphan.unlink()
    return len(removed), freed
