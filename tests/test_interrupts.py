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
    with pytest.raises(Interrupted) as caught:
        RaisesInFinalizer()  # finalized at once
        time.sleep(2)  # Python's own handler lost Ctrl-C this way, and the run trained on
    assert caught.value.signum == signal.SIGTERM
