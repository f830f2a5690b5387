"""The modern Transformer options: rotary positions, RMSNorm, SwiGLU, no biases, grouped-query
attention, QK-norm; decay only on weight matrices; the `transformer_modern` preset end to end."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY, compose_tiny, only_run

from lmbench.errors import ConfigError
from lmbench.models.transformer import TransformerLM
from lmbench.models.transformer_blocks import apply_rope, make_norm, rope_tables, swiglu_hidden
from lmbench.training.run import run
from lmbench.training.steps import exclude_from_decay

V, EOS, C = 17, 0, 8
MODERN = {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False}


def tiny(**kwargs) -> TransformerLM:
    kwargs = {"n_layer": 2, "n_head": 4, "d_model": 16, "d_ff": 48, "context": C, "dropout": 0.0, **kwargs}
    model = TransformerLM(vocab_size=V, eos_id=EOS, **kwargs)
    model.build_for_inference()
    return model


def ids(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n)


def test_rope_scores_depend_only_on_the_offset():
    """q·k of a query at position m and a key at n is a function of m - n (Su et al. 2021, eq. 16)."""
    head_dim, length = 8, 40
    cos, sin = rope_tables(length, head_dim)
    rng = np.random.default_rng(0)
    q, k = (tf.constant(rng.normal(size=(1, head_dim)), tf.float32) for _ in range(2))

    def score(m: int, n: int) -> float:
        qm = apply_rope(q, cos[m : m + 1], sin[m : m + 1])
        kn = apply_rope(k, cos[n : n + 1], sin[n : n + 1])
        return float(tf.reduce_sum(qm * kn))

    for offset in (0, 1, 5, 17):
        scores = [score(n + offset, n) for n in (0, 3, 11, 20)]
        np.testing.assert_allclose(scores, scores[0], rtol=1e-5, atol=1e-5)
    assert abs(score(5, 0) - score(0, 5)) > 1e-3  # the sign of the offset matters: a rotation, not |m - n|
    # A rotation: the norm of every vector is kept.
    rotated = apply_rope(tf.tile(q, (length, 1)), cos, sin)
    np.testing.assert_allclose(tf.norm(rotated, axis=-1), np.full(length, float(tf.norm(q))), rtol=1e-5)


def test_rmsnorm_is_its_formula():
    norm = make_norm("rmsnorm", bias=False)
    x = np.random.default_rng(1).normal(size=(3, 5, 12)).astype(np.float32) * 3
    norm.build(x.shape)
    scale = np.random.default_rng(2).normal(size=12).astype(np.float32)
    norm.set_weights([scale])
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * scale
    np.testing.assert_allclose(norm(x), expected, rtol=1e-5, atol=1e-6)
    assert len(norm.weights) == 1  # a scale, no shift


@pytest.mark.parametrize(("d_ff", "hidden"), [(48, 32), (400, 264), (800, 536), (16, 8), (3, 8)])
def test_swiglu_hidden_size_is_two_thirds_of_d_ff_to_a_multiple_of_8(d_ff, hidden):
    assert swiglu_hidden(d_ff) == hidden


def test_swiglu_has_the_gelu_mlps_parameters():
    """d_ff 48: SwiGLU's three 16 x 32 matrices hold as many weights as GELU's two 16 x 48. Without
    biases the whole models then count the same; with them SwiGLU has 2·32 - 48 = 16 more per layer."""
    assert tiny(mlp="swiglu", bias=False).num_params() == tiny(mlp="gelu", bias=False).num_params()
    assert tiny(mlp="swiglu").num_params() == tiny(mlp="gelu").num_params() + 2 * 16
    # transformer_modern's size: 264 = 2/3 of 400 rounded, 158,400 weights against GELU's 160,000 (1 % fewer)
    assert 3 * 200 * swiglu_hidden(400) == 158_400


def test_no_bias_leaves_only_the_norms_scales_and_the_heads_bias_as_vectors():
    model = tiny(**MODERN, qk_norm=True)
    vectors = [v for v in model.trainable_variables if len(v.shape) == 1]
    others = [v for v in vectors if "rms_normalization" not in v.path]
    assert [tuple(v.shape) for v in others] == [(V,)]  # the output head's own bias (model.head's business)
    assert len(vectors) - len(others) == 2 * 4 + 1  # per layer 2 norms + q and k norms; the final norm


def test_no_bias_with_layernorm_drops_its_shift():
    model = tiny(bias=False)  # GPT-2's blocks otherwise
    vectors = [v for v in model.trainable_variables if len(v.shape) == 1]
    assert all(v.path.endswith("gamma") for v in vectors if "layer_normalization" in v.path)
    assert len([v for v in vectors if "layer_normalization" not in v.path]) == 1  # the head's bias
    assert model.num_params() == tiny().num_params() - 2 * (3 * 16 + 16 + 48 + 16) - 2 * 2 * 16 - 16


def test_n_kv_head_equal_to_n_head_is_full_attention():
    """The default (n_kv_head null) and n_kv_head = n_head build the same model: same variables, and
    with the same weights the same numbers, bit for bit."""
    full, explicit = tiny(), tiny(n_kv_head=4)
    assert [v.shape for v in full.weights] == [v.shape for v in explicit.weights]
    explicit.set_weights(full.get_weights())
    x = tf.constant([ids(C, seed=3)], dtype=tf.int32)
    np.testing.assert_array_equal(full(x)[0], explicit(x)[0])


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_grouped_query_attention_is_full_attention_with_shared_keys_and_values(n_kv_head):
    """A GQA model equals the full-attention model whose key/value heads are its own, repeated for
    each query head of their group (the QKV kernel's K and V columns copied head by head)."""
    gqa, full = tiny(n_kv_head=n_kv_head, **MODERN), tiny(**MODERN)
    hd, groups = 4, 4 // n_kv_head
    values = []
    for v, w in zip(full.weights, gqa.get_weights()):  # built in the same order
        if tuple(v.shape) != w.shape:  # the QKV kernel: [16, (4 + 2 n_kv_head) x 4] -> [16, 3 x 16]
            q, k, vv = np.split(w, [4 * hd, (4 + n_kv_head) * hd], axis=1)
            repeat = lambda m: np.repeat(m.reshape(16, n_kv_head, hd), groups, axis=1).reshape(16, 4 * hd)  # noqa: E731
            w = np.concatenate([q, repeat(k), repeat(vv)], axis=1)
        values.append(w)
    full.set_weights(values)
    x = tf.constant([ids(C, seed=4), ids(C, seed=5)], dtype=tf.int32)
    np.testing.assert_allclose(gqa(x)[0], full(x)[0], rtol=1e-5, atol=1e-5)
    assert gqa.num_params() < full.num_params()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_kv_head": 3}, "n_kv_head"), ({"n_kv_head": 0}, "n_kv_head"), ({"norm": "batchnorm"}, "model.norm"),
        ({"mlp": "relu"}, "model.mlp"), ({"positions": "rope", "d_model": 12, "n_head": 4}, "even head size"),
    ],
)
def test_bad_modern_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TransformerLM(vocab_size=V, eos_id=EOS, **{"n_head": 4, "d_model": 16, "context": C, **kwargs})


