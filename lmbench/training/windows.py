"""Where an epoch's truncated-BPTT windows fall, and how many optimizer updates that makes.

Fixed windows (the default) are `trainer.bptt` tokens but an epoch's last (`batching.n_windows`).
With `trainer.variable_bptt` the lengths are Merity et al.'s (2018, section 4.1): each window is
`bptt` long with probability 0.95, else `bptt / 2`, then jittered, seq_len = max(5, int(N(that,
5))), the last clipped to the rest of the streams; the update's learning rate is scaled by
seq_len / bptt (the caller's part). The lengths of epoch e come from a generator seeded by (run
seed, e): the same at every resume, so `TrainState.step_in_epoch` (windows done) still says where
the data stands, and budgets in updates are exact before training starts.

Each distinct length is a traced training step of its own (static shapes let the recurrent layers
unroll): about 60 traces for bptt 70, each kept for the run (time and host memory).
"""

from __future__ import annotations

import numpy as np

from lmbench.data.batching import n_windows
from lmbench.training.steps import bptt_windows, windows_between

MIN_LENGTH = 5  # Merity et al.'s floor on a drawn window length
JITTER = 5.0  # the standard deviation of a window's length around bptt (or bptt / 2)
FULL_PROBABILITY = 0.95  # share of windows drawn around bptt rather than bptt / 2


def variable_lengths(stream_length: int, bptt: int, rng: np.random.Generator) -> np.ndarray:
    """Window lengths (int64) covering the `stream_length - 1` predicted positions of a stream."""
    positions = stream_length - 1
    draws = positions // MIN_LENGTH + 1  # enough windows, however short they come out
    centre = np.where(rng.random(draws) < FULL_PROBABILITY, float(bptt), bptt / 2.0)
    lengths = np.maximum(MIN_LENGTH, rng.normal(centre, JITTER).astype(np.int64))
    ends = np.cumsum(lengths)
    count = int(np.searchsorted(ends, positions)) + 1  # the first window that reaches the end
    lengths = lengths[:count].copy()
    lengths[-1] -= ends[count - 1] - positions
    return lengths


class WindowPlan:
    """The windows of every epoch over streams of `stream_length` tokens, grouped `accumulate` to an
    optimizer update."""

    def __init__(self, stream_length: int, bptt: int, accumulate: int = 1, variable: bool = False, seed: int = 0):
        self.stream_length, self.bptt, self.accumulate = stream_length, bptt, accumulate
        self.variable, self.seed = variable, seed
        self._cached: tuple[int, np.ndarray] | None = None

    def lengths(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s window lengths (variable windows only)."""
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached = (epoch, variable_lengths(self.stream_length, self.bptt, rng))
        return self._cached[1]

    def windows(self, epoch: int) -> int:
        return len(self.lengths(epoch)) if self.variable else n_windows(self.stream_length, self.bptt)

    def updates(self, epoch: int) -> int:
        return -(-self.windows(epoch) // self.accumulate)

    def updates_in(self, epochs: int, cap: int) -> int:
        """Updates of epochs 1..`epochs`; counting stops once past `cap` (a smaller budget's), so a
        figure above `cap` may be short of the whole count (it loses to `cap` either way)."""
        if not self.variable:
            return self.updates(1) * epochs
        total = 0
        for epoch in range(1, epochs + 1):
            total += self.updates(epoch)
            if total > cap:
                break
        return total

    def updates_for_tokens(self, tokens: int, batch_size: int, cap: int) -> int:
        """Updates until `tokens` training tokens were trained on (each epoch trains batch_size x
        (stream_length - 1) of them; an update takes `accumulate` windows, an epoch's last those left)."""
        epochs, rest = divmod(tokens, batch_size * (self.stream_length - 1))
        total = self.updates_in(epochs, cap) if epochs else 0
        if total > cap or not rest:
            return total
        if self.variable:
            ends = np.cumsum(self.lengths(epochs + 1)) * batch_size
            windows = int(np.searchsorted(ends, rest)) + 1
        else:
            windows = min(self.windows(1), -(-rest // (batch_size * self.bptt)))
        return total + -(-windows // self.accumulate)

    def iterate(self, streams: np.ndarray, epoch: int, start: int, stop: int):
        """(inputs, targets) int32 tensors of epoch `epoch`'s windows `start` .. `stop`-1."""
        if not self.variable:
            yield from bptt_windows(streams, self.bptt, start, stop)
            return
        bounds = np.concatenate([[0], np.cumsum(self.lengths(epoch))])
        yield from windows_between(streams, bounds, start, stop)
