"""TensorFlow imported with its native start-up lines hidden, by whatever needs it first: a run of a
network (`run.run_kind`), `lmbench-generate` and `lmbench-evaluate`. No TensorFlow at the top of this
module: a run of a counting model imports it and never TensorFlow."""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide TensorFlow's C++ start-up lines (oneDNN notice, CUDA probing): they are printed before
    absl logging starts, so TF_CPP_MIN_LOG_LEVEL cannot. Python errors still surface normally.
    Set TF_CPP_MIN_LOG_LEVEL=0 to see them."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow_import() -> None:
    """Import TensorFlow with its native start-up lines hidden; its CUDA probe logs here, not at
    the first op. A process that has imported TensorFlow freezes its heap at exit: Python's last
    garbage collection would walk every object TensorFlow and Keras made (8 s after a tiny run's
    last line on two busy cores, 0.3 s frozen; a SIGTERM's sender, docker stop, waits 10 s)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    atexit.register(gc.freeze)
    with native_stderr_silenced():
        import tensorflow as tf  # the reason this function exists: see the module's docstring

        tf.config.list_physical_devices("GPU")
