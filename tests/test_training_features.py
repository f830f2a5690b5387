"""Schedules, early stopping, penalties and precision: each asserted on what it must do."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import only_run, tiny_cfg

from lmbench.config import TrainerConfig
from lmbench.models.recurrent import RecurrentLM
from lmbench.training.run import run
from lmbench.training.steps import make_train_step, schedule_factor


def test_cosine_with_warmup_shape():
    cfg = TrainerConfig(lr_schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    f = [schedule_factor(cfg, s, 110) for s in range(1, 111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up to 1
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # then decays monotonically
    assert f[-1] == pytest.approx(0.1)  # down to min_lr_ratio
    assert f[59] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_constant_and_plateau_have_no_per_step_change():
    for kind in ("constant", "plateau"):
        cfg = TrainerConfig(lr_schedule=kind)
        assert {schedule_factor(cfg, s, 100) for s in (1, 50, 100)} == {1.0}


def test_plateau_decay_and_early_stopping(tmp_path):
    # A learning rate so small that no epoch improves valid loss by min_delta: epoch 1 is the best,
    # epochs 2 and 3 are stale -> lr divided by 4 after each stale epoch, stop after the second.
    cfg = tiny_cfg(
        tmp_path, "optimizer=sgd", "optimizer.learning_rate=1e-6", "trainer.max_epochs=6",
        "trainer.min_delta=0.01", "trainer.early_stopping_patience=2", "trainer.lr_decay_patience=0",
    )
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    assert [m.step for m in client.get_metric_history(r.info.run_id, "valid/ppl")] == [1, 2, 3]
    assert r.data.tags["lmbench.stopped_early_at_epoch"] == "3"
    lrs = [m.value for m in sorted(client.get_metric_history(r.info.run_id, "train/lr"), key=lambda m: m.step)]
    assert lrs == pytest.approx([1e-6, 1e-6, 2.5e-7])


def test_l2_penalty_shrinks_weights():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).integers(0, 20, (4, 8)).astype(np.int32)
    norms = {}
    for l2 in (0.0, 0.1):
        keras.utils.set_random_seed(0)
        model = RecurrentLM(20, 0, hidden_size=16, embedding_dim=16, num_layers=1)
        model.build_for_inference()
        opt = keras.optimizers.SGD(learning_rate=0.5)
        step = make_train_step(model, opt, jit_compile=False, l2=l2)
        states = model.initial_state(4)
        for _ in range(20):
            _, states = step(x[:, :-1], x[:, 1:], states)
        norms[l2] = sum(float(np.sum(np.square(v))) for v in model.trainable_variables if len(v.shape) >= 2)
    assert norms[0.1] < 0.8 * norms[0.0]


def test_mixed_bfloat16_trains_and_float32_is_restored(tmp_path):
    cfg = tiny_cfg(tmp_path / "bf16", "trainer.precision=mixed_bfloat16", "trainer.max_epochs=2")
    summary = run(cfg, output_dir=tmp_path / "bf16/out", launch_dir=tmp_path / "bf16")
    assert summary["test/ppl"] < 4.0  # learns like float32 does (see test_training)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    run(tiny_cfg(tmp_path / "f32", "trainer.max_steps=2", "trainer.precision=float32", "tracking=none"),
        tmp_path / "f32/out", tmp_path / "f32")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_bfloat16_training_reports_float32_figures_that_a_reloaded_bundle_reproduces(tmp_path):
    from lmbench.artifacts.bundle import load_bundle

    cfg = tiny_cfg(tmp_path, "trainer.precision=mixed_bfloat16", "trainer.max_steps=20")
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, r = only_run(cfg.tracking.uri)
    assert r.data.tags["lmbench.precision"] == "mixed_bfloat16"
    assert r.data.tags["lmbench.gpus"] == str(len(tf.config.list_physical_devices("GPU")))  # the devices it ran on
    bundle = load_bundle(str(tmp_path / "out"))
    assert bundle.model.compute_dtype == "float32"  # a loaded model computes in float32
    scored = bundle.score_text((tmp_path / "test.txt").read_text(encoding="utf-8"))
    assert scored.n_tokens == summary["test/tokens"]
    # exactly the logged figure: the bfloat16 run was evaluated in float32 too
    assert math.exp(scored.nats / scored.n_tokens) == pytest.approx(summary["test/ppl"], rel=1e-9)
    # and not what the bfloat16 network itself would have said
    trained_in_bf16 = RecurrentLM(**bundle.model.get_config())
    assert trained_in_bf16.compute_dtype == "bfloat16"  # the global policy is still the run's
    trained_in_bf16.build_for_inference()
    trained_in_bf16.set_weights(bundle.model.get_weights())
    _, ids, _ = bundle.encode((tmp_path / "test.txt").read_text(encoding="utf-8"))
    bf16_nats = -trained_in_bf16.score(ids, batch_size=cfg.trainer.eval_batch_size).sum()
    assert bf16_nats != pytest.approx(scored.nats, rel=1e-9)


def test_auto_precision_follows_the_hardware(monkeypatch):
    from lmbench.errors import ConfigError
    from lmbench.training import precision

    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert precision.resolve("auto") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert precision.resolve("auto") == "float32"
    assert precision.resolve("mixed_bfloat16") == "mixed_bfloat16"  # an explicit choice is kept
    with pytest.raises(ConfigError, match="valid: auto, float32, mixed_bfloat16"):
        precision.resolve("fp16")
    assert precision.CPU_BF16_FLAGS.search("flags : fpu avx512f avx512_bf16 avx512_vnni")
    assert not precision.CPU_BF16_FLAGS.search("flags : fpu avx2 avx512f")


def test_unknown_schedule_and_precision_are_refused(tmp_path):
    from lmbench.errors import ConfigError

    with pytest.raises(ConfigError, match="lr_schedule"):
        run(tiny_cfg(tmp_path / "a", "trainer.lr_schedule=linear"), tmp_path / "a/out", tmp_path / "a")
    with pytest.raises(ConfigError, match="precision"):
        run(tiny_cfg(tmp_path / "b", "trainer.precision=fp8"), tmp_path / "b/out", tmp_path / "b")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(7, 11), (3, 5, 11)])
def test_token_nll_equals_tensorflow_cross_entropy_and_its_gradient(dtype, shape):
    import tensorflow as tf

    from lmbench.models.heads import token_nll

    rng = np.random.default_rng(0)
    logits = tf.cast(tf.constant(rng.normal(scale=4.0, size=shape), dtype=tf.float32), dtype)
    labels = tf.constant(rng.integers(0, shape[-1], size=shape[:-1]), dtype=tf.int32)
    weights = tf.constant(rng.uniform(0.5, 2.0, size=shape[:-1]), dtype=tf.float32)  # non-uniform upstream

    def both(fn):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            nll = fn(labels, logits)
            total = tf.reduce_sum(nll * weights)
        return nll.numpy(), tape.gradient(total, logits)

    ours, grad = both(token_nll)
    ref, ref_grad = both(
        lambda y, x: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(x, tf.float32))
    )
    assert ours.dtype == np.float32 and ours.shape == shape[:-1]
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    assert grad.dtype == logits.dtype  # the gradient flows back to bf16 logits in their own type
    tol = 1e-6 if dtype == "float32" else 1e-2
    np.testing.assert_allclose(tf.cast(grad, tf.float32).numpy(), tf.cast(ref_grad, tf.float32).numpy(), atol=tol)
    # by hand for one position: -log softmax(x)[y]
    x = tf.cast(logits, tf.float32).numpy().reshape(-1, shape[-1])[0].astype(np.float64)
    y = int(labels.numpy().reshape(-1)[0])
    assert ours.reshape(-1)[0] == pytest.approx(np.log(np.exp(x - x.max()).sum()) + x.max() - x[y], rel=1e-5)


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("recurrent", {"cell": "lstm"}),
        ("recurrent", {"cell": "lstm", "head": {"kind": "adaptive", "cutoffs": [8, 20], "factor": 2.0}}),
        ("recurrent", {"cell": "gru", "tie_embeddings": True}),
        ("transformer", {"n_head": 2, "d_model": 8, "d_ff": 16, "context": 12}),
    ],
)
def test_a_bfloat16_network_computing_in_float32_scores_as_a_float32_copy_of_it(family, options):
    """The evaluator scores a network trained under mixed_bfloat16 with its own weights, its layers
    switched to float32 (no copy of the network): the very numbers of a float32 copy; and the
    training around it goes on in bfloat16 as if nothing had been scored."""
    from lmbench.models.recurrent import RecurrentLM
    from lmbench.models.transformer import TransformerLM
    from lmbench.training.steps import make_train_step

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    cls = RecurrentLM if family == "recurrent" else TransformerLM
    sizes = {"embedding_dim": 8, "hidden_size": 8} if family == "recurrent" else {}
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, 120).astype(np.int32)
    windows = [(tf.constant(ids[k : k + 40].reshape(4, 10)), tf.constant(ids[k + 1 : k + 41].reshape(4, 10)))
               for k in (0, 40)]

    def trained(score_between: bool):
        keras.utils.set_random_seed(7)
        model = cls(vocab_size=50, eos_id=0, **sizes, **options)
        model.build_for_inference()
        optimizer = keras.optimizers.SGD(learning_rate=1.0)
        optimizer.build(model.trainable_variables)
        step = make_train_step(model, optimizer, jit_compile=False, clip_norm=0.25)
        states, losses, scores = model.initial_state(4), [], None
        for k, (x, y) in enumerate(windows):
            loss, states = step(x, y, states)
            losses.append(float(loss))
            if k == 0 and score_between:
                copy = model.float32_copy()
                copy.set_weights(model.get_weights())
                with model.computing_in_float32() as scorer:
                    assert scorer is model and model.compute_dtype == "float32"
                    scores = model.score(ids, batch_size=2), copy.score(ids, batch_size=2)
                assert model.compute_dtype == "bfloat16"
        return model, losses, scores

    model, losses, (ours, copy) = trained(score_between=True)
    assert np.array_equal(ours, copy)
    assert not np.array_equal(model.score(ids, batch_size=2), ours)  # in bfloat16 again, its own trace
    undisturbed, same_losses, _ = trained(score_between=False)
    assert losses == same_losses
    for a, b in zip(model.get_weights(), undisturbed.get_weights(), strict=True):
        assert np.array_equal(a, b)