def test_a_bundle_saved_before_the_options_loads_as_gpt2(tmp_path):
    """A model_config.json without the new keys (every bundle saved before them) builds the GPT-2
    blocks it was trained as, and its weights load."""
    model = tiny(positions="learned")
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "model_config.json"
    config = json.loads(path.read_text())
    for key in ("norm", "mlp", "bias", "n_kv_head", "qk_norm"):
        config.pop(key)
    path.write_text(json.dumps(config))
    loaded = TransformerLM.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(ids(30)), model.score(ids(30)))


def test_a_modern_model_saves_and_loads(tmp_path):
    model = tiny(n_kv_head=2, qk_norm=True, **MODERN)
    model.save(tmp_path / "m")
    loaded = TransformerLM.load(tmp_path / "m")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.score(ids(30)), model.score(ids(30)))


def test_weight_decay_shrinks_matrices_only():
    """With a zero gradient AdamW's step is its decay alone: weight matrices shrink by lr·decay,
    norms, biases and embeddings (NeuralLM.no_decay_variables) do not move."""
    model = tiny(**{**MODERN, "bias": True, "positions": "learned"})
    optimizer = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    exclude_from_decay(optimizer, model)
    optimizer.build(model.trainable_variables)
    before = [np.array(v) for v in model.trainable_variables]
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    exempt = {id(v) for v in model.no_decay_variables()}
    embeddings = {id(model.token_embedding.embeddings), id(model.position_embedding.embeddings)}
    assert embeddings <= exempt
    for v, old in zip(model.trainable_variables, before):
        if id(v) in exempt:
            np.testing.assert_array_equal(np.array(v), old)
            assert len(v.shape) == 1 or id(v) in embeddings
        else:
            assert len(v.shape) == 2
            np.testing.assert_allclose(np.array(v), old * (1 - 0.1 * 0.5), rtol=1e-6)


