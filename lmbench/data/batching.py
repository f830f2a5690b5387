"""Lay a token-id stream out for truncated BPTT (plain NumPy; the training loop makes tensors of one
window at a time, so no copy of the training split is ever made, whatever its size)."""

from __future__ import annotations

import numpy as np

from lmbench.errors import ConfigError


def as_streams(ids: np.ndarray, batch_size: int, bptt: int) -> np.ndarray:
    """Cut `ids` into `batch_size` contiguous streams, as rows of a [batch_size, L] view of `ids`.

    The Zaremba/PTB layout: row b holds tokens b*L .. (b+1)*L-1; the tail that does not fill a
    row is dropped (at most batch_size-1 training tokens). Hidden state flows along each row.
    Always a view, never a copy, in the ids' own dtype (read-only when the ids are the cache's
    memory map): `steps.bptt_windows` reads one BPTT window from it at a time.
    """
    if bptt <= 0:
        raise ConfigError(f"trainer.bptt must be a positive number of tokens, got {bptt}")
    if batch_size <= 0:
        raise ConfigError(f"trainer.batch_size must be positive, got {batch_size}")
    length = len(ids) // batch_size
    if length < 2:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is too large for the {len(ids)} training tokens: "
            f"each of the {batch_size} streams would hold {length} token(s), and a stream needs at "
            f"least 2 (one input, one target). Use trainer.batch_size <= {max(1, len(ids) // 2)}."
        )
    return ids[: length * batch_size].reshape(batch_size, length)


def n_windows(stream_length: int, bptt: int) -> int:
    """Number of BPTT windows in one pass over streams of `stream_length` tokens."""
    return -(-(stream_length - 1) // bptt)

