"""The report's statistics (lmbench/stats.py): blocks of lines, mean ± sd, and the paired bootstrap
checked against a direct computation on the same draws, on hand-made per-line scores."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmbench import stats

REPO = Path(__file__).resolve().parent.parent


def test_lines_join_into_blocks_of_enough_tokens_and_a_short_remainder_joins_the_last():
    assert stats.blocks(np.array([3, 2, 60, 1, 1, 4]), 5).tolist() == [0, 0, 1, 2, 2, 2]
    assert stats.blocks(np.array([5, 5, 2]), 5).tolist() == [0, 1, 1]  # 2 tokens left: no block of their own
    assert stats.blocks(np.array([1, 1]), 5).tolist() == [0, 0]  # too short for two blocks: one


def test_mean_and_sample_sd():
    assert stats.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert stats.mean_sd([5.0]) == (5.0, None)


def split_of(line_nats: list[np.ndarray], line_tokens: np.ndarray, line_chars: np.ndarray, min_tokens: int):
    return stats.PairedSplit.of([np.asarray(n, float) for n in line_nats], line_tokens, line_chars, min_tokens)


def test_the_vectorized_bootstrap_is_a_loop_over_the_same_draws():
    """Three runs of 40 lines, groups [run 0] and [runs 1, 2] (two seeds), 2,500 resamples (three
    chunks of draws): every replicate recomputed from the lines with a Python loop over the draws the
    docstring lists, in its order, gives the same interval to 1e-9."""
    rng = np.random.default_rng(0)
    line_tokens = rng.integers(1, 9, 40)
    line_chars = line_tokens * 5 + rng.integers(0, 4, 40)
    nats = [rng.gamma(2.0, 2.0, 40) * line_tokens for _ in range(3)]
    groups, resamples, seed, min_tokens = [[0], [1, 2]], 2_500, 7, 12
    boot = stats.PairedBootstrap(split_of(nats, line_tokens, line_chars, min_tokens), groups, resamples, seed)
    got = boot.difference(1, 0)

    block = stats.blocks(line_tokens, min_tokens)
    lines_of = [np.flatnonzero(block == b).tolist() for b in range(block.max() + 1)]
    draws = np.random.default_rng(seed)
    drawn = np.concatenate([
        draws.integers(0, len(lines_of), size=(min(stats.CHUNK, resamples - start), len(lines_of)))
        for start in range(0, resamples, stats.CHUNK)
    ])
    seeds = draws.integers(0, 2, size=(resamples, 2))
    bpc, loss = [], []
    for r in range(resamples):
        run_nats, tokens, chars = [0.0, 0.0, 0.0], 0, 0
        for b in drawn[r]:
            for line in lines_of[b]:
                for run in range(3):
                    run_nats[run] += nats[run][line]
                tokens += line_tokens[line]
                chars += line_chars[line]
        two_seeds = (run_nats[1 + seeds[r, 0]] + run_nats[1 + seeds[r, 1]]) / 2
        bpc.append((two_seeds - run_nats[0]) / math.log(2) / chars)
        loss.append((two_seeds - run_nats[0]) / tokens)
    gap = (nats[1].sum() + nats[2].sum()) / 2 - nats[0].sum()
    assert got.bpc.estimate == pytest.approx(gap / math.log(2) / line_chars.sum(), rel=1e-12)
    assert got.loss.estimate == pytest.approx(gap / line_tokens.sum(), rel=1e-12)
    assert [got.bpc.low, got.bpc.high] == pytest.approx(np.quantile(bpc, [0.025, 0.975]), rel=1e-9)
    assert [got.loss.low, got.loss.high] == pytest.approx(np.quantile(loss, [0.025, 0.975]), rel=1e-9)


def two_runs(gap_per_line: np.ndarray, n_lines: int = 400):
    """Run a scores each line like a shared difficulty; run b adds `gap_per_line` to it."""
    rng = np.random.default_rng(1)
    line_tokens = rng.integers(5, 40, n_lines)
    hard = rng.gamma(3.0, 1.5, n_lines) * line_tokens
    return split_of([hard, hard + gap_per_line], line_tokens, line_tokens * 5, 50)


def test_a_consistent_difference_is_significant_and_a_cancelling_one_is_not():
    rng = np.random.default_rng(2)
    better = two_runs(0.2 + rng.normal(0.0, 1.0, 400))  # b worse on average, noisily
    d = stats.PairedBootstrap(better, [[0], [1]]).difference(1, 0)
    assert d.bpc.low > 0 and d.loss.low > 0 and d.bpc.significant
    assert d.bpc.low < d.bpc.estimate < d.bpc.high

    cancelling = two_runs(np.tile([3.0, -3.0], 200))  # b worse on one line, better on the next
    d = stats.PairedBootstrap(cancelling, [[0], [1]]).difference(1, 0)
    assert d.bpc.estimate == pytest.approx(0.0, abs=1e-12)
    assert d.bpc.low < 0 < d.bpc.high and not d.bpc.significant


def test_seeds_that_disagree_widen_the_interval():
    """The same mean over three seeds, once with every seed scoring alike and once with the seeds
    apart by ±0.05 nats per token: the two-level bootstrap's interval against a fourth run widens."""
    rng = np.random.default_rng(3)
    line_tokens = rng.integers(5, 40, 600)
    hard = rng.gamma(3.0, 1.5, 600) * line_tokens
    noise = [rng.normal(0.0, 0.5, 600) for _ in range(3)]
    alike = [hard + 0.05 * line_tokens + n for n in noise]
    apart = [a + shift * line_tokens for a, shift in zip(alike, (-0.05, 0.0, 0.05))]
    widths, estimates = {}, {}
    for name, seeds in (("alike", alike), ("apart", apart)):
        split = split_of([hard, *seeds], line_tokens, line_tokens * 5, 50)
        d = stats.PairedBootstrap(split, [[0], [1, 2, 3]]).difference(1, 0).bpc
        widths[name], estimates[name] = d.high - d.low, d.estimate
    assert estimates["apart"] == pytest.approx(estimates["alike"], rel=1e-12)  # the shifts cancel in the mean
    assert estimates["alike"] == pytest.approx(0.05 / math.log(2) / 5, rel=0.05)
    print(f"\n95 % interval width, seeds alike: {widths['alike']:.4f} bits/char; apart: {widths['apart']:.4f}")
    assert widths["apart"] > 2 * widths["alike"]


