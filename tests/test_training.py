"""The common trainer end to end on a tiny corpus the test writes: real training, real MLflow run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import logged_bundle_files, only_run, tiny_cfg

from lmbench.data import Split
from lmbench.errors import TrainingDiverged
from lmbench.models.neural import pack_streams, stream_starts
from lmbench.scoring import evaluate
from lmbench.training.run import run


def test_tiny_lstm_learns_and_is_tracked(tmp_path):
    cfg = tiny_cfg(tmp_path, "trainer.max_epochs=2")
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)

    # 9 word types + <eos> = 10 (no <unk>: valid and test use only training words); uniform guessing
    # has ppl 10. The grammar's entropy is 2 bits per ~7-token sentence, so a model that learned
    # anything is far below 10.
    assert summary["test/ppl"] < 4.0
    client, r = only_run(cfg.tracking.uri)
    assert r.info.status == "FINISHED"
    m = r.data.metrics
    for key in ("test/loss", "test/ppl", "test/bpc", "train/tokens_per_sec", "model/params",
                "time/train_s", "valid/loss", "valid/ppl", "best_valid/ppl"):
        assert key in m, key
    assert m["test/ppl"] == pytest.approx(summary["test/ppl"])
    # Tied 1x32 LSTM over |V| = 10: embedding 10*32 + LSTM 4*(32*32 + 32*32 + 32) + output bias 10.
    assert m["model/params"] == 10 * 32 + 4 * (32 * 32 * 2 + 32) + 10
    assert m["test/ppl"] == pytest.approx(math.exp(m["test/loss"]))
    assert r.data.tags["lmbench.family"] == "lstm"
    assert r.data.tags["lmbench.dataset"] == "text_files"
    assert r.data.tags["mlflow.runName"].startswith("lstm-text_files-")

    # train/loss every 10 steps (plus the last step); valid per epoch at steps 1 and 2.
    train_tokens = int(r.data.params["data.train_tokens"])
    steps_per_epoch = -(-(train_tokens // 4 - 1) // 8)  # windows of 8 over 4 streams
    train_hist = client.get_metric_history(r.info.run_id, "train/loss")
    steps = [h.step for h in train_hist]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert all(s % 10 == 0 for s in steps[:-1])
    assert steps[-1] == 2 * steps_per_epoch
    assert len(steps) == 2 * steps_per_epoch // 10 + (2 * steps_per_epoch % 10 != 0)
    valid_hist = client.get_metric_history(r.info.run_id, "valid/ppl")
    assert sorted(h.step for h in valid_hist) == [1, 2]

    artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "vocab.json"} <= artifacts
    bundle = logged_bundle_files(cfg.tracking.uri, r.info.run_id, tmp_path)
    assert {"model.weights.h5", "model_config.json", "vocab.json", "lmbench_model.json"} <= bundle
    assert (tmp_path / "out" / "config.yaml").exists()


def test_max_steps_stops_mid_epoch_and_still_validates(tmp_path):
    cfg = tiny_cfg(tmp_path, "trainer.max_epochs=5", "trainer.max_steps=7")
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    steps = [h.step for h in client.get_metric_history(r.info.run_id, "train/loss")]
    assert steps == [7]  # only the final step, since 7 < log_every_n_steps
    assert [h.step for h in client.get_metric_history(r.info.run_id, "valid/ppl")] == [1]


def test_nan_loss_marks_run_failed_and_keeps_what_was_logged(tmp_path):
    cfg = tiny_cfg(
        tmp_path, "optimizer=sgd", "optimizer.learning_rate=1e38", "trainer.clip_norm=null",
        "tracking.log_every_n_steps=1", "trainer.max_epochs=3",
    )
    with pytest.raises(TrainingDiverged) as info:
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    assert r.info.status == "FAILED"
    assert "lower optimizer.learning_rate" in r.data.tags["lmbench.error"]
    assert int(r.data.tags["lmbench.failed_step"]) == info.value.step
    # The steps before the NaN were logged and are still there.
    logged = client.get_metric_history(r.info.run_id, "train/loss")
    assert [h.step for h in logged] == list(range(1, info.value.step))


def test_seeded_runs_repeat(tmp_path):
    a = run(tiny_cfg(tmp_path / "a", "trainer.max_steps=20", "tracking=none"), tmp_path / "a/out", tmp_path / "a")
    b = run(tiny_cfg(tmp_path / "b", "trainer.max_steps=20", "tracking=none"), tmp_path / "b/out", tmp_path / "b")
    assert a["test/loss"] == pytest.approx(b["test/loss"], rel=1e-5)


class Uniform:
    """A model that gives every token probability 1/V: its perplexity is exactly V."""

    family = "uniform"

    def __init__(self, vocab_size):
        self.vocab_size = vocab_size

    def score(self, ids, *, batch_size=None, progress=None):
        return np.full(len(ids), -math.log(self.vocab_size))


def test_evaluator_scores_every_token_once():
    ids = np.array([3, 4, 0, 5, 0, 3, 3, 0], dtype=np.uint16)
    res = evaluate(Uniform(7), Split("test", ids, n_chars=20), show_progress=False)
    assert res.tokens == 8
    assert res.ppl == pytest.approx(7.0, rel=1e-12)
    assert res.bpc == pytest.approx(8 * math.log2(7) / 20, rel=1e-12)


def test_streams_start_after_sentence_boundaries():
    eos = 0
    ids = np.array([5, 6, 0, 7, 0, 8, 9, 9, 0, 4, 0, 6, 0], dtype=np.int64)
    starts = stream_starts(ids, 3, eos)
    assert starts[0] == 0 and all(ids[s - 1] == eos for s in starts[1:])
    inputs, targets, mask = pack_streams(ids, starts, eos)
    assert mask.sum() == len(ids)
    np.testing.assert_array_equal(targets[mask], ids)  # each token exactly once, in order
    assert (inputs[:, 0] == eos).all()


def test_neural_score_matches_token_by_token_probabilities(tmp_path):
    """Batched stream scoring equals a plain loop over single tokens with the carried state."""
    import tensorflow as tf

    from lmbench.models.recurrent import RecurrentLM

    model = RecurrentLM(vocab_size=9, eos_id=0, hidden_size=8, embedding_dim=8, num_layers=2)
    ids = np.array([3, 4, 0, 5, 6, 7, 0, 8, 0], dtype=np.int64)
    fast = model.score(ids, batch_size=1)
    states, prev, slow = model.initial_state(1), 0, []
    for t in ids:
        hidden, states = model(tf.constant([[prev]]), states=states)
        slow.append(model.output_head.log_probs(hidden[0, -1:])[0, t].numpy())
        prev = t
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)


def test_ngram_runs_through_the_same_trainer_and_tracker(tmp_path):
    from lmbench.data.pipeline import load_corpus
    from lmbench.data.tokenizers import WordTokenizer
    from lmbench.models.ngram import NGramLM

    cfg = tiny_cfg(tmp_path, "trainer.export_arpa=true", model=("model=ngram", "model.order=3"))
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)

    # The same figure computed directly from the model, outside the trainer.
    data = load_corpus(cfg.dataset, WordTokenizer(), cache_dir=tmp_path / "cache")
    model = NGramLM(len(data.vocab), data.vocab.eos_id, order=3)
    model.fit(data.train.ids)
    direct = -model.score(data.test.ids).mean()
    assert summary["test/loss"] == pytest.approx(direct, rel=1e-12)

    client, r = only_run(cfg.tracking.uri)
    assert r.info.status == "FINISHED"
    assert r.data.tags["lmbench.family"] == "ngram"
    for key in ("valid/ppl", "test/ppl", "test/bpc", "time/train_s", "model/params",
                "ngrams/order1", "ngrams/order3"):
        assert key in r.data.metrics, key
    assert "model.arpa" in logged_bundle_files(cfg.tracking.uri, r.info.run_id, tmp_path)


def test_export_arpa_refused_for_a_neural_model_before_anything_is_logged(tmp_path):
    from lmbench.errors import ConfigError

    cfg = tiny_cfg(tmp_path, "trainer.export_arpa=true")
    with pytest.raises(ConfigError, match="no ARPA form"):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()


def test_integer_learning_rate_from_the_command_line_is_accepted(tmp_path):
    cfg = tiny_cfg(tmp_path, "optimizer=sgd", "optimizer.learning_rate=2", "trainer.max_steps=3", "tracking=none")
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)


def test_bad_optimizer_config_fails_before_a_run_is_created(tmp_path):
    from lmbench.errors import ConfigError

    cfg = tiny_cfg(tmp_path, "optimizer=sgd", "optimizer.learning_rate=fast")
    with pytest.raises(ConfigError, match="optimizer"):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()


def test_a_validation_observer_stops_training_but_not_after_its_last_step(tmp_path):
    """The hook a search's pruner uses (training/result.py: ValidationObserver): asked to stop at
    the periodic validation of step 2, the run ends KILLED there, tagged, keeping its metrics; asked
    at the last validation only, it finishes and is tested as usual (stopping would save nothing)."""
    from lmbench.training.result import TrainingStopped

    seen = []

    def stop(step, valid):
        seen.append((step, valid.ppl))
        return "told to stop"

    cfg = tiny_cfg(tmp_path / "a", "trainer.max_steps=6", "trainer.validate_every_n_steps=2",
                   "tracking.log_every_n_steps=1", "tracking.log_model=false")
    with pytest.raises(TrainingStopped) as info:
        run(cfg, output_dir=tmp_path / "a" / "out", launch_dir=tmp_path / "a", observer=stop)
    assert (info.value.step, info.value.train_tokens) == (2, 2 * 4 * 8) and [s for s, _ in seen] == [2]
    client, r = only_run(cfg.tracking.uri)
    assert r.info.status == "KILLED" and r.data.tags["lmbench.stopped_at_step"] == "2"
    assert r.data.tags["lmbench.stop_reason"] == "told to stop" and r.data.metrics["train/tokens"] == 64
    [valid] = client.get_metric_history(r.info.run_id, "valid_step/ppl")
    assert (valid.step, valid.value) == (2, pytest.approx(seen[0][1]))
    assert "test/ppl" not in r.data.metrics

    seen.clear()  # one whole epoch, validated at its end only (a run cut inside epoch 1 validates 4 times)
    cfg = tiny_cfg(tmp_path / "b", "tracking.log_model=false")
    summary = run(cfg, output_dir=tmp_path / "b" / "out", launch_dir=tmp_path / "b", observer=stop)
    [(last, _)] = seen  # asked once, at the epoch's end: its last step, so it was not stopped
    assert last == summary["train/tokens"] // (4 * 8) + 1 and "test/ppl" in summary  # the last window is short
