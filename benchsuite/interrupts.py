"""Signals a run ends on: SIGTERM (as schedulers send it) and an interrupt that landed in a callback.

``benchsuite.cli.main`` installs these, so that neither signal is ever ignored; a finished cell
is stored either way and the run can be resumed.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable

from benchsuite.results.errors import Terminated


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _redeliver_interrupt(unraisable: sys.UnraisableHookArgs, default: Callable[[sys.UnraisableHookArgs], object]) -> None:
    # A signal handler's exception that lands in a __del__ or a weakref callback cannot propagate:
    # Python prints "Exception ignored" and carries on, and the run would ignore Ctrl-C or SIGTERM.
    # The signal is sent again, so its handler runs anew outside the callback: from another thread
    # a moment later, since Python would run a handler tripped from here inside this very hook.
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        default(unraisable)
        return
    signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
    resend = threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident, signum))
    resend.daemon = True
    resend.start()


def install_interrupt_handlers() -> None:
    """SIGTERM raises :class:`Terminated`, and an interrupt that a callback swallowed is sent again."""
    signal.signal(signal.SIGTERM, _terminate)
    sys.unraisablehook = functools.partial(_redeliver_interrupt, default=sys.unraisablehook)
