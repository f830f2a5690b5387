"""How sure a comparison is: mean ± sd over seeds, and paired bootstrap intervals over lines.

Every run scores the same token ids of a split, so two runs can be compared line by line: the
paired bootstrap (Koehn 2004) resamples the lines of the test split with replacement, computes each
run's figures on every resample, and takes the 2.5 and 97.5 percentiles of the difference as the
95 % interval. Both runs see the same resampled lines, so what the lines have in common (a hard
line is hard for every model) cancels, and the interval is far narrower than two separate ones.

Lines are resampled in blocks of consecutive lines holding at least `BLOCK_TOKENS` tokens. A
recurrent model carries its state across lines and a Transformer attends across them, so a line's
score depends on its neighbours; and PTB's lines are short (22 tokens on average), so resampling
single lines would treat correlated neighbours as independent and give too narrow an interval.
50 tokens exceed the 35-token window the networks train on (`trainer.bptt`; the Transformer's
context), so most of what ties a line to its neighbours stays inside its block, while PTB's test
split (3,761 lines) still gives 1,318 blocks to resample. A line longer than a block is a block of
its own.

A group of runs that differ only in their seed is one contender. Each bootstrap replicate then
also draws the group's seeds with replacement and averages the drawn seeds' per-line nats: a
two-level bootstrap (seeds, then lines), so that the interval carries how much the seeds disagree
and not only how much the lines vary. Seeds are drawn independently per group: seed 1 of one
model has nothing in common with seed 1 of another.

Pure NumPy on arrays: the report reads them from the runs' `token_scores/test.npz`
(`scoring.TokenScores`); this module knows neither MLflow nor TensorFlow nor the file format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BLOCK_TOKENS = 50  # tokens a block of lines holds at least (see above)
RESAMPLES = 10_000
SEED = 1234
CONFIDENCE = 0.95
CHUNK = 1_000  # replicates drawn at once: a [1000, blocks] count matrix, 12 MB for PTB's test split


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n - 1); no sd for a single value."""
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def blocks(line_tokens: np.ndarray, min_tokens: int = BLOCK_TOKENS) -> np.ndarray:
    """The block of each line: consecutive lines joined until a block holds `min_tokens` tokens;
    a shorter remainder at the end of the split joins the block before it."""
    block = np.empty(len(line_tokens), dtype=np.int64)
    current, held = 0, 0
    for i, n in enumerate(line_tokens.tolist()):  # one pass over the lines: 4k for PTB test, a few ms
        block[i] = current
        held += n
        if held >= min_tokens:
            current, held = current + 1, 0
    if held and current:
        block[block == current] = current - 1
    return block


@dataclass(frozen=True)
class PairedSplit:
    """Runs that scored the same token ids, summed per block: what the bootstrap resamples."""

    nats: np.ndarray  # float64 [blocks, runs]
    tokens: np.ndarray  # float64 [blocks]
    chars: np.ndarray  # float64 [blocks]

    @classmethod
    def of(
        cls, line_nats: list[np.ndarray], line_tokens: np.ndarray, line_chars: np.ndarray,
        min_tokens: int = BLOCK_TOKENS,
    ) -> PairedSplit:
        """From each run's nats per line (the same lines: runs whose scored ids are equal) and the
        lines' tokens and characters."""
        block = blocks(line_tokens, min_tokens)

        def per_block(line_values: np.ndarray) -> np.ndarray:
            return np.bincount(block, weights=np.asarray(line_values, dtype=np.float64))

        return cls(np.column_stack([per_block(n) for n in line_nats]), per_block(line_tokens), per_block(line_chars))


@dataclass(frozen=True)
class Interval:
    estimate: float  # on the split itself
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Difference:
    """Group a minus group b: lower is better for a."""

    bpc: Interval  # bits per character
    loss: Interval  # nats per token, which is the difference in log perplexity


class PairedBootstrap:
    """Replicates of every group's nats on resampled blocks, drawn once and shared by every pair,
    so that all comparisons of one report rest on the same resamples.

    The draws, in order, from `numpy.random.default_rng(seed)`: for each chunk of up to CHUNK
    replicates, `integers(0, blocks, (chunk, blocks))` (the blocks of each replicate); then for each
    group of n > 1 runs, `integers(0, n, (resamples, n))` (the seeds each replicate averages).
    """

    def __init__(self, split: PairedSplit, groups: list[list[int]], resamples: int = RESAMPLES, seed: int = SEED):
        self.split, self.groups = split, groups
        rng = np.random.default_rng(seed)
        n_blocks = len(split.chars)
        values = np.column_stack([split.nats, split.tokens, split.chars])
        sums = np.empty((resamples, values.shape[1]))
        for start in range(0, resamples, CHUNK):
            drawn = rng.integers(0, n_blocks, size=(min(CHUNK, resamples - start), n_blocks))
            sums[start:start + len(drawn)] = block_counts(drawn, n_blocks) @ values
        run_nats = sums[:, :-2]
        self.tokens, self.chars = sums[:, -2], sums[:, -1]
        # A replicate's group nats: the mean over its drawn seeds of their resampled totals, which
        # is the resampled total of the drawn seeds' mean per-line nats (the sums are linear).
        self.nats = np.column_stack([_seed_mean(run_nats[:, g], rng) for g in groups])

    def difference(self, a: int, b: int, confidence: float = CONFIDENCE) -> Difference:
        """Group `a` minus group `b` (indices into `groups`)."""
        totals = self.split.nats.sum(axis=0)
        gap = totals[self.groups[a]].mean() - totals[self.groups[b]].mean()
        replicated = self.nats[:, a] - self.nats[:, b]
        tails = [(1 - confidence) / 2, (1 + confidence) / 2]

        def interval(estimate: float, replicates: np.ndarray) -> Interval:
            low, high = np.quantile(replicates, tails)
            return Interval(float(estimate), float(low), float(high))

        return Difference(
            bpc=interval(gap / math.log(2) / self.split.chars.sum(), replicated / math.log(2) / self.chars),
            loss=interval(gap / self.split.tokens.sum(), replicated / self.tokens),
        )


def block_counts(drawn: np.ndarray, n_blocks: int) -> np.ndarray:
    """How often each replicate (row of `drawn`) drew each block, as float64 [replicates, blocks]:
    one bincount over all rows at once (each row offset by its own range of bins)."""
    offsets = np.arange(len(drawn))[:, None] * n_blocks
    counts = np.bincount((drawn + offsets).ravel(), minlength=drawn.size)
    return counts.reshape(drawn.shape).astype(np.float64)


def _seed_mean(nats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[replicates] from [replicates, seeds]: each replicate's mean over seeds drawn with
    replacement; a group of one run has nothing to draw."""
    n = nats.shape[1]
    if n == 1:
        return nats[:, 0]
    picks = rng.integers(0, n, size=(len(nats), n))
    return np.take_along_axis(nats, picks, axis=1).mean(axis=1)
