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

Python raises a signal's exception in whatever Python code runs next, and that code may lose it:
a finalizer (a weakref callback of SQLAlchemy's, a `__del__`) prints it as "Exception ignored in
..." and drops it, and C code that called back into Python (TensorFlow's, Keras') can turn it into
another error ("TypeError", "SystemError: ... bad argument to internal function"), which a library's
`except Exception` may then swallow. Ctrl-C was then lost and the run trained on, RUNNING (seen with
Python's own SIGINT handler during writes to a sqlite store, and with Keras building a model). So:

- A signal that lands inside `held()` -- a write to the tracking store -- is raised when the write
  is over, not in the middle of it (where it was also liable to leave the write half done). A
  second signal during the same write is raised at once: someone who presses Ctrl-C twice means it.
- A signal is sent again until lmbench's own code has `caught()` it: every `RESEND_AFTER_S` by a
  watchdog thread (never into a write), and at once when a finalizer dropped it
  (`sys.unraisablehook`).
- An error raised after a signal arrived is taken for the signal (`signal_errors()`): 2 of 40
  signals sent while a run scored came out of TensorFlow as a TypeError or a SystemError.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
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


RESEND_AFTER_S = 2.0  # a signal not caught by then is sent again
_depth = 0  # how many held() sections the main thread is in
_pending: int | None = None  # a signal that arrived inside one, raised when it ends
_received: int | None = None  # the signal the process is stopping for
_caught = False  # lmbench's own code has it: no more sending it again
_resent = False  # the signal now arriving is a copy sent again, not the user's
_watchdog: threading.Thread | None = None


def _raise(signum: int, frame) -> None:
    global _pending, _received, _resent
    if _resent:  # a copy of a signal something swallowed
        _resent = False
        if _caught:
            return
        if _depth:  # never into a write: raised when it is over
            _pending = _pending or _received
            return
        raise Interrupted(_received)
    _received = signum
    if _depth and _pending is None:
        _pending = signum
        return
    _watch()
    raise Interrupted(signum)


def caught() -> None:
    """Said by lmbench's code that has caught the interruption (and ends the run): the signal is
    no longer sent again."""
    global _caught
    _caught = True


def _send_again() -> None:
    global _resent
    if _received is not None and not _caught:
        _resent = True
        os.kill(os.getpid(), _received)


def _watch() -> None:
    """A daemon thread that sends the signal again every RESEND_AFTER_S until it is caught."""
    global _watchdog

    def resend_until_caught():
        while True:
            time.sleep(RESEND_AFTER_S)
            if _received is None or _caught:
                return
            if not _depth and _pending is None:
                _send_again()

    if _watchdog is None or not _watchdog.is_alive():
        _watchdog = threading.Thread(target=resend_until_caught, name="lmbench-interrupt", daemon=True)
        _watchdog.start()


def _send_again_if_dropped(unraisable) -> None:
    """`sys.unraisablehook`: an `Interrupted` that a finalizer dropped is sent again (from another
    thread, so that it is raised after the finalizer); anything else goes to the hook before."""
    if isinstance(unraisable.exc_value, Interrupted):
        threading.Timer(0.01, _send_again).start()
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
    if sys.unraisablehook is not _send_again_if_dropped:
        _previous_hook, sys.unraisablehook = sys.unraisablehook, _send_again_if_dropped
        atexit.register(caught)  # registered late, so run first: no copy lands in the exit handlers


@contextmanager
def signal_errors() -> Iterator[None]:
    """Once a signal was received, an error raised in the block is raised as that signal's
    `Interrupted` (from the error): it came out of code the signal cut short."""
    try:
        yield
    except Exception as ex:
        if _received is None:
            raise
        raise Interrupted(_received) from ex


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
