"""Every neural model config in conf/model trains through the real run and is tracked like the LSTM;
so does a model that exists only as a YAML file outside lmbench, added by Hydra's search path."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY, compose_tiny, only_run, tiny_cfg
from omegaconf import OmegaConf

from lmbench.paths import CONF_DIR
from lmbench.training.run import run

MODEL_DIR = CONF_DIR / "model"
# Tested in test_training.py / test_ngram*.py, test_interpolated.py and (a checkpoint folder's) test_pretrained_*.py
NOT_NEURAL = ("ngram", "interpolated", "pretrained")
NEURAL_MODELS = sorted(p.stem for p in MODEL_DIR.glob("*.yaml") if not p.stem.startswith(NOT_NEURAL))

def expected_family(model_yaml: Path) -> str:
    node = OmegaConf.load(model_yaml)
    return "transformer" if node._target_.endswith("TransformerLM") else node.cell


def tracked_run(tmp_path: Path, model: str, *overrides: str, **kwargs):
    cfg = compose_tiny(tmp_path, model, *overrides, **kwargs)
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    return only_run(cfg.tracking.uri)


@pytest.fixture(scope="module")
def lstm_metric_names(tmp_path_factory) -> set[str]:
    _, r = tracked_run(tmp_path_factory.mktemp("lstm"), "lstm", *TINY["lmbench.models.recurrent.RecurrentLM"])
    return set(r.data.metrics)


@pytest.mark.parametrize("model", NEURAL_MODELS)
def test_model_config_trains_and_is_tracked_like_the_lstm(tmp_path, model, lstm_metric_names):
    target = OmegaConf.load(MODEL_DIR / f"{model}.yaml")._target_
    client, r = tracked_run(tmp_path, model, *TINY[target])
    assert r.info.status == "FINISHED"
    assert set(r.data.metrics) == lstm_metric_names
    assert r.data.tags["lmbench.family"] == expected_family(MODEL_DIR / f"{model}.yaml")
    if expected_family(MODEL_DIR / f"{model}.yaml") == "transformer":  # the trainer reports how
        assert r.data.tags["lmbench.eval_method"].startswith("sliding window, context 8")
    assert r.data.params["model._target_"] == target
    assert [h.step for h in client.get_metric_history(r.info.run_id, "train/loss")] == [2, 3]


def test_model_from_a_yaml_outside_lmbench_via_the_search_path(tmp_path, lstm_metric_names):
    extra = tmp_path / "my_conf"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "my_gpt.yaml").write_text(
        "_target_: lmbench.models.transformer.TransformerLM\n"
        "n_layer: 1\nn_head: 2\nd_model: 12\nd_ff: 24\ndropout: 0.0\n"
        "context: 10\npositions: sinusoidal\ntie_embeddings: true\neval_stride: 5\n"
    )
    client, r = tracked_run(tmp_path, "my_gpt", f"hydra.searchpath=[file://{extra}]")
    assert r.info.status == "FINISHED"
    assert set(r.data.metrics) == lstm_metric_names
    assert r.data.tags["lmbench.family"] == "transformer"
    assert r.data.params["model.positions"] == "sinusoidal"
    assert r.data.params["model.context"] == "10"


def test_bptt_longer_than_the_transformer_context_is_refused_before_tracking(tmp_path):
    from lmbench.errors import ConfigError
    from lmbench.training.run import run

    cfg = tiny_cfg(
        tmp_path, "trainer.bptt=16",
        model=("model=transformer", "model.context=8", "model.d_model=16", "model.d_ff=32", "model.n_head=2"),
    )
    with pytest.raises(ConfigError, match="exceeds model.context=8"):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_xla_compiled_steps_train_as_the_default_does(tmp_path, model):
    # trainer.jit_compile=true compiles the whole step (with token_nll, itself compiled, inside it)
    target = OmegaConf.load(MODEL_DIR / f"{model}.yaml")._target_
    results = {}
    for jit in ("false", "true"):
        cfg = compose_tiny(tmp_path / jit, model, *TINY[target], "trainer.max_steps=20", "optimizer=adam",
                           "optimizer.learning_rate=0.01", "model.dropout=0", "trainer.precision=float32",
                           f"trainer.jit_compile={jit}")
        results[jit] = run(cfg, output_dir=tmp_path / jit / "out", launch_dir=tmp_path / jit)
    # same seed, same data, no dropout (XLA draws other random numbers): XLA changes rounding only
    assert results["true"]["test/ppl"] == pytest.approx(results["false"]["test/ppl"], rel=0.02)


@pytest.mark.parametrize("steps_over_limit", [0, 1, 2 * 64 + 3])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_unrolled_windows_compute_what_the_loop_computes(cell, steps_over_limit):
    """A window up to the limit is unrolled in one piece, a longer one (a scoring window) in pieces
    with the state carried between them: both compute what Keras' loop (on a GPU) computes."""
    import numpy as np
    import tensorflow as tf

    from lmbench.models.recurrent import UNROLL_MAX_STEPS, RecurrentLM

    model = RecurrentLM(50, 0, cell=cell, embedding_dim=8, hidden_size=8, num_layers=2)
    model.build_for_inference()
    steps = UNROLL_MAX_STEPS + steps_over_limit
    x = tf.constant(np.random.default_rng(0).integers(0, 50, (3, steps)), tf.int32)
    states = model.initial_state(3)
    unrolled, unrolled_states = model(x, states=states)
    assert all(rnn.unroll for rnn in model.rnns)
    model._may_unroll = False  # as on a GPU
    looped, looped_states = model(x, states=states)
    assert not any(rnn.unroll for rnn in model.rnns)
    np.testing.assert_allclose(unrolled.numpy(), looped.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(tf.nest.flatten(unrolled_states), tf.nest.flatten(looped_states)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
