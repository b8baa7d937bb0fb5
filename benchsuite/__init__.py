"""benchsuite: a plugin-based benchmark suite for self-supervised pre-training on medical images.

Plugins import :mod:`benchsuite.api`; everything else in this package is private to the core.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("benchsuite")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