def ptb_sized(n_runs: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per-line nats of `n_runs` runs on PTB's test split's shape: 82,430 tokens in 3,761 lines."""
    line_tokens = rng.multinomial(82_430 - 3_761, np.full(3_761, 1 / 3_761)) + 1
    hard = rng.gamma(3.0, 1.5, 3_761) * line_tokens
    return [hard * (1 + 0.01 * i) + rng.normal(0, 1, 3_761) for i in range(n_runs)], line_tokens, line_tokens * 5


def test_ten_thousand_resamples_of_ten_runs_on_ptb_test_take_seconds():
    """The target is under 5 s on PTB test with 10,000 resamples and about 10 runs (here 4 groups: three
    of three seeds and one run, compared with the best); asserted generously for a busy machine."""
    line_nats, line_tokens, line_chars = ptb_sized(10, np.random.default_rng(4))
    start = time.perf_counter()
    split = stats.PairedSplit.of(line_nats, line_tokens, line_chars)
    boot = stats.PairedBootstrap(split, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]], resamples=10_000)
    differences = [boot.difference(g, 0) for g in (1, 2, 3)]
    seconds = time.perf_counter() - start
    print(f"\n10,000 resamples, 10 runs in 4 groups, {len(split.chars)} blocks of PTB-sized lines: {seconds:.2f} s")
    assert len(split.chars) > 1_000  # blocks of >= 50 tokens
    assert all(d.bpc.significant for d in differences)
    assert seconds < 20


def test_the_statistics_load_neither_tensorflow_nor_mlflow():
    """lmbench/stats.py is pure NumPy (the layer contracts in pyproject.toml name the packages that
    may import MLflow or TensorFlow; this module is checked here by what importing it loads)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, lmbench.stats; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout.split()
    assert not {"tensorflow", "keras", "mlflow", "lmbench.scoring", "lmbench.tracking"} & set(loaded)
