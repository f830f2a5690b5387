"""Reading the cache's memory-mapped id arrays without keeping them resident.

The pages of a memory map that a process has read count in its resident memory (RSS) for as long as
they stay mapped, so a pass over a 71M-token training split (the adaptive softmax's counts) left
285 MB of it in the run's RSS, and an epoch of training windows would read all of it too.
`release` hands such pages back: they stay in the kernel's page cache, and a later read maps them
again, from memory when they are still cached. Only read-only file maps are released (a copy-on-write
map's pages may hold changes, and anonymous memory is no file's cache).
"""

from __future__ import annotations

import mmap

import numpy as np

COUNT_CHUNK = 1 << 18  # ids counted at once by `count_ids`: 2 MB as int64


def _read_only_map(ids: np.ndarray) -> mmap.mmap | None:
    """The file map under `ids` when it is (a view of) a read-only np.memmap, else None."""
    if not isinstance(ids, np.memmap) or ids.mode != "r" or not hasattr(mmap.mmap, "madvise"):
        return None
    base = ids
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, mmap.mmap) else None


def release(ids: np.ndarray) -> None:
    """Hand the whole pages that the bytes of `ids` (a contiguous 1-D array) span back to the
    kernel when `ids` is a read-only memory map; nothing otherwise. Contents never change."""
    mapped = _read_only_map(ids)
    if mapped is None or not ids.size:
        return
    origin = np.frombuffer(mapped, np.uint8).ctypes.data  # where the map starts
    lo = ids.ctypes.data - origin
    hi = lo + ids.size * ids.itemsize
    lo = -(-lo // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages only: the others hold ids next to them
    hi = hi // mmap.PAGESIZE * mmap.PAGESIZE
    if hi > lo:
        mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def count_ids(ids: np.ndarray, size: int) -> np.ndarray:
    """int64 [size]: how often each id occurs in `ids`, counted COUNT_CHUNK at a time (np.bincount
    converts its input to int64: a whole split would be copied at 8 bytes a token), each piece's
    pages released once counted."""
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(ids), COUNT_CHUNK):
        piece = ids[start : start + COUNT_CHUNK]
        counts += np.bincount(np.asarray(piece, np.int64), minlength=size)
        release(piece)
    return counts
