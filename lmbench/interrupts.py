"""Ctrl-C and SIGTERM end a run the same way.

SIGTERM is how a run is told to stop by everything that is not a terminal: SLURM's preemption and
`scancel`, `docker stop`, Kubernetes, `kill`. By default it ends the process at once, which leaves
the MLflow run RUNNING for ever. `handle_signals()` (called by the `lmbench` command before a job
runs) makes SIGTERM raise `Interrupted`, a `KeyboardInterrupt`, so that it takes Ctrl-C's way out:
the run ends KILLED with the reason as a tag, its checkpoint stays, and the command exits with
status 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports a process
that a signal ended. A disposition someone else chose is left alone: a SIGTERM handler installed
before (submitit's, which requeues a preempted SLURM job), or SIGINT ignored (a shell's background
job).

Python raises a signal's exception in whatever Python code runs next, and that may be a finalizer
(a weakref callback of SQLAlchemy's, a `__del__`), where an exception is printed as "Exception
ignored in ..." and dropped: Ctrl-C was then lost and the run trained on (seen with Python's own
SIGINT handler, mostly during writes to a sqlite store). So:

- A signal that lands inside `held()` -- a write to the tracking store -- is raised when the write
  is over, not in the middle of it (where it was also liable to leave the write half done). A
  second signal during the same write is raised at once: someone who presses Ctrl-C twice means it.
- One that a finalizer drops anyway reaches `sys.unraisablehook`, which sends it again a moment
  later, until it lands in code that can raise it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """The process was told to stop by signal `signum` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # what a shell reports for a process a signal ended


def reason(ex: KeyboardInterrupt) -> str:
    """Why the run stopped, for its `lmbench.error` tag."""
    if isinstance(ex, Interrupted) and ex.signum != signal.SIGINT:
        return f"terminated by {signal.Signals(ex.signum).name} (a scheduler's preemption, docker stop or kill)"
    return "interrupted by the user"


def exit_status(ex: KeyboardInterrupt) -> int:
    return ex.exit_status if isinstance(ex, Interrupted) else 128 + signal.SIGINT


def said(ex: KeyboardInterrupt) -> str:
    """What a command says when it stops: "interrupted" (Ctrl-C) or "terminated by SIGTERM"."""
    return "interrupted" if exit_status(ex) == 128 + signal.SIGINT else f"terminated by {ex}"


_depth = 0  # how many held() sections the main thread is in
_pending: int | None = None  # a signal that arrived inside one, raised when it ends


def _raise(signum: int, frame) -> None:
    global _pending
    if _depth and _pending is None:
        _pending = signum
        return
    raise Interrupted(signum)


def _send_again(unraisable) -> None:
    """`sys.unraisablehook`: an `Interrupted` that a finalizer dropped is sent again (from another
    thread, so that it is raised after the finalizer); anything else goes to the hook before."""
    if isinstance(unraisable.exc_value, Interrupted):
        threading.Timer(0.01, os.kill, (os.getpid(), unraisable.exc_value.signum)).start()
        return
    _previous_hook(unraisable)


_previous_hook = sys.unraisablehook


def handle_signals() -> None:
    """SIGTERM and SIGINT raise `Interrupted` (held back during `held()`); only where Python's
    own dispositions are in place, and only from the main thread (the one signals are run in)."""
    global _previous_hook
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, _raise):
        signal.signal(signal.SIGTERM, _raise)
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _raise):
        signal.signal(signal.SIGINT, _raise)
    if sys.unraisablehook is not _send_again:
        _previous_hook, sys.unraisablehook = sys.unraisablehook, _send_again


@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends (see the module's doc). Nested blocks end
    with the outermost; in other threads, and where `handle_signals` was not called, it does nothing."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)
