"""Shared fixtures and helpers: an isolated dataset cache, real plugin distributions on the path, built components."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

import pytest

from benchsuite.api import MetricInputs
from benchsuite.engine.registry import default_registry

ROOT = Path(__file__).resolve().parent.parent

# A shell without job control starts a background command with SIGINT ignored, and every process
# a test starts would inherit that; the tests that stop a run with SIGINT need it delivered, as at
# a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # One cache per test session: tests share built datasets but never touch the user's cache.
    monkeypatch.setenv("BENCHSUITE_CACHE", str(tmp_path_factory.getbasetemp() / "dataset-cache"))


@pytest.fixture
def fresh_registry():
    """Forget the process-wide plugin registry before and after, so a test's plugins are seen and then gone."""
    default_registry.cache_clear()
    yield default_registry
    default_registry.cache_clear()


def write_distribution(root: Path, name: str, version: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """Write an installed-looking distribution (modules plus a .dist-info with entry points) under ``root``.

    This is what ``pip install`` leaves in site-packages, so ``importlib.metadata`` finds its
    ``benchsuite`` entry points exactly as it would for a real third-party plugin.
    """
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[benchsuite]\n{lines}")
    return root


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Factory fixture: ``plugin_path(name, modules, entry_points)`` puts a distribution on sys.path."""

    def make(name: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "1.0") -> Path:
        root = write_distribution(tmp_path / name, name, version, modules, entry_points)
        monkeypatch.syspath_prepend(str(root))
        for module in modules:
            sys.modules.pop(module, None)
        return root

    return make


def component(kind: str, name: str, **params):
    """The registered ``kind`` plugin ``name`` built with ``params``, as a suite builds it (``params`` validated)."""
    found = default_registry().get(kind, name)
    return found.factory(found.params(**params))


def build_encoder(name: str, in_channels: int, image_size: int = 32, **params):
    """The registered encoder ``name`` for ``in_channels`` input channels and images of ``image_size``, built with ``params``."""
    found = default_registry().get("encoders", name)
    return found.factory(found.params(**params), in_channels, image_size)


def metric_inputs(**fields) -> MetricInputs:
    """``MetricInputs`` with the given fields and None for the rest: for metrics that read only those.

    ``train_images`` and ``train_masks`` default to ``images`` and ``masks``, ``seed`` to 0 and ``theta`` to 30.
    """
    defaults = dict.fromkeys(MetricInputs.__dataclass_fields__)
    defaults |= {"seed": 0, "theta": 30.0, "epoch_loss": None}
    defaults["train_images"] = fields.get("images")
    defaults["train_masks"] = fields.get("masks")
    return MetricInputs(**(defaults | fields))


def stored_keys(run_dir: Path) -> set[str]:
    """The keys of the cells a run directory holds (reading only the parts' key columns, as the runner does)."""
    from benchsuite.results.store import RunStore  # the store imports the engine; tests of the results layer need it not

    return RunStore(run_dir).done_keys()
