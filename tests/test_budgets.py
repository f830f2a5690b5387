"""Budgets (trainer.max_tokens, trainer.max_time) and training-data size (dataset.train_fraction,
dataset.max_train_tokens), on a tiny corpus the tests write, through real runs and MLflow."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import only_run, tiny_cfg, write_corpus
from omegaconf import OmegaConf

from lmbench.config import TrainerConfig
from lmbench.data.pipeline import load_corpus
from lmbench.data.subset import train_subset
from lmbench.data.tokenizers import WordTokenizer
from lmbench.errors import ConfigError
from lmbench.training import neural_loop
from lmbench.training.neural_loop import NeuralLoop
from lmbench.training.run import run
from lmbench.training.steps import schedule_factor

NO_MODEL = ("tracking.log_model=false", "tracking.log_token_scores=false")


def test_max_tokens_stops_at_the_step_that_reaches_it_across_epochs(tmp_path):
    """Windows of 4 streams x 8 tokens; the last window of an epoch is shorter. A budget of one
    epoch and 100 tokens more ends 4 windows (128 tokens) into epoch 2."""
    cfg = tiny_cfg(tmp_path, "trainer.max_epochs=5", *NO_MODEL)
    data = load_corpus(cfg.dataset, WordTokenizer(), cache_dir=tmp_path / "cache")
    stream = len(data.train) // 4
    per_epoch, epoch_tokens = -(-(stream - 1) // 8), 4 * (stream - 1)
    cfg.trainer.max_tokens = epoch_tokens + 100
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    assert r.data.tags["lmbench.stop_reason"] == "max_tokens"
    assert summary["train/tokens"] == epoch_tokens + 4 * 32
    [last] = [h.step for h in client.get_metric_history(r.info.run_id, "train/loss")][-1:]
    assert last == per_epoch + 4


def test_max_time_stops_at_the_first_step_past_the_budget(tmp_path, monkeypatch):
    """The clock is the training steps' own time (scoring excluded): the run stops after the step
    during which it reached max_time, not one later; it still validates, tests and is FINISHED.
    The loop's clock is a fake one that moves 0.7 s a reading, so that the steps' time does not
    depend on the machine's load (a loaded machine's first step, tracing included, had taken more
    than the whole budget)."""
    seen = []
    step = NeuralLoop._step
    clock = iter(np.arange(1_000_000) * 0.7)
    monkeypatch.setattr(neural_loop, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))

    def timed_step(self, state, *args):
        out = step(self, state, *args)
        seen.append(state.train_seconds)
        return out

    monkeypatch.setattr(NeuralLoop, "_step", timed_step)
    cfg = tiny_cfg(tmp_path, "trainer.max_epochs=100000", "trainer.max_time=3", *NO_MODEL)
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert seen == pytest.approx([0.7 * k for k in range(1, 6)])  # 3.5 s: the first step past 3
    assert seen[-2] < 3 <= seen[-1] == pytest.approx(summary["time/train_s"])
    client, r = only_run(cfg.tracking.uri)
    assert r.info.status == "FINISHED" and r.data.tags["lmbench.stop_reason"] == "max_time"
    assert "test/ppl" in r.data.metrics
    # without validate_every_n_steps a timed run validates at each quarter of its budget too
    # (0.75, 1.5, 2.25 s: after steps 2, 3 and 4)
    quarters = [h.step for h in client.get_metric_history(r.info.run_id, "valid_step/ppl")]
    assert quarters == [2, 3, 4]


def test_cosine_follows_the_share_of_time_when_it_runs_ahead():
    cfg = OmegaConf.structured(TrainerConfig(lr_schedule="cosine", warmup_steps=0, min_lr_ratio=0.0))
    assert schedule_factor(cfg, 10, 1000) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.01)))
    assert schedule_factor(cfg, 10, 1000, time_fraction=0.5) == pytest.approx(0.5)
    assert schedule_factor(cfg, 10, 1000, time_fraction=1.2) == pytest.approx(0.0)
    assert schedule_factor(cfg, 900, 1000, time_fraction=0.5) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.9)))


def test_train_fraction_keeps_the_first_lines_and_the_whole_vocabulary(tmp_path):
    paths = write_corpus(tmp_path, n_train=400)
    cfg = tiny_cfg(tmp_path, *NO_MODEL)
    full = load_corpus(cfg.dataset, WordTokenizer(), cache_dir=tmp_path / "cache")
    lines = paths["train"].read_text().splitlines()
    for fraction in (0.25, 0.5, 1 / 32):
        part = train_subset(full, fraction)
        kept = lines[: int(len(lines) * fraction)]
        assert len(part.train) == sum(len(line.split()) + 1 for line in kept)  # + <eos> per line
        assert np.array_equal(part.train.ids, full.train.ids[: len(part.train)])
        assert part.vocab is full.vocab and part.valid is full.valid and part.test is full.test
        assert part.train.n_chars == sum(len(line) + 1 for line in kept)
    assert train_subset(full, 1.0) is full
    # max_train_tokens: whole lines, as many as fit
    budget = 50
    part = train_subset(full, 1.0, max_tokens=budget)
    ends = np.cumsum([len(line.split()) + 1 for line in lines])
    assert len(part.train) == ends[ends <= budget][-1]


def test_a_smaller_train_fraction_trains_on_fewer_tokens_and_scores_the_same_ids(tmp_path):
    summaries, runs = {}, {}
    for fraction in (1.0, 0.25):
        folder = tmp_path / str(fraction)
        cfg = tiny_cfg(folder, f"dataset.train_fraction={fraction}", *NO_MODEL, model=("model=ngram",))
        summaries[fraction] = run(cfg, output_dir=folder / "out", launch_dir=folder)
        runs[fraction] = only_run(cfg.tracking.uri)[1]
    full, quarter = runs[1.0].data, runs[0.25].data
    assert int(quarter.params["data.train_tokens"]) < int(full.params["data.train_tokens"]) / 3
    assert quarter.params["data.train_tokens_full"] == full.params["data.train_tokens"]
    assert quarter.params["data.vocab_size"] == full.params["data.vocab_size"]
    assert quarter.tags["lmbench.scored_ids.test"] == full.tags["lmbench.scored_ids.test"]
    assert summaries[0.25]["train/tokens"] == int(quarter.params["data.train_tokens"])
    assert np.isfinite(summaries[0.25]["test/ppl"])


def test_an_ngram_counts_its_whole_split_whatever_the_budgets(tmp_path):
    """Budgets are a network's compute: a token budget in a sweep must not shrink the n-gram's data
    (dataset.max_train_tokens does, for every family)."""
    cfg = tiny_cfg(tmp_path, "trainer.max_tokens=300", "trainer.max_time=0.001", *NO_MODEL, model=("model=ngram",))
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    assert summary["train/tokens"] == int(r.data.params["data.train_tokens"]) > 300
    assert r.data.tags["lmbench.stop_reason"] == "one_pass"


@pytest.mark.parametrize(
    "override, words",
    [
        ("trainer.max_time=0", "trainer.max_time must be a number > 0"),
        ("trainer.max_tokens=0", "trainer.max_tokens must be >= 1"),
        ("trainer.peak_flops=-5", "trainer.peak_flops must be a number > 0"),
        ("dataset.train_fraction=0", "dataset.train_fraction must be in (0, 1]"),
        ("dataset.train_fraction=1.5", "dataset.train_fraction must be in (0, 1]"),
        ("dataset.max_train_tokens=0", "dataset.max_train_tokens must be >= 1"),
    ],
)
def test_budget_values_out_of_range_are_refused_before_any_run(tmp_path, override, words):
    cfg = tiny_cfg(tmp_path, override)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()  # nothing reaches MLflow before the checks
