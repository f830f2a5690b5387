"""Output heads (lmbench/models/heads.py): the config, bundles saved before heads existed, and the
full softmax head against the reference computed from full logits."""

from pathlib import Path

import numpy as np
import pytest

from lmbench.config.schema import FullHeadConfig, head_config
from lmbench.errors import ConfigError

BEFORE_HEADS = Path(__file__).parent / "data" / "before_heads"


def test_head_config_defaults_and_refusals():
    assert head_config(None) == FullHeadConfig()
    assert head_config({"kind": "full", "chunk_positions": 7}) == FullHeadConfig(chunk_positions=7)
    with pytest.raises(ConfigError, match="model.head.kind='softer' is not one of full"):
        head_config({"kind": "softer"})
    with pytest.raises(ConfigError, match="model.head.chunk is not an option of the full head"):
        head_config({"kind": "full", "chunk": 3})
    with pytest.raises(ConfigError, match="chunk_positions must be an integer >= 1, got 0"):
        head_config({"chunk_positions": 0})
    with pytest.raises(ConfigError, match="chunk_logits must be an integer >= 1, got None"):
        head_config({"chunk_logits": None})
    with pytest.raises(ConfigError, match="must be a mapping"):
        head_config("full")


@pytest.mark.parametrize("name", ["lstm_tied", "tr"])
def test_bundle_saved_before_heads_loads_and_scores_as_then(name):
    # Saved by lmbench 7a2ff37 (no `head` key, output variables on the model): an LSTM with tied
    # embeddings and an untied Transformer, with the scores that code gave on these ids.
    from lmbench.models.neural import NeuralLM

    folder = BEFORE_HEADS / name
    model = NeuralLM.load(folder)
    assert model.get_config()["head"] == {
        "kind": "full", "chunk_positions": 1024, "chunk_logits": 1024 * 1024, "keep_logits_mb": 128.0,
    }
    ids = np.random.default_rng(0).integers(0, 50, 200)
    np.testing.assert_allclose(model.score(ids), np.load(folder / "scores.npy"), rtol=0, atol=1e-6)


def test_head_is_saved_with_the_model(tmp_path):
    from lmbench.models.neural import NeuralLM
    from lmbench.models.recurrent import RecurrentLM

    head = {"kind": "full", "chunk_positions": 5, "chunk_logits": 60}
    model = RecurrentLM(30, 0, embedding_dim=8, hidden_size=8, head=head)
    model.build_for_inference()
    model.save(tmp_path)
    loaded = NeuralLM.load(tmp_path)
    assert loaded.output_head.config == FullHeadConfig(chunk_positions=5, chunk_logits=60)
    ids = np.random.default_rng(1).integers(0, 30, 50)
    np.testing.assert_allclose(loaded.score(ids), model.score(ids), rtol=0, atol=1e-6)


def head_of(tied: bool, **options):
    from lmbench.models.recurrent import RecurrentLM

    model = RecurrentLM(37, 0, embedding_dim=6, hidden_size=6, tie_embeddings=tied, head={"kind": "full", **options})
    model.build_for_inference()
    kernel, bias = model.output_head._weights()
    bias.assign(np.random.default_rng(5).normal(0, 0.5, 37).astype(np.float32))  # zero at init: not a test
    return model.output_head


def weighted_nll_and_grads(head, nll_fn, h, labels, weight):
    import tensorflow as tf

    kernel, bias = head._weights()
    with tf.GradientTape() as tape:
        tape.watch(h)
        nll = nll_fn(h, labels)
        total = tf.reduce_sum(weight * nll)
    return [nll.numpy()] + [g.numpy() for g in tape.gradient(total, [h, kernel.value, bias.value])]


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {},  # one block, kept from the forward pass for the gradient (keep_logits_mb)
        {"keep_logits_mb": 0},  # one block, recomputed in the gradient pass
        {"chunk_positions": 64, "chunk_logits": 11 * 9},  # one chunk of positions, blocks of 9 tokens (the last 1)
        {"chunk_positions": 64, "chunk_logits": 11 * 9, "keep_logits_mb": 0},  # the same, recomputed
        {"chunk_positions": 4, "chunk_logits": 4 * 10},  # chunks of 4 positions (the last padded), blocks of 10
    ],
)
def test_fused_token_nll_equals_full_logits_in_value_and_gradient(tied, options):
    import tensorflow as tf

    from lmbench.models.heads import token_nll

    head = head_of(tied, **options)
    rng = np.random.default_rng(0)
    h = tf.constant(rng.normal(0, 1, (11, 6)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 37, 11).astype(np.int32))
    weight = tf.constant(rng.uniform(0.1, 2.0, 11).astype(np.float32))  # an upstream gradient per position
    fused = weighted_nll_and_grads(head, head.token_nll, h, labels, weight)
    reference = weighted_nll_and_grads(head, lambda h, y: token_nll(y, head.logits(h)), h, labels, weight)
    for ours, theirs in zip(fused, reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # and -log_softmax, picked by hand
    picked = -head.log_probs(h).numpy()[np.arange(11), labels.numpy()]
    np.testing.assert_allclose(fused[0], picked, rtol=1e-5, atol=1e-6)


def test_fused_token_nll_with_unknown_number_of_positions():
    # Scoring traces with unknown shapes (reduce_retracing): the chunk loop then runs in the graph.
    import tensorflow as tf

    from lmbench.models.heads import token_nll

    head = head_of(False, chunk_positions=3, chunk_logits=3 * 8)
    rng = np.random.default_rng(2)
    h = rng.normal(0, 1, (2, 5, 6)).astype(np.float32)
    labels = rng.integers(0, 37, (2, 5)).astype(np.int32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 6]), tf.TensorSpec([None, None], tf.int32)])
    def fused(h, y):
        with tf.GradientTape() as tape:
            tape.watch(h)
            nll = head.token_nll(h, y)
            total = tf.reduce_sum(nll)
        return nll, tape.gradient(total, h)

    nll, dh = fused(h, labels)
    h = tf.constant(h)
    with tf.GradientTape() as tape:
        tape.watch(h)
        reference = token_nll(labels, head.logits(h))
        total = tf.reduce_sum(reference)
    np.testing.assert_allclose(nll.numpy(), reference.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dh.numpy(), tape.gradient(total, h).numpy(), rtol=1e-5, atol=1e-6)


