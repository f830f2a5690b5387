"""lmbench/interrupts.py in this process: SIGTERM raises as Ctrl-C does, a signal is held back
during a write to the store, and one that a finalizer drops is sent again."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from lmbench import interrupts
from lmbench.interrupts import Interrupted, held


@pytest.fixture
def handlers():
    """lmbench's handlers for one test; the process's own put back after it."""
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook
    interrupts.handle_signals()
    yield
    signal.signal(signal.SIGINT, saved[0])
    signal.signal(signal.SIGTERM, saved[1])
    sys.unraisablehook = saved[2]
    interrupts._received, interrupts._pending, interrupts._caught = None, None, False  # not stopping after all


def test_an_error_after_a_signal_is_the_signals_and_before_it_is_itself(handlers):
    with pytest.raises(TypeError), interrupts.signal_errors():
        raise TypeError("a bug")
    with pytest.raises(Interrupted) as caught, interrupts.signal_errors():
        try:  # what C code that called back into Python made of the signal's exception
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            raise SystemError("Objects/listobject.c:338: bad argument to internal function") from None
    assert caught.value.signum == signal.SIGTERM and isinstance(caught.value.__cause__, SystemError)


def test_sigterm_raises_an_interrupt_with_its_exit_status(handlers):
    with pytest.raises(KeyboardInterrupt) as caught:
        signal.raise_signal(signal.SIGTERM)
    assert caught.value.exit_status == 143
    assert interrupts.reason(caught.value).startswith("terminated by SIGTERM")
    with pytest.raises(Interrupted) as caught:
        signal.raise_signal(signal.SIGINT)
    assert (interrupts.exit_status(caught.value), interrupts.reason(caught.value)) == (130, "interrupted by the user")


def test_a_signal_during_a_write_is_raised_after_it_and_a_second_at_once(handlers):
    done = []
    with pytest.raises(Interrupted):
        with held():
            signal.raise_signal(signal.SIGTERM)
            done.append("the write")  # not cut short
    assert done == ["the write"]
    with pytest.raises(Interrupted):
        with held():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # pressed twice: raised here
            done.append("never")
    assert done == ["the write"]


class RaisesInFinalizer:
    def __del__(self):
        signal.raise_signal(signal.SIGTERM)  # its exception is raised in here, and Python drops it


def test_a_signal_a_finalizer_drops_is_sent_again(handlers):
    interrupts.handle_signals()  # again: pytest puts a sys.unraisablehook of its own around each test
    started = time.monotonic()
    with pytest.raises(Interrupted) as caught:
        RaisesInFinalizer()  # finalized at once
        time.sleep(interrupts.RESEND_AFTER_S)  # Python's own handler lost Ctrl-C this way: the run trained on
    assert caught.value.signum == signal.SIGTERM
    assert time.monotonic() - started < interrupts.RESEND_AFTER_S / 2  # at once, not the watchdog's copy


def test_a_signal_something_swallowed_is_sent_again_until_caught(handlers):
    """Keras turned one into another error inside C code and its `except Exception` dropped that:
    the run trained on."""
    try:
        signal.raise_signal(signal.SIGTERM)
    except KeyboardInterrupt:
        pass  # swallowed
    with pytest.raises(Interrupted):
        time.sleep(3 * interrupts.RESEND_AFTER_S)  # sent again, raised here
    interrupts.caught()  # lmbench's code has it now (ending the run): no more copies
    time.sleep(1.5 * interrupts.RESEND_AFTER_S)
