"""The error a plugin raises for input it cannot handle; see docs/plugins.md."""

from benchsuite.results.errors import BenchsuiteError


class PluginError(BenchsuiteError):
    """Raised by a plugin for input it cannot handle (missing folder, bad file, ...).

    The message is shown to the user as is, so it should say what is wrong and how to fix it.
    The core raises it too when a plugin breaks a contract of :mod:`benchsuite.api`.
    """
