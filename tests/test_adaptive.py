"""The adaptive softmax head: an exact distribution, the reference scores, its config, a real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from lmbench.errors import ConfigError
from lmbench.models.adaptive import frequency_rank
from lmbench.models.heads import build_head
from lmbench.models.recurrent import RecurrentLM

V, D = 300, 16


def adaptive_head(cutoffs=(40, 120), factor=2.0, vocab_size=V, input_dim=D, seed=0):
    """A head with random weights, and a rank permutation from skewed random counts (so that the
    ranks are not the identity: id order and frequency order differ, as for a subword vocabulary)."""
    head = build_head(
        {"kind": "adaptive", "cutoffs": list(cutoffs), "factor": factor},
        owner=None, vocab_size=vocab_size, input_dim=input_dim,
    )
    rng = np.random.default_rng(seed)
    head.set_weights([rng.normal(0, 0.5, w.shape) if w.dtype == "float32" else w for w in head.get_weights()])
    head.adapt(rng.zipf(1.3, 5000) % vocab_size)
    return head


def test_the_distribution_over_the_whole_vocabulary_sums_to_one():
    head = adaptive_head()
    hidden = tf.random.stateless_normal([4, 9, D], seed=[1, 2], stddev=3.0)
    log_p = head.log_probs(hidden).numpy().astype(np.float64)
    assert log_p.shape == (4, 9, V)
    np.testing.assert_allclose(np.exp(log_p).sum(axis=-1), 1.0, atol=1e-5)
    assert np.isfinite(log_p).all()


def test_token_nll_is_the_reference_picked_from_log_probs():
    head = adaptive_head()
    hidden = tf.random.stateless_normal([3, 50, D], seed=[3, 4])
    labels = np.random.default_rng(5).integers(0, V, (3, 50))
    labels[0, :3] = np.argsort(head.softmax.rank.numpy())[[0, 40, 120]]  # the first token of each cluster
    nll = head.token_nll(hidden, tf.constant(labels)).numpy()
    reference = -np.take_along_axis(head.log_probs(hidden).numpy(), labels[..., None], axis=-1)[..., 0]
    assert nll.dtype == np.float32 and nll.shape == (3, 50)
    np.testing.assert_allclose(nll, reference, rtol=1e-5, atol=1e-5)


def test_a_tiny_head_by_hand():
    """|V| = 4, cutoffs [2]: tokens 0, 1 in the head, 2, 3 in one tail cluster; factor 1, rank the
    identity. log p(t) = log softmax(head)[t] for t < 2, log softmax(head)[2] + log softmax(tail)[t-2]."""
    head = build_head({"kind": "adaptive", "cutoffs": [2], "factor": 1}, owner=None, vocab_size=4, input_dim=2)
    w_head, b_head = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]), np.array([0.5, 0.0, 0.0])
    w_down, w_out, b_out = np.eye(2), np.array([[1.0, -1.0], [2.0, 0.0]]), np.array([0.0, 1.0])
    head.softmax.head.set_weights([w_head, b_head])
    head.softmax.tails[0].set_weights([w_down, w_out, b_out])
    h = np.array([[1.0, 2.0]])
    head_scores = h @ w_head + b_head  # [1.5, 2, 0]
    tail_scores = h @ w_down @ w_out + b_out  # [5, 0]

    def log_softmax(x):
        return x - np.log(np.exp(x).sum())

    in_head = log_softmax(head_scores)[0]
    expected = np.concatenate([in_head[:2], in_head[2] + log_softmax(tail_scores)[0]])
    np.testing.assert_allclose(head.log_probs(tf.constant(h, tf.float32)).numpy()[0], expected, rtol=1e-6)
    nll = head.token_nll(tf.constant(np.repeat(h, 4, axis=0), tf.float32), tf.constant([0, 1, 2, 3])).numpy()
    np.testing.assert_allclose(nll, -expected, rtol=1e-6)


def test_gradients_are_finite_and_reach_every_cluster_that_has_a_target():
    head = adaptive_head()
    hidden = tf.Variable(tf.random.stateless_normal([2, 30, D], seed=[6, 7]))
    labels = tf.constant(np.argsort(head.softmax.rank.numpy())[np.tile([0, 50, 200], 20)].reshape(2, 30))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(head.token_nll(hidden, labels))
    grads = tape.gradient(loss, [hidden, *head.trainable_variables])
    for g in grads:
        g = tf.convert_to_tensor(g).numpy()
        assert np.isfinite(g).all() and np.abs(g).sum() > 0


def test_fused_gradients_equal_those_of_the_dense_reference_inside_a_compiled_step():
    """The head and every cluster run the full head's fused softmax (hand-written gradient; the
    clusters' rows are known only when the step runs, padded to a bucket): value and gradient of
    the mean nll must be those of picking from the dense `log_probs`, in a tf.function as in training."""
    head = adaptive_head()
    hidden = tf.Variable(tf.random.stateless_normal([3, 41, D], seed=[8, 9], stddev=2.0))
    labels = tf.constant(np.random.default_rng(10).integers(0, V, (3, 41)))
    variables = [hidden, *head.trainable_variables]

    @tf.function
    def fused():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(head.token_nll(hidden, labels))
        return loss, tape.gradient(loss, variables)

    with tf.GradientTape() as tape:
        log_p = head.log_probs(hidden)
        reference = -tf.reduce_mean(tf.gather(log_p, labels, batch_dims=2))
    expected = tape.gradient(reference, variables)
    loss, grads = fused()
    np.testing.assert_allclose(loss.numpy(), reference.numpy(), rtol=1e-5)
    for g, e, v in zip(grads, expected, variables):
        g, e = tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(e).numpy()
        np.testing.assert_allclose(g, e, atol=2e-6, err_msg=v.name)


def test_frequency_rank_puts_the_most_frequent_ids_first_ties_by_id():
    ids = np.array([3, 3, 3, 1, 1, 4, 4, 0])
    assert frequency_rank(ids, 6).tolist() == [3, 1, 4, 0, 2, 5]  # 3, then 1 and 4, then 0, then unseen 2, 5


@pytest.mark.parametrize(
    "head, says",
    [
        ({"kind": "adaptive", "cutoffs": [100, 50]}, "strictly increasing"),
        ({"kind": "adaptive", "cutoffs": [0, 50]}, "strictly increasing"),
        ({"kind": "adaptive", "cutoffs": [50, 300]}, "< the vocabulary size 300"),
        ({"kind": "adaptive", "cutoffs": []}, "non-empty list"),
        ({"kind": "adaptive"}, r"cutoffs=\[20000, 60000\] must each be < the vocabulary size 300"),  # defaults
        ({"kind": "adaptive", "cutoffs": [50], "factor": 0.5}, "finite number >= 1"),
        ({"kind": "adaptive", "cutoffs": [50, 100, 200], "factor": 4}, "0 dimensions"),
    ],
)
def test_bad_adaptive_options_are_one_paragraph(head, says):
    with pytest.raises(ConfigError, match=says):
        RecurrentLM(V, 0, embedding_dim=D, hidden_size=D, head=head)


def test_adaptive_with_tied_embeddings_is_refused():
    with pytest.raises(ConfigError, match="tie_embeddings"):
        RecurrentLM(V, 0, embedding_dim=D, hidden_size=D, tie_embeddings=True,
                    head={"kind": "adaptive", "cutoffs": [50]})


def test_a_network_with_the_adaptive_head_scores_as_its_log_probs_say():
    model = RecurrentLM(V, 0, embedding_dim=D, hidden_size=D, num_layers=1,
                        head={"kind": "adaptive", "cutoffs": [40, 120], "factor": 2})
    model.build_for_inference()
    ids = np.random.default_rng(8).integers(1, V, 60)
    ids[[20, 45]] = 0
    scores = model.score(ids, batch_size=1)
    hidden, _ = model(tf.constant(np.concatenate([[0], ids[:-1]])[None], tf.int32))
    log_p = model.output_head.log_probs(hidden).numpy()[0]
    np.testing.assert_allclose(scores, log_p[np.arange(60), ids], rtol=1e-5)
    assert len(model.generate(ids[:5], 7, seed=1)) == 7


def test_a_tiny_adaptive_run_reproduces_its_logged_test_ppl_after_loading(tmp_path):
    from helpers import only_run, tiny_cfg

    from lmbench.artifacts.bundle import load_bundle
    from lmbench.training.run import run

    # |V| = 10: head of the 4 most frequent words, tails [4, 7) and [7, 10)
    cfg = tiny_cfg(tmp_path, "model/head=adaptive", "model.head.cutoffs=[4,7]", "model.head.factor=2",
                   "model.tie_embeddings=false", "trainer.max_steps=30")
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, r = only_run(cfg.tracking.uri)
    assert r.info.status == "FINISHED"
    assert summary["test/ppl"] < 6.0  # it learned something: uniform is 10
    bundle = load_bundle(str(tmp_path / "out"))
    assert bundle.model.output_head.options() == {
        "kind": "adaptive", "cutoffs": [4, 7], "factor": 2.0, "chunk_positions": 1024, "chunk_logits": 1 << 20,
        "keep_logits_mb": 128.0,
    }
    _, train_ids, _ = bundle.encode((tmp_path / "train.txt").read_text(encoding="utf-8"))
    ranks = bundle.model.output_head.softmax.rank.numpy()
    assert ranks.tolist() == frequency_rank(train_ids, 10).tolist() != list(range(10))  # adapted, and saved
    scored = bundle.score_text((tmp_path / "test.txt").read_text(encoding="utf-8"))
    assert scored.n_tokens == summary["test/tokens"]
    assert math.exp(scored.nats / scored.n_tokens) == pytest.approx(r.data.metrics["test/ppl"], rel=1e-6)
