"""Gradient accumulation (trainer.accumulate_steps): k windows per optimizer update, equal to one batch
k times larger for a stateless model, the streams' state carried from window to window for a
recurrent one; budgets, logging and checkpoints count updates, tokens and FLOPs count every window."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import only_run, tiny_cfg

from lmbench.models.recurrent import RecurrentLM
from lmbench.models.transformer import TransformerLM
from lmbench.training import checkpoints
from lmbench.training.run import run
from lmbench.training.steps import AccumulatingUpdate, make_train_step

V = 40
CLIP = 0.05  # far below these gradients' norm: the update is clipped, once


def twins(build):
    """Two models with the same weights, each with its own SGD optimizer."""
    keras.utils.set_random_seed(0)
    a, b = build(), build()
    a.build_for_inference()
    b.build_for_inference()
    b.set_weights(a.get_weights())
    return (a, keras.optimizers.SGD(0.5)), (b, keras.optimizers.SGD(0.5))


def transformer():
    return TransformerLM(V, 0, n_layer=1, n_head=2, d_model=16, d_ff=32, dropout=0.0, context=8, tie_embeddings=True)


def windows(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [(tf.constant(rng.integers(0, V, s), tf.int32), tf.constant(rng.integers(0, V, s), tf.int32))
            for s in shapes]


def assert_same_weights(a, b):
    for x, y in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)


def test_k_windows_of_a_stateless_model_are_one_batch_k_times_larger():
    (big, big_opt), (acc, acc_opt) = twins(transformer)
    parts = windows([(4, 8)] * 3)
    x = tf.concat([w[0] for w in parts], axis=0)  # [12, 8]: the three windows' rows as one batch
    y = tf.concat([w[1] for w in parts], axis=0)
    big_loss, _ = make_train_step(big, big_opt, False, clip_norm=CLIP)(x, y, big.initial_state(12))
    acc_loss, _ = AccumulatingUpdate(acc, acc_opt, False, 0.0, 0.0, CLIP)(parts, acc.initial_state(4))
    assert acc_loss == pytest.approx(float(big_loss), rel=1e-6)
    assert_same_weights(big, acc)
    assert not np.allclose(big.get_weights()[0], twins(transformer)[0][0].get_weights()[0])  # it moved


def test_windows_of_unequal_length_count_for_their_tokens():
    """An epoch's shorter last window: the update is the gradient of the mean over every token of
    the update (48 here), clipped, as one batch of them would be."""
    (ref, ref_opt), (acc, acc_opt) = twins(transformer)
    parts = windows([(4, 8), (4, 4)], seed=1)
    with tf.GradientTape() as tape:
        total = sum(tf.reduce_sum(ref.output_head.token_nll(ref(x, states=[], training=True)[0], y)) for x, y in parts)
        loss = total / 48
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, ref.trainable_variables)]
    assert float(tf.linalg.global_norm(grads)) > 10 * CLIP
    grads, _ = tf.clip_by_global_norm(grads, CLIP)
    ref_opt.apply_gradients(zip(grads, ref.trainable_variables))
    acc_loss, _ = AccumulatingUpdate(acc, acc_opt, False, 0.0, 0.0, CLIP)(parts, [])
    assert acc_loss == pytest.approx(float(loss), rel=1e-6)
    assert_same_weights(ref, acc)


def test_recurrent_windows_carry_their_state_into_the_next_of_the_same_update():
    """Two consecutive windows of the same streams: the second starts from the state the first
    ended in (at the update's starting weights), gradients stop at the window edge as without
    accumulation, and the update is their mean gradient."""
    (ref, ref_opt), (acc, acc_opt) = twins(lambda: RecurrentLM(V, 0, embedding_dim=8, hidden_size=8, num_layers=1))
    parts = windows([(3, 5)] * 2, seed=2)
    states, grads = ref.initial_state(3), []
    for x, y in parts:
        with tf.GradientTape() as tape:
            hidden, states = ref(x, states=states, training=True)
            loss = tf.reduce_mean(ref.output_head.token_nll(hidden, y))
        grads.append([tf.convert_to_tensor(g) for g in tape.gradient(loss, ref.trainable_variables)])
    mean = [(g1 + g2) / 2 for g1, g2 in zip(*grads)]
    ref_opt.apply_gradients(zip(mean, ref.trainable_variables))
    _, acc_states = AccumulatingUpdate(acc, acc_opt, False, 0.0, 0.0, None)(parts, acc.initial_state(3))
    for s, t in zip(tf.nest.flatten(states), tf.nest.flatten(acc_states)):
        np.testing.assert_allclose(s.numpy(), t.numpy(), rtol=1e-6)
    assert_same_weights(ref, acc)


def test_a_run_counts_updates_for_budgets_and_logs_and_every_window_for_tokens(tmp_path, monkeypatch):
    """4 updates of 3 windows of 4 x 8 tokens: the loss logged at updates 2 and 4, 384 tokens and
    their FLOPs; every checkpoint falls between updates (3 windows into the epoch per update)."""
    saved = []
    save = checkpoints.save

    def recording(folder, state, *args, **kwargs):
        saved.append((state.global_step, state.step_in_epoch, state.epoch))
        return save(folder, state, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "save", recording)
    cfg = tiny_cfg(tmp_path, "trainer.accumulate_steps=3", "trainer.max_steps=4", "tracking.log_every_n_steps=2",
                   "trainer.checkpoint_every_n_steps=1", "tracking.log_model=false")
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    assert [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")] == [2, 4]
    assert summary["train/tokens"] == 4 * 3 * 4 * 8
    assert summary["train/flops"] == pytest.approx(summary["train/flops_per_token"] * 384)
    assert r.data.tags["lmbench.stop_reason"] == "max_steps"
    mid_epoch = [(step, window) for step, window, epoch in saved if window]
    assert mid_epoch == [(1, 3), (2, 6), (3, 9), (4, 12)]


def test_max_tokens_with_accumulation_stops_at_the_update_that_reaches_it(tmp_path):
    """100 tokens need 4 windows of 32; updates take 3: the second update reaches it (192 tokens)."""
    cfg = tiny_cfg(tmp_path, "trainer.accumulate_steps=3", "trainer.max_tokens=100", "tracking.log_model=false")
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, r = only_run(cfg.tracking.uri)
    assert r.data.tags["lmbench.stop_reason"] == "max_tokens"
    assert summary["train/tokens"] == 2 * 3 * 32
