"""benchsuite: a plugin-based benchmark suite for self-supervised pre-training on medical images.

Plugins import :mod:`benchsuite.api`; everything else in this package is private to the core.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("benchsuite")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["RunResult", "__version__", "open_cube", "run"]


def __getattr__(name: str) -> object:
    # Imported on first use: `import benchsuite` stays light, and analysing a cube imports no torch.
    if name in ("run", "RunResult"):
        from benchsuite import study

        return getattr(study, name)
    if name == "open_cube":
        from benchsuite.results.cube import open_cube

        return open_cube
    raise AttributeError(f"module 'benchsuite' has no attribute {name!r}")