def test_fused_token_nll_in_bfloat16_stays_near_float32():
    import tensorflow as tf

    head = head_of(True, chunk_positions=64, chunk_logits=11 * 9)
    rng = np.random.default_rng(3)
    h = rng.normal(0, 1, (11, 6)).astype(np.float32)
    labels = tf.constant(rng.integers(0, 37, 11).astype(np.int32))
    nll32 = head.token_nll(tf.constant(h), labels)
    nll16 = head.token_nll(tf.constant(h, tf.bfloat16), labels)
    assert nll16.dtype == tf.float32
    np.testing.assert_allclose(nll16.numpy(), nll32.numpy(), rtol=0.02, atol=0.02)


@pytest.mark.parametrize(("keep_mb", "gemms"), [(1, 1), (0, 2)])
def test_kept_logits_spare_the_gradient_pass_its_recomputation(keep_mb, gemms):
    """One block of logits: computed once when it fits keep_logits_mb, twice (forward and gradient)
    when it must be recomputed."""
    import tensorflow as tf

    from lmbench.models.fused import FusedSoftmax

    fused, calls = FusedSoftmax(50, keep_logits_mb=keep_mb), []
    block_logits = fused._block_logits
    fused._block_logits = lambda *a: calls.append(a) or block_logits(*a)
    h, kernel = tf.Variable(tf.random.normal([8, 4])), tf.Variable(tf.random.normal([4, 50]))
    bias = tf.Variable(tf.zeros([50]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fused.nll(h, tf.constant([1] * 8), kernel, bias))
    tape.gradient(loss, [h, kernel, bias])
    assert len(calls) == gemms


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    ("tied", "rows", "options"),
    [
        (False, 11, {"chunk_logits": 11 * 5, "keep_logits_mb": 0}),  # 8 blocks of 5 tokens (the last 2): recomputed
        (True, 11, {"chunk_logits": 11 * 5, "keep_logits_mb": 0}),  # the same, the kernel transposed (tied)
        (False, 11, {"chunk_logits": 11 * 37 // 4}),  # 4 blocks of 9 and one of 1, kept: never looped
        (False, None, {"chunk_positions": 4, "chunk_logits": 4 * 10}),  # unknown rows: chunks of 4, blocks of 10
        (True, None, {"chunk_positions": 4, "chunk_logits": 4 * 10}),
        (False, 5, {"chunk_logits": 37 * 16 // 4}),  # at most 40 of 11 rows: buckets of 16, 32, 64 rows
    ],
)
def test_vocabulary_blocks_in_a_loop_give_the_numbers_of_the_unrolled_blocks(monkeypatch, dtype, tied, rows, options):
    """The fused softmax runs many vocabulary blocks in a tf.while_loop (a graph that does not grow
    with |V|): the same products in the same order, so the very same bits as one op per block."""
    import tensorflow as tf

    from lmbench.models import fused

    head = head_of(tied, **options)
    kernel, bias = head._weights()
    rng = np.random.default_rng(4)
    h = tf.constant(rng.normal(0, 1, (11, 6)).astype(np.float32), dtype)
    labels = tf.constant(rng.integers(0, 37, 11).astype(np.int32))
    weight = tf.constant(rng.uniform(0.1, 2.0, 11).astype(np.float32))

    def nll_and_grads():
        signature = [tf.TensorSpec([None, 6], dtype), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None])]

        @tf.function(input_signature=signature)
        def run(h, y, w):
            with tf.GradientTape() as tape:
                tape.watch(h)
                if rows == 5:  # a bounded dynamic number of rows, as an adaptive cluster's
                    nll = head.fused.nll(h[:rows], y[:rows], kernel, bias, max_rows=40)
                    w = w[:rows]
                else:
                    nll = head.fused.nll(h if rows is None else tf.ensure_shape(h, [rows, 6]), y, kernel, bias)
                total = tf.reduce_sum(w * nll)
            return [nll, *tape.gradient(total, [h, kernel.value, bias.value])]

        return [t.numpy() for t in run(h, labels, weight)]

    monkeypatch.setattr(fused, "LOOP_BLOCKS", 10**9)
    unrolled = nll_and_grads()
    monkeypatch.setattr(fused, "LOOP_BLOCKS", 2)
    looped = nll_and_grads()
    for ours, theirs in zip(looped, unrolled, strict=True):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