def test_transformer_modern_trains_on_its_recipe_and_lands_in_mlflow(tmp_path):
    """The preset with grouped heads (4 query heads, 2 key/value heads) trains a few steps on the
    recipe its YAML names, scores, and is logged as a model that generates."""
    tiny_sizes = [*TINY["lmbench.models.transformer.TransformerLM"], "model.n_head=4"]
    cfg = compose_tiny(tmp_path, "transformer_modern", *tiny_sizes, "optimizer=recipe")
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, r = only_run(cfg.tracking.uri)
    params, metrics = r.data.params, r.data.metrics
    assert params["recipe"] == "transformer_modern" and params["optimizer._target_"] == "keras.optimizers.AdamW"
    assert params["optimizer.weight_decay"] == "0.1" and params["trainer.lr_schedule"] == "cosine"
    assert params["model.positions"] == "rope" and params["model.n_kv_head"] == "2"
    assert np.isfinite(metrics["test/ppl"]) and metrics["test/ppl"] < 200
    assert r.data.tags["lmbench.family"] == "transformer"

    from lmbench.artifacts.bundle import load_bundle

    bundle = load_bundle(r.info.run_id, tracking_uri=cfg.tracking.uri, cache_dir=tmp_path / "cache")
    assert bundle.model.get_config()["mlp"] == "swiglu"
    assert bundle.score_text((tmp_path / "test.txt").read_text()).ppl == pytest.approx(metrics["test/ppl"], rel=1e-6)
    prompt = bundle.prompt_ids("the cat")
    assert len(bundle.model.generate(prompt, 12, temperature=0)) == 12

    # The MLflow model generates when its params ask: greedy as lmbench-generate, nucleus seeded.
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.uri)
    logged = mlflow.pyfunc.load_model(f"runs:/{r.info.run_id}/model")
    assert {p.name for p in logged.metadata.signature.params} == {"max_tokens", "temperature", "top_k", "top_p", "seed"}
    greedy = logged.predict(["the cat", "a dog"], params={"max_tokens": 6, "temperature": 0.0})
    assert list(greedy.columns) == ["prompt", "text"] and greedy["prompt"].tolist() == ["the cat", "a dog"]
    assert greedy.iloc[0]["text"] == bundle.generate_text("the cat", 6, temperature=0)
    nucleus = {"max_tokens": 8, "top_p": 0.9, "seed": 3}
    assert logged.predict(["the"], params=nucleus).iloc[0]["text"] == bundle.generate_text("the", 8, top_p=0.9, seed=3)
    assert "ppl" in logged.predict(["the cat sat"]).columns  # without params it scores, as before
