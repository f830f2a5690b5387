"""AWD-LSTM (Merity et al. 2018) in the recurrent family and NT-ASGD in the trainer: each mask, penalty
and switch asserted on numbers; a preset run through MLflow."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import compose_tiny, lmbench, only_run, tiny_cfg

from lmbench.artifacts.bundle import load_bundle
from lmbench.config import check_values
from lmbench.errors import ConfigError
from lmbench.models import recurrent
from lmbench.models.neural import NeuralLM
from lmbench.models.recurrent import RecurrentLM
from lmbench.models.regularization import activation_penalty, embedding_dropout, locked_dropout
from lmbench.training import checkpoints
from lmbench.training.averaging import WeightAverage, should_switch
from lmbench.training.neural_loop import NeuralLoop
from lmbench.training.run import run
from lmbench.training.windows import WindowPlan, variable_lengths

V = 30


def awd(**options) -> RecurrentLM:
    keras.utils.set_random_seed(0)
    model = RecurrentLM(V, 0, embedding_dim=6, hidden_size=8, num_layers=2, **options)
    model.build_for_inference()
    return model


def ids(batch: int, steps: int, seed: int = 0):
    return tf.constant(np.random.default_rng(seed).integers(0, V, (batch, steps)), tf.int32)


def test_weight_drop_draws_one_mask_per_window_shared_by_its_time_steps(monkeypatch):
    """A 70-step window is unrolled in two pieces (64 + 6 steps): both get the same masked kernel,
    the next window another; half the weights dropped, the rest doubled; none when scoring."""
    seen = []

    def recording(cell, x, state, recurrent=None):
        seen.append((cell, recurrent))
        return unrolled(cell, x, state, recurrent)

    unrolled = recurrent.unrolled_lstm
    monkeypatch.setattr(recurrent, "unrolled_lstm", recording)
    model = awd(weight_drop=0.5)
    seen.clear()
    for _ in range(2):
        model(ids(3, 70), states=model.initial_state(3), training=True)
    assert len(seen) == 2 * 2 * 2  # windows x layers x pieces
    kernel = seen[0][0].recurrent_kernel.numpy()
    masks = [r.numpy() / kernel for c, r in seen if c is seen[0][0]]  # layer 1's, per piece
    assert np.array_equal(masks[0], masks[1]) and np.array_equal(masks[2], masks[3])  # one per window
    assert not np.array_equal(masks[0], masks[2])  # a new one for the next window
    assert set(np.round(np.unique(masks[0]), 5)) == {0.0, 2.0}
    assert 0.4 < np.mean(masks[0] == 0) < 0.6
    seen.clear()
    model(ids(3, 70), states=model.initial_state(3), training=False)
    assert all(r is None for _, r in seen)  # scoring uses the cell's own kernel


def test_locked_dropout_draws_one_mask_per_stream_per_window(monkeypatch):
    """The model's dropout of the embedding's output (and every other): each stream's mask is the
    same at every time step of a window, differs between streams and between windows."""
    masks = []

    def recording(x, rate, seed, locked=True):
        out = locked_dropout(x, rate, seed, locked)
        masks.append((out / tf.where(x == 0, tf.ones_like(x), x)).numpy())
        return out

    monkeypatch.setattr(recurrent, "locked_dropout", recording)
    model = awd(dropout_input=0.5, dropout_hidden=0.5, dropout=0.5, locked_dropout=True)
    masks.clear()
    model(ids(4, 12), states=model.initial_state(4), training=True)
    model(ids(4, 12), states=model.initial_state(4), training=True)
    assert len(masks) == 2 * 3  # windows x (input, between layers, output)
    first = masks[0]
    assert np.allclose(first, first[:, :1, :])  # constant over time within the window
    assert set(np.round(np.unique(first), 5)) <= {0.0, 2.0} and 0.3 < np.mean(first == 0) < 0.7
    assert not np.allclose(first[0], first[1])  # another mask for another stream
    assert not np.allclose(first, masks[3])  # another window, another mask
    # without locked_dropout the same rates drop element by element
    plain = locked_dropout(tf.ones((4, 12, 8)), 0.5, keras.random.SeedGenerator(1), locked=False).numpy()
    assert not np.allclose(plain, plain[:, :1, :])


def test_embedding_dropout_drops_whole_words_and_rescales_the_rest():
    words = tf.constant([[1, 2, 3, 1, 2, 3, 4, 5, 6, 7] * 4], tf.int32)
    rows = tf.ones((1, 40, 5))
    out = embedding_dropout(rows, words, V, 0.5, keras.random.SeedGenerator(3)).numpy()[0]
    by_word = {}
    for word, row in zip(words.numpy()[0], out):
        by_word.setdefault(int(word), set()).add(tuple(np.round(row, 5)))
    assert all(len(kept) == 1 for kept in by_word.values())  # a word: the same row at every position
    values = {row for kept in by_word.values() for row in kept}
    assert values == {(0.0,) * 5, (2.0,) * 5}  # whole rows zeroed, the others scaled by 1 / (1 - 0.5)


def test_ar_and_tar_are_the_hand_computed_penalties():
    dropped = tf.constant(np.random.default_rng(1).normal(size=(2, 4, 3)), tf.float32)
    undropped = tf.constant(np.random.default_rng(2).normal(size=(2, 4, 3)), tf.float32)
    d, u = dropped.numpy().astype(np.float64), undropped.numpy().astype(np.float64)
    ar = 2.0 * np.mean(d**2)
    tar = 1.0 * np.mean((u[:, 1:] - u[:, :-1]) ** 2)
    assert float(activation_penalty(dropped, undropped, 2.0, 0.0)) == pytest.approx(ar, rel=1e-6)
    assert float(activation_penalty(dropped, undropped, 0.0, 1.0)) == pytest.approx(tar, rel=1e-6)
    assert float(activation_penalty(dropped, undropped[:, :1], 0.0, 1.0)) == 0.0  # one step: no TAR
    # the model adds them on the last layer's outputs (no dropout: dropped == undropped == hidden)
    model = awd(ar_alpha=2.0, tar_beta=1.0)
    hidden, _ = model(ids(2, 9), states=model.initial_state(2), training=True)
    h = hidden.numpy().astype(np.float64)
    [penalty] = model.losses
    assert float(penalty) == pytest.approx(2.0 * np.mean(h**2) + np.mean((h[:, 1:] - h[:, :-1]) ** 2), rel=1e-5)


def test_last_layer_size_ties_a_wide_stack_and_plain_configs_are_unchanged():
    keras.utils.set_random_seed(0)
    model = RecurrentLM(V, 0, embedding_dim=6, hidden_size=8, num_layers=3, last_layer_size=6, tie_embeddings=True)
    model.build_for_inference()
    assert [rnn.cell.units for rnn in model.rnns] == [8, 8, 6]
    assert [s[0].shape[-1] for s in model.initial_state(2)] == [8, 8, 6]
    assert model.body_flops_per_token() == 2 * 4 * ((6 + 8) * 8 + (8 + 8) * 8 + (8 + 6) * 6)
    # a network without AWD options: the config it had before they existed, the same weights
    plain = awd()
    assert set(plain.get_config()) == {
        "vocab_size", "eos_id", "eval_window", "cell", "embedding_dim", "hidden_size", "num_layers", "dropout",
        "tie_embeddings", "activation", "init_scale", "head",
    }
    assert not plain.awd and not hasattr(plain, "noise")  # the one Dropout layer, no seed generator of its own
    assert [tuple(v.shape) for v in plain.weights] == [(V, 6), (6, 32), (8, 32), (32,), (8, 32), (8, 32), (32,),
                                                       (8, V), (V,)]


@pytest.mark.parametrize("key", ["dropout", "dropout_input", "dropout_hidden", "dropout_embedding", "weight_drop"])
def test_a_rate_outside_0_1_is_one_clear_error(key):
    with pytest.raises(ConfigError, match=rf"model\.{key} must be in \[0, 1\), got 1\.5"):
        RecurrentLM(V, 0, **{key: 1.5})


def test_bad_awd_and_trainer_options_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="weight_drop is built for the LSTM"):
        RecurrentLM(V, 0, cell="gru", weight_drop=0.5)
    with pytest.raises(ConfigError, match="last layer's size"):
        RecurrentLM(V, 0, embedding_dim=6, hidden_size=8, tie_embeddings=True)
    with pytest.raises(ConfigError, match="ar_alpha must be >= 0"):
        RecurrentLM(V, 0, ar_alpha=-1.0)
    for override in ("trainer.accumulate_steps=0", "trainer.nonmono=0"):
        cfg = compose_tiny(tmp_path, "awd_lstm_small", override)
        with pytest.raises(ConfigError, match="accumulate_steps .* and trainer.nonmono .* must be >= 1"):
            check_values(cfg)


def test_nt_asgd_switches_when_validation_stalls_for_nonmono_checks():
    curve = [5.0, 4.0, 3.5, 3.4, 3.45, 3.41, 3.39, 3.42, 3.6]
    switched = [t for t in range(1, len(curve) + 1) if should_switch(curve[:t], nonmono=3)]
    # at 3.45 (t=5) the losses before the last 3 are [5.0]: 3.45 < 5 -> not yet; 3.6 (t=9) is worse
    # than min([5.0, 4.0, 3.5, 3.4, 3.45]) = 3.4 -> switch (3.42 at t=8 is worse than 3.4 too)
    assert switched == [8, 9]
    assert not any(should_switch(curve[:t], nonmono=8) for t in range(1, len(curve) + 1))
    assert not should_switch([3.0, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2], nonmono=1)  # improving: never


def test_weight_average_is_the_uniform_mean_of_the_iterates_and_is_what_scoring_sees():
    w = tf.Variable([0.0, 0.0])
    average = WeightAverage([w])
    w.assign([9.0, 9.0])
    average.update()  # not started: nothing averaged
    assert not average.active and average.count == 0
    average.start()
    for value in ([1.0, 2.0], [3.0, 4.0], [8.0, 0.0]):
        w.assign(value)
        average.update()
    with average.applied():
        assert w.numpy().tolist() == pytest.approx([4.0, 2.0])  # the mean of the three iterates
    assert w.numpy().tolist() == [8.0, 0.0]  # the SGD iterate back
    with pytest.raises(RuntimeError), average.applied():
        raise RuntimeError("a validation that fails")
    assert w.numpy().tolist() == [8.0, 0.0]
    restored = WeightAverage([w])
    restored.restore(average.arrays(), average.count)
    w.assign([0.0, 6.0])
    restored.update()  # a resumed run goes on averaging: (3 x [4, 2] + [0, 6]) / 4
    with restored.applied():
        assert w.numpy().tolist() == pytest.approx([3.0, 3.0])


def test_awd_lstm_small_trains_through_mlflow_with_nt_asgd_scoring_the_average(tmp_path, monkeypatch):
    """A few steps of the preset per epoch, NT-ASGD forced on after epoch 1: the run lands in MLflow
    with its metrics and the switch's tag, and the model tested and saved is the average, not the
    last SGD iterate (both are in the checkpoints)."""
    monkeypatch.setattr("lmbench.training.neural_loop.should_switch", lambda losses, nonmono: True)
    cfg = compose_tiny(
        tmp_path, "awd_lstm_small", "model.hidden_size=12", "model.embedding_dim=8", "model.num_layers=2",
        "trainer.max_steps=null", "trainer.max_epochs=3", "trainer.nt_asgd=true", "optimizer=sgd",
        "optimizer.learning_rate=1.0",
    )
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    assert r.info.status == "FINISHED"
    assert r.data.params["model.weight_drop"] == "0.3" and r.data.params["model.last_layer_size"] == "8"
    steps_per_epoch = int(r.data.tags["lmbench.asgd_from_step"])
    assert r.data.metrics["train/tokens"] == summary["train/tokens"] > 0
    assert summary["test/ppl"] < V  # it learned something on a 4-sentence grammar
    assert [m.step for m in client.get_metric_history(r.info.run_id, "valid/ppl")] == [1, 2, 3]
    state = checkpoints.read_state(tmp_path / "out" / "checkpoints" / "last")
    assert state.averaging_from_step == steps_per_epoch
    assert state.averaged_updates == state.global_step - steps_per_epoch
    last = tmp_path / "out" / "checkpoints" / "last"
    averaged = checkpoints.read_arrays(last, "avg_")
    assert len(averaged) == 8  # every trainable variable: embedding, bias, 2 layers x 3
    assert state.valid_losses[-1] == state.best_valid_loss  # the last epoch is the best: its weights are...
    best = NeuralLM.load(tmp_path / "out" / "checkpoints" / "best")
    for i, variable in enumerate(best.trainable_variables):  # ...the average, not the SGD iterate
        assert np.allclose(variable.numpy(), averaged[f"avg_{i}"], atol=1e-6)
    # the saved bundle is that model, AWD options included, and reproduces the logged test figure
    bundle = load_bundle(str(tmp_path / "out"))
    assert bundle.model.get_config()["weight_drop"] == 0.3 and bundle.model.locked_dropout
    for ours, saved in zip(best.get_weights(), bundle.model.get_weights()):
        np.testing.assert_array_equal(ours, saved)
    scored = bundle.score_text((tmp_path / "test.txt").read_text(encoding="utf-8"))
    assert math.exp(scored.nats / scored.n_tokens) == pytest.approx(summary["test/ppl"], rel=1e-9)


def test_variable_bptt_lengths_follow_merity_and_cover_each_epoch_once():
    rng = np.random.default_rng(0)
    lengths = variable_lengths(200_001, 70, rng)
    assert lengths.sum() == 200_000 and lengths[:-1].min() >= 5 and lengths[-1] >= 1
    body = lengths[:-1]
    assert np.mean(body < 53) == pytest.approx(0.05, abs=0.012)  # bptt / 2 windows: 5 % of them
    assert np.mean(body[body >= 53]) == pytest.approx(69.5, abs=0.3)  # int() of N(70, 5) rounds down
    plan = WindowPlan(501, 70, accumulate=2, variable=True, seed=7)
    first = plan.lengths(1).copy()
    assert np.array_equal(WindowPlan(501, 70, 2, True, seed=7).lengths(1), first)  # a resume cuts the same
    assert not np.array_equal(plan.lengths(2), first) and first.sum() == plan.lengths(2).sum() == 500
    assert not np.array_equal(WindowPlan(501, 70, 2, True, seed=8).lengths(1), first)
    # max_tokens: the update (of 2 windows, 3 streams) whose windows reach the budget, in epoch 2
    tokens = 3 * 500 + 3 * int(plan.lengths(2)[:3].sum()) - 1
    assert plan.updates_for_tokens(tokens, 3, cap=10**9) == plan.updates(1) + 2
    assert plan.updates_in(3, cap=10**9) == sum(plan.updates(e) for e in (1, 2, 3))


def test_variable_bptt_run_trains_each_window_once_at_a_rate_scaled_by_its_length(tmp_path):
    cfg = compose_tiny(
        tmp_path, "awd_lstm_small", "model.hidden_size=12", "model.embedding_dim=8", "model.num_layers=1",
        "trainer.max_steps=null", "trainer.variable_bptt=true", "tracking.log_every_n_steps=1", "optimizer=sgd",
        "optimizer.learning_rate=2.0", "trainer.lr_schedule=constant", "trainer.bptt=10",
    )
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    stream = int(r.data.params["data.train_tokens"]) // 4
    plan = WindowPlan(stream, 10, variable=True, seed=cfg.seed)
    assert summary["train/tokens"] == 4 * (stream - 1)  # one epoch, every position once
    rates = [m.value for m in sorted(client.get_metric_history(r.info.run_id, "train/lr_step"), key=lambda m: m.step)]
    assert rates == pytest.approx(list(2.0 * plan.lengths(1) / 10))
    assert [m.value for m in client.get_metric_history(r.info.run_id, "train/lr")] == [2.0]  # the rate, unscaled


class Crash(Exception):
    pass


def test_a_run_killed_while_averaging_resumes_averaging_where_it_stopped(tmp_path, monkeypatch):
    """NT-ASGD on from the end of epoch 1, 2 windows per update, a checkpoint every 5 updates; a
    crash in epoch 2 and a rerun: the same average and test figure as a run never interrupted (no
    dropout, so every window is computed alike)."""
    monkeypatch.setattr("lmbench.training.neural_loop.should_switch", lambda losses, nonmono: True)
    overrides = ("trainer.max_epochs=2", "trainer.nt_asgd=true", "trainer.accumulate_steps=2",
                 "trainer.checkpoint_every_n_steps=5", "tracking.log_model=false", "trainer.precision=float32")
    reference = run(tiny_cfg(tmp_path / "ref", *overrides), tmp_path / "ref/out", tmp_path / "ref")
    step = NeuralLoop._step

    def crashing(self, state, *args):
        if state.global_step == self.per_epoch + 12:
            raise Crash
        return step(self, state, *args)

    cfg = tiny_cfg(tmp_path / "run", *overrides)
    monkeypatch.setattr(NeuralLoop, "_step", crashing)
    with pytest.raises(Crash):
        run(cfg, tmp_path / "run/out", tmp_path / "run")
    state = checkpoints.read_state(tmp_path / "run/out/checkpoints/last")
    assert state.epoch == 2 and state.global_step % 5 == 0  # a checkpoint inside epoch 2
    assert state.averaged_updates == state.global_step - state.averaging_from_step > 5
    monkeypatch.setattr(NeuralLoop, "_step", step)
    resumed = run(cfg, tmp_path / "run/out", tmp_path / "run")
    assert resumed["test/ppl"] == pytest.approx(reference["test/ppl"], rel=1e-5)
    for name, array in checkpoints.read_arrays(tmp_path / "ref/out/checkpoints/last", "avg_").items():
        again = checkpoints.read_arrays(tmp_path / "run/out/checkpoints/last", "avg_")[name]
        np.testing.assert_allclose(again, array, rtol=1e-5, atol=1e-6)


def test_a_bad_rate_on_the_command_line_stops_before_any_work(tmp_path):
    proc = lmbench(tmp_path, "model=awd_lstm_small", "model.weight_drop=1.5", ok=False)
    assert proc.returncode == 2
    assert "model.weight_drop must be in [0, 1), got 1.5" in proc.stderr + proc.stdout
    assert not list(tmp_path.glob("*.db"))  # nothing reached MLflow
