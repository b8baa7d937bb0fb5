"""The run directory on disk: finished cells in Parquet parts, and the cube built from them.

The driver stores results in **parts**: one Parquet file holds every cell that finished since
the last part was written (:class:`PartWriter` flushes at least once a second), so the store's
cost is a few file operations per batch of cells rather than per cell. Each part is written to a
temporary file and renamed into ``parts/``, an atomic step on POSIX file systems, so a part is
either whole or absent; the cells in a part are the done markers, and a killed run loses only
the cells in flight and those that finished in its last second. Parquet (through pyarrow)
because a batch of cells is a table (a row per cell, a column per variable), columns can be read
alone (the resume reads only the keys), pages carry checksums, and every language reads it.

The cube ``results.nc`` is assembled from the parts (:func:`benchsuite.results.parts.assemble`) and
written as chunked NetCDF, so :func:`benchsuite.results.cube.open_cube` opens it lazily, a chunk at a
time. ``docs/design.md`` gives the measurements behind these choices.

Layout of a run directory::

    DIR/<suite name>/
      suite.yaml          the suite text as given
      manifest.json       resolved configuration and the key of every cell
      parts/NNNNNNNN.parquet  finished cells, a row each, numbered in the order they were written
      parts/unreadable/   parts found damaged on a resume (cut short, say), kept for inspection
      results.nc          the cube: every variable over (dataset, theta, seed, method, encoder, ...)
      lock                held by the run in progress (an OS file lock, released when it exits or dies)

A run directory of an earlier version, with one NetCDF shard per cell in ``cells/``, is
converted to a part on its first resume (:func:`benchsuite.engine.shards.convert_shards`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

from benchsuite.results import cube as names
from benchsuite.results.cell_result import CellResult
from benchsuite.results.cube import CUBE_NAME, ENGINE
from benchsuite.results.errors import RunDirInUse, make_output_folder
from benchsuite.results.parts import Variable, assemble, cell_variables, table

if TYPE_CHECKING:  # annotations only: the grid's module imports torch
    from benchsuite.engine.grid import Cell

PARTS = "parts"
CHUNK_BYTES = 8 * 2**20
"""Target size of one chunk of a cube variable on disk: what a lazy reader loads at a time."""


def _atomic(write: Callable[[Path], None], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path) -> None:
    _atomic(lambda tmp: tmp.write_text(text, encoding="utf-8"), path)


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.parts_dir = self.run_dir / PARTS
        self._next_part: int | None = None  # counted once: a run writes thousands of parts, and it is their one writer

    @property
    def cube_path(self) -> Path:
        return self.run_dir / CUBE_NAME

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory for this process, or raise :class:`RunDirInUse` naming the process that does.

        An ``flock`` rather than a file that exists: the operating system releases it when the
        holder exits or is killed, so a killed run never leaves the directory locked. (Worker
        processes are spawned, and Python opens files close-on-exec, so they do not hold it.)
        """
        make_output_folder(self.run_dir)
        path = self.run_dir / "lock"
        with path.open("a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = path.read_text(encoding="utf-8").strip() or "another process"
                raise RunDirInUse(
                    f"{self.run_dir} is in use by another benchsuite run ({holder}). Two runs in one directory "
                    f"would compute the same cells twice and race on the cube. Wait for that run to finish or stop "
                    f"it, or pass --out to run in another directory."
                ) from None
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {utc_now()}\n")
            handle.flush()
            yield

    def part_paths(self) -> list[Path]:
        """The stored parts, in the order they were written."""
        return sorted(self.parts_dir.glob("*.parquet")) if self.parts_dir.is_dir() else []

    def set_aside_unreadable(self) -> list[tuple[Path, str]]:
        """Move parts that cannot be read whole to ``parts/unreadable/``; returns each with its error.

        Every page is read and its checksum verified, which finds a part cut short by a full disk
        or a copy, or with a zeroed tail; its cells then simply run again. Temporary files of a
        write that a kill interrupted are removed.
        """
        moved = []
        for tmp in self.parts_dir.glob(".*.tmp*") if self.parts_dir.is_dir() else []:
            tmp.unlink()
        for path in self.part_paths():
            try:
                _read_part(path)
            except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
                aside = self.parts_dir / "unreadable" / path.name
                aside.parent.mkdir(exist_ok=True)
                os.replace(path, aside)
                moved.append((aside, str(exc)))
        return moved

    def done_keys(self) -> set[str]:
        """The keys of every stored cell (only the key column of each part is read)."""
        return {
            key
            for path in self.part_paths()
            for key in pq.read_table(path, columns=[names.CELL_KEY]).column(names.CELL_KEY).to_pylist()
        }

    def write_part(self, rows: Sequence[tuple[Cell, Mapping[str, Variable]]]) -> Path:
        """Store ``rows`` (cells and their variables) as the next part, atomically; returns its path."""
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        if self._next_part is None:
            written = self.part_paths()
            self._next_part = int(written[-1].stem) + 1 if written else 0
        part = table([cell for cell, _ in rows], [variables for _, variables in rows])
        path = self.parts_dir / f"{self._next_part:08d}.parquet"
        self._next_part += 1
        _atomic(lambda tmp: pq.write_table(part, tmp, compression="zstd", write_page_checksum=True), path)
        return path

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.run_dir / "manifest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_manifest(self, manifest: dict[str, Any], suite_text: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_text(suite_text, self.run_dir / "suite.yaml")
        _atomic_text(json.dumps(manifest, sort_keys=True), self.run_dir / "manifest.json")

    def build_cube(self, cells: Sequence[Cell], attrs: dict[str, str], sweep_paths: Mapping[str, str]) -> xr.Dataset:
        """The cube over the grid of ``cells``, from the parts present; cells not run are NaN."""
        return assemble(cells, (_read_part(path) for path in self.part_paths()), attrs, sweep_paths)

    def cube_is_current(self, cells: Sequence[Cell], suite_text: str) -> bool:
        """Whether ``results.nc`` is the cube of the grid of ``cells`` and of ``suite_text``, and no stored part is newer.

        A rerun that ran nothing new then keeps the cube rather than assembling it again. The
        suite's text is compared too: what changes no cell (its outcome, its analysis and record
        settings) is still in the cube's attributes.
        """
        parts = self.part_paths()
        if not self.cube_path.is_file() or not parts:
            return False
        if max(path.stat().st_mtime for path in parts) > self.cube_path.stat().st_mtime:
            return False
        try:
            with xr.open_dataset(self.cube_path, engine=ENGINE) as cube:
                same_cells = names.CELL_KEY in cube and set(cube[names.CELL_KEY].values.ravel()) == {c.key for c in cells}
                return same_cells and cube.attrs.get(names.SUITE_YAML) == suite_text
        except (OSError, ValueError):  # a damaged cube is rebuilt from the parts, which hold every result
            return False

    def write_cube(self, cube: xr.Dataset) -> Path:
        """Write ``cube`` atomically as chunked NetCDF (chunks of about :data:`CHUNK_BYTES`), for lazy reading."""
        encoding = {
            name: {"chunksizes": _chunks(var.shape, var.dtype.itemsize)}
            for name, var in cube.data_vars.items()
            if var.ndim and var.dtype.kind == "f"
        }
        _atomic(lambda tmp: cube.to_netcdf(tmp, engine=ENGINE, encoding=encoding), self.cube_path)
        return self.cube_path


class PartWriter:
    """Collects finished cells and writes them as parts, each batch as soon as results stop arriving.

    A background thread writes the waiting cells once no result has arrived for ``quiet``
    seconds (the executor has gone back to computing: a group's results arrive together), or
    once the first of them has waited ``max_delay`` seconds while results keep streaming in, or
    when ``max_cells`` wait. So a run killed outright loses the cells in flight and at most the
    results of its last ``max_delay`` seconds, while a stream of fast cells is stored in large
    parts; closing writes whatever waits (a run stopped by Ctrl-C or SIGTERM loses nothing that
    had finished). The cells at the angles in ``detail`` (the suite's ``record.detail_angles``)
    keep their saliency examples.
    """

    def __init__(
        self,
        store: RunStore,
        detail: Collection[float],
        *,
        max_cells: int = 4096,
        max_delay: float = 1.0,
        quiet: float = 0.1,
    ):
        self.store, self.detail = store, frozenset(detail)
        self.max_cells, self.max_delay, self.quiet = max_cells, max_delay, quiet
        self._waiting: list[tuple[Cell, dict[str, Variable]]] = []
        self._first = self._last = 0.0  # when the oldest and the newest waiting result arrived
        self._datasets_stored: set[str] = set()
        self._lock, self._write_lock = threading.Lock(), threading.Lock()
        self._closed = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._flush_when_due, name="benchsuite-part-writer", daemon=True)

    def __enter__(self) -> PartWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._thread.join()
        self.flush()

    def add(self, result: CellResult) -> None:
        if self._failure is not None:
            raise self._failure
        cell = result.cell
        with self._lock:
            # A dataset's shared variables (example images, orientation histogram) ride on its
            # detailed cells and on the first of its cells this run stores.
            detailed = cell.theta in self.detail
            shared = detailed or cell.dataset not in self._datasets_stored
            self._datasets_stored.add(cell.dataset)
            row = cell_variables(result, detailed=detailed, dataset_level=shared)
            self._last = time.monotonic()
            if not self._waiting:
                self._first = self._last
            self._waiting.append((cell, row))
            full = len(self._waiting) >= self.max_cells
        if full:
            self.flush()

    def flush(self) -> None:
        """Write every waiting cell as one part now."""
        with self._write_lock:
            with self._lock:
                batch, self._waiting = self._waiting, []
            if batch:
                self.store.write_part(batch)

    def _flush_when_due(self) -> None:
        while not self._closed.wait(self.quiet / 4):
            with self._lock:
                now = time.monotonic()
                due = bool(self._waiting) and (now - self._last >= self.quiet or now - self._first >= self.max_delay)
            if due:
                try:
                    self.flush()
                except Exception as exc:  # noqa: BLE001 - raised in the driver's thread at its next add
                    self._failure = exc
                    return


def _read_part(path: Path) -> pa.Table:
    return pq.read_table(path, page_checksum_verification=True)


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk sizes of about :data:`CHUNK_BYTES`: whole trailing dimensions, then as much of the next one as fits."""
    budget = max(1, CHUNK_BYTES // itemsize)
    chunks = list(shape)
    for axis in range(len(shape)):
        rest = math.prod(shape[axis + 1 :])
        if rest * shape[axis] <= budget:
            break
        chunks[axis] = budget // rest if rest < budget else 1
    return tuple(max(1, c) for c in chunks)


def utc_now() -> str:
    """The time, to the second, in UTC: when a cube was created and since when a run holds the lock."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
