"""Memory that does not grow with the corpus: nothing in a run copies the training split. Training
reads its BPTT windows one at a time from the ids as they are (memory-mapped from the cache), the
adaptive head counts them in pieces, and a cache hit hashes the corpus files in pieces.
(Figures: experiments/README.md, "Memory against corpus size".)"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_cfg
from omegaconf import OmegaConf

from lmbench.config import DatasetConfig
from lmbench.data.batching import as_streams, n_windows
from lmbench.data.pipeline import load_corpus
from lmbench.data.tokenizers import WordTokenizer
from lmbench.data.types import SPLITS
from lmbench.models.adaptive import frequency_rank
from lmbench.training.run import run
from lmbench.training.steps import bptt_windows


def traced_peak(fn) -> int:
    """The most bytes Python and NumPy held at once (beyond what they held before) during fn()."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_streams_are_a_view_of_the_ids_and_windows_are_the_zaremba_ones(dtype):
    ids = np.random.default_rng(0).integers(0, 60_000, 1003).astype(dtype)
    streams = as_streams(ids, batch_size=4, bptt=35)
    assert np.shares_memory(streams, ids) and streams.shape == (4, 250)  # uint16 ids were copied as int32
    rows = ids[:1000].astype(np.int32).reshape(4, 250)  # row b: tokens 250b .. 250b+249
    windows = list(bptt_windows(streams, 35))
    assert len(windows) == n_windows(250, 35) == 8  # 249 targets per row: 7 windows of 35, one of 4
    for k, (x, y) in enumerate(windows):
        size = min(35, 249 - 35 * k)
        assert x.dtype == y.dtype == tf.int32 and x.shape == y.shape == (4, size)
        np.testing.assert_array_equal(x.numpy(), rows[:, 35 * k : 35 * k + size])
        np.testing.assert_array_equal(y.numpy(), rows[:, 35 * k + 1 : 35 * k + 1 + size])
    resumed = list(bptt_windows(streams, 35, start=3, stop=5))  # a resumed epoch, max_steps inside it
    assert [x.numpy().tolist() for x, _ in resumed] == [x.numpy().tolist() for x, _ in windows[3:5]]


def test_a_run_never_makes_a_tensor_of_the_training_split(tmp_path, monkeypatch):
    """tf.data over tf.constant(streams) had held a second copy of the training ids (4 bytes a token)
    and read all of the memory map before the first step."""
    largest = []
    for name in ("constant", "convert_to_tensor"):
        make = getattr(tf, name)

        def spy(value, *args, _make=make, **kwargs):
            if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer):  # ids, not weights
                largest.append(value.size)
            return _make(value, *args, **kwargs)

        monkeypatch.setattr(tf, name, spy)
    cfg = tiny_cfg(tmp_path, "trainer.max_steps=5", "tracking=none", n_train=3000, n_eval=20)
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    train_tokens = len(load_corpus(cfg.dataset, WordTokenizer(), cache_dir=tmp_path / "cache").train)
    assert train_tokens > 15_000 and largest
    assert max(largest) <= 2 * 256  # a scoring window (eval_batch_size 2 x 256); training's are 4 x 8


def test_frequency_rank_does_not_copy_the_ids():
    ids = np.random.default_rng(0).integers(0, 1000, 4_000_000).astype(np.int32)  # 16 MB
    rank = frequency_rank(ids, 1000)
    assert traced_peak(lambda: frequency_rank(ids, 1000)) < ids.nbytes / 4  # an int64 copy: 32 MB
    counts = np.bincount(ids, minlength=1000)
    assert np.array_equal(np.argsort(rank), np.argsort(-counts, kind="stable"))


def test_a_cache_hit_does_not_read_the_corpus_into_memory(tmp_path, cache_dir):
    words = [f"w{i % 5000}" for i in range(1_000_000)]  # 6 MB of training text
    for split in SPLITS:
        text = " ".join(words if split == "train" else words[:1000])
        (tmp_path / f"{split}.txt").write_text(text + "\n", encoding="utf-8")
    cfg = OmegaConf.structured(DatasetConfig(name="big", **{s: str(tmp_path / f"{s}.txt") for s in SPLITS}))
    cold = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    size = (tmp_path / "train.txt").stat().st_size
    peak = traced_peak(lambda: load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir))
    assert peak < size / 4, peak  # reading the file whole to hash it: `size` bytes
    warm = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    assert warm.info["from_cache"] and np.array_equal(warm.train.ids, cold.train.ids)


def resident_file_bytes() -> int:
    """The file-backed part of this process's resident memory (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssFile:"))


@pytest.fixture
def mapped_ids(tmp_path):
    """32 MB of int32 ids, memory-mapped read-only as the token-id cache hands them out."""
    np.save(tmp_path / "train.npy", np.random.default_rng(0).integers(0, 1000, 8_000_000).astype(np.int32))
    return np.load(tmp_path / "train.npy", mmap_mode="r")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_counting_and_training_windows_do_not_leave_the_split_resident(mapped_ids, monkeypatch):
    from lmbench.data.mapped import count_ids, release
    from lmbench.training import steps

    before = resident_file_bytes()
    counts = count_ids(mapped_ids, 1000)
    assert resident_file_bytes() - before < mapped_ids.nbytes / 8
    assert np.array_equal(counts, np.bincount(mapped_ids, minlength=1000))  # (that read it all)
    assert resident_file_bytes() - before > mapped_ids.nbytes / 2  # what count_ids spares
    release(mapped_ids)
    assert resident_file_bytes() - before < mapped_ids.nbytes / 8

    monkeypatch.setattr(steps, "RELEASE_EVERY", 64)
    streams = as_streams(mapped_ids, batch_size=4, bptt=1000)
    windows = bptt_windows(streams, 1000)
    next(windows)  # TensorFlow's first op maps pages of its own libraries
    before = resident_file_bytes()
    *_, (_, targets) = windows  # the rest of the epoch
    assert resident_file_bytes() - before < mapped_ids.nbytes / 8
    np.testing.assert_array_equal(targets.numpy(), streams[:, -targets.shape[1] :])  # contents intact


def test_release_leaves_memory_that_is_no_read_only_map_alone():
    from lmbench.data.mapped import release

    ids = np.arange(1 << 20, dtype=np.int32)
    release(ids)  # anonymous memory: MADV_DONTNEED would zero it
    assert ids[-1] == (1 << 20) - 1 and ids.sum() == ids.size * (ids.size - 1) // 2


def test_saving_holds_one_copy_of_the_embedding_table_at_a_time(tmp_path):
    from lmbench.models.neural import NeuralLM
    from lmbench.models.recurrent import RecurrentLM

    head = {"kind": "adaptive", "cutoffs": [1000, 5000], "factor": 2.0}
    model = RecurrentLM(vocab_size=100_000, eos_id=0, embedding_dim=64, hidden_size=8, num_layers=1, head=head)
    model.build_for_inference()
    table = 100_000 * 64 * 4
    assert traced_peak(lambda: model.save(tmp_path)) < 1.5 * table  # Keras alone: two copies
    loaded = NeuralLM.load(tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True))
