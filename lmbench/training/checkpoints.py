"""Resumable training state, written atomically.

`checkpoints/last/` holds everything needed to continue a neural run exactly where it stopped: model
weights, optimizer variables, the hidden state of every training stream, and `trainer_state.json`
(position in the data, best validation loss, learning rate, counters, the MLflow run id). It is
written to a temporary folder and renamed over the previous one, so a kill at any moment (SIGKILL
included) leaves either the old or the new checkpoint, never a half-written one; `checkpoints/best/`
(the best validation's weights) too. A checkpoint damaged all the same (a full disk, a copy cut
short) is found by `check` before a resume, and named (`DamagedFile`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

from lmbench.errors import reading_file
from lmbench.models.neural import WEIGHTS_FILE
from lmbench.training.state import TrainState

STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.weights.h5"
ARRAYS_FILE = "optimizer_and_streams.npz"


def save(folder: Path, state: TrainState, model, optimizer, streams_state, extra: dict | None = None) -> None:
    """The whole checkpoint; `extra`: more arrays for ARRAYS_FILE (NT-ASGD's average)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_weights(tmp / MODEL_FILE)
    arrays = {f"opt_{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)}
    # stream states are bfloat16 under mixed_bfloat16, which .npz cannot hold; float32 holds them exactly
    arrays.update(
        {f"stream_{i}": np.asarray(tf.cast(t, tf.float32)) for i, t in enumerate(tf.nest.flatten(streams_state))}
    )
    np.savez(tmp / ARRAYS_FILE, **arrays, **(extra or {}))
    (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    _replace(tmp, folder)


def save_model(folder: Path, model) -> None:
    """`model.save(folder)` (the best weights), whole or not at all, as `save`."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    _replace(tmp, folder)


def _replace(tmp: Path, folder: Path) -> None:
    """Put the whole folder `tmp` in the place of `folder`. At every moment `folder` or its `.old`
    is whole: a kill between the renames leaves `.old` only, which `whole` finds."""
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def whole(folder: Path, marker: str = STATE_FILE) -> Path:
    """`folder`, or its `.old` when a kill between `_replace`'s renames left only that."""
    folder = Path(folder)
    return folder if (folder / marker).is_file() else folder.with_name(folder.name + ".old")


def read_state(folder: Path) -> TrainState | None:
    """The saved state, or None; `DamagedFile` if it cannot be read."""
    path = whole(folder) / STATE_FILE
    if not path.is_file():
        return None
    with reading_file(path):
        return TrainState(**json.loads(path.read_text()))


def check(last: Path, best: Path | None) -> None:
    """Raise `DamagedFile` for the first file of the checkpoint (and of the best weights, when a
    resume will read them) that cannot be read: before a resume reopens its MLflow run, instead of
    h5py's or NumPy's exception half-way through. Opening is enough: a file cut short has lost the
    directory at its end (HDF5's end-of-file address, a zip's central directory)."""
    folder = whole(last)
    for path in [folder / MODEL_FILE, *([whole(best, WEIGHTS_FILE) / WEIGHTS_FILE] if best is not None else [])]:
        with reading_file(path), h5py.File(path, "r"):
            pass
    with reading_file(folder / ARRAYS_FILE), np.load(folder / ARRAYS_FILE) as arrays:
        arrays.files  # noqa: B018 (reads the zip's directory)


def restore(folder: Path, model, optimizer, streams_template):
    """Load weights and optimizer variables in place; return the saved stream states."""
    folder = whole(folder)
    model.load_weights(folder / MODEL_FILE)
    with np.load(folder / ARRAYS_FILE) as arrays:
        for i, var in enumerate(optimizer.variables):
            var.assign(arrays[f"opt_{i}"])
        flat = [
            tf.cast(tf.constant(arrays[f"stream_{i}"]), t.dtype)
            for i, t in enumerate(tf.nest.flatten(streams_template))
        ]
    return tf.nest.pack_sequence_as(streams_template, flat)


def read_arrays(folder: Path, prefix: str) -> dict[str, np.ndarray]:
    """The arrays of the checkpoint whose names start with `prefix` (e.g. NT-ASGD's `avg_`)."""
    with np.load(whole(folder) / ARRAYS_FILE) as arrays:
        return {k: arrays[k] for k in arrays.files if k.startswith(prefix)}
