"""Writing a network's weights file (HDF5) on a disk that may be full.

Keras writes `.weights.h5` through h5py, straight into the file, and leaves the file open when a
write fails. HDF5 then tries again to write its metadata whenever one of the file's objects is
collected and when the library shuts down: with the disk still full, every try printed an
"Exception ignored in: 'h5py._objects.ObjectID.__dealloc__'" traceback, and the process crashed at
exit (SIGSEGV: exit 139 instead of lmbench's 2), after lmbench had said what was wrong.

So `guarded_write`: (1) refuses before anything is written when the filesystem has less room than
the weights need (an OSError ENOSPC naming the file, which the run reports in one paragraph); (2)
when a write fails anyway (the disk filled up meanwhile), points the file's descriptor at
/dev/null, so that HDF5's later writes succeed into nothing, closes the file and everything open in
it, and deletes what was written.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

HEADROOM = 1 << 18  # HDF5's own metadata beyond the arrays (and 4 KB a variable): a few KB for lmbench's models


def needed_bytes(variables: Iterable) -> int:
    total = HEADROOM
    for v in variables:
        try:
            size = np.dtype(str(v.dtype)).itemsize
        except TypeError:  # bfloat16 and other types NumPy does not name
            size = 4
        total += int(np.prod(v.shape)) * size + 4096
    return total


def check_room(path: Path, needed: int) -> None:
    try:
        free = os.statvfs(path.parent)
    except OSError:
        return  # the write itself says what is wrong with the folder
    room = free.f_bavail * free.f_frsize
    if room < needed:
        raise OSError(errno.ENOSPC, f"No space left on device: {needed / 1e6:,.1f} MB needed, "
                      f"{room / 1e6:,.1f} MB free", str(path))


def close_failed(path: Path) -> None:
    """Close the HDF5 file at `path` that a failed write left open, without writing to it again."""
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            if os.fsdecode(fid.name) != str(path):
                continue
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fid.get_vfd_handle())
            finally:
                os.close(devnull)
            h5py.File(fid).close()
        except Exception:  # noqa: BLE001 (best effort: the write's own error is what the user hears)
            continue
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def guarded_write(path: str | Path, variables: Iterable) -> Iterator[None]:
    """Write the HDF5 file `path` of `variables` inside this block (see the module docstring)."""
    path = Path(path)
    check_room(path, needed_bytes(variables))
    try:
        yield
    except BaseException:
        close_failed(path)
        raise
