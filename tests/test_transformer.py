"""The Transformer family: exact sliding-window scoring, the context limit, generation, saving."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lmbench.errors import ConfigError
from lmbench.models.transformer import TransformerLM, sliding_windows

V, EOS, C = 13, 0, 6


def tiny(**kwargs) -> TransformerLM:
    kwargs = {"n_layer": 2, "n_head": 2, "d_model": 8, "d_ff": 16, "context": C, **kwargs}
    model = TransformerLM(vocab_size=V, eos_id=EOS, **kwargs)
    model.build_for_inference()
    return model


def random_ids(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n)


def logp_after(model, history: np.ndarray, token: int) -> float:
    hidden, _ = model(tf.constant([history], dtype=tf.int32))
    return float(model.output_head.log_probs(hidden[0, -1:])[0, token])


@pytest.mark.parametrize("n", [1, 5, 6, 7, 23, 24, 100])
@pytest.mark.parametrize("stride", [1, 2, 5, 6])
def test_windows_score_every_token_once_with_enough_history(n, stride):
    starts, ends = sliding_windows(n, C, stride)
    lows = np.concatenate([[0], ends[:-1]])
    scored = np.concatenate([np.arange(lo, e) for lo, e in zip(lows, ends)])
    np.testing.assert_array_equal(scored, np.arange(n))  # each position once, in order
    assert ((ends - starts) == min(n, C)).all()  # every window full, so one batch shape
    for lo, s, e in zip(lows, starts, ends):
        history = np.arange(lo, e) - s + 1  # tokens of input each scored position sees
        assert history.max() <= C
        assert (history >= np.minimum(np.arange(lo, e) + 1, C - stride + 1)).all()


def naive_scores(model, ids: np.ndarray, stride: int) -> list[float]:
    """One model call per token, on the history the sliding window gives it: all of it (from the
    leading eos) up to `context` tokens, then a window that starts on a multiple of `stride`, the
    last window pulled back to end at the last token."""
    seq = np.concatenate([[EOS], ids])  # seq[p] is the input that predicts ids[p]
    n = len(ids)
    out = []
    for p, token in enumerate(ids):
        start = 0 if p < C else min(((p - C) // stride + 1) * stride, n - C)
        out.append(logp_after(model, seq[start : p + 1], token))
    return out


@pytest.mark.parametrize(
    "stride,positions,tied",
    [(1, "learned", False), (3, "learned", True), (C, "sinusoidal", False), (None, "sinusoidal", True)],
)
@pytest.mark.parametrize("score_positions", [1, 1024])  # groups of batch_size (the last partial), or one group
def test_score_equals_per_token_loop(stride, positions, tied, score_positions, monkeypatch):
    import lmbench.models.transformer as transformer

    monkeypatch.setattr(transformer, "SCORE_POSITIONS", score_positions)
    model = tiny(eval_stride=stride, positions=positions, tie_embeddings=tied)
    ids = random_ids(29)
    fast = model.score(ids, batch_size=4)
    np.testing.assert_allclose(fast, naive_scores(model, ids, model.stride), rtol=1e-5, atol=1e-6)


def test_stride_one_gives_every_token_the_last_context_tokens():
    model = tiny(eval_stride=1)
    ids = random_ids(20, seed=1)
    seq = np.concatenate([[EOS], ids])
    exact = [logp_after(model, seq[max(0, p + 1 - C) : p + 1], t) for p, t in enumerate(ids)]
    np.testing.assert_allclose(model.score(ids, batch_size=3), exact, rtol=1e-5, atol=1e-6)


def test_stride_equal_to_context_is_the_block_method():
    model = tiny(eval_stride=C)
    ids = random_ids(4 * C, seed=2)
    seq = np.concatenate([[EOS], ids])
    hidden, _ = model(tf.constant(seq[:-1].reshape(4, C), dtype=tf.int32))
    blocks = tf.gather(model.output_head.log_probs(hidden), ids.reshape(4, C), batch_dims=2).numpy().ravel()
    np.testing.assert_allclose(model.score(ids, batch_size=2), blocks, rtol=1e-5, atol=1e-6)
    assert model.eval_method == f"sliding window, context {C}, stride {C}"


def test_split_shorter_than_context_and_progress_counts_every_token():
    model = tiny()
    ids = random_ids(4)
    seen = []
    short = model.score(ids, progress=seen.append)
    assert sum(seen) == 4
    np.testing.assert_allclose(short, naive_scores(model, ids, model.stride), rtol=1e-5, atol=1e-6)
    seen.clear()
    model.score(random_ids(50), batch_size=3, progress=seen.append)
    assert sum(seen) == 50


def test_input_longer_than_context_is_refused():
    model = tiny()
    with pytest.raises(ConfigError, match="trainer.bptt <= model.context"):
        model(tf.zeros((2, C + 1), dtype=tf.int32))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"d_model": 10, "n_head": 4}, "divisible"),
        ({"eval_stride": C + 1}, "eval_stride"),
        ({"positions": "rotary"}, "positions"),
        ({"dropout": 1.0}, "dropout"),
        ({"context": 0}, ">= 1"),
    ],
)
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TransformerLM(vocab_size=V, eos_id=EOS, **{"n_head": 2, "d_model": 8, "context": C, **kwargs})


def test_stateless_across_windows():
    model = tiny()
    assert model.initial_state(3) == []
    x = tf.constant(random_ids(2 * C).reshape(2, C), dtype=tf.int32)
    a, states = model(x, states=model.initial_state(2))
    b, _ = model(x, states=states)
    assert states == []
    np.testing.assert_allclose(a, b)


def test_generate_reads_only_the_last_context_tokens():
    model = tiny()
    prompt = random_ids(3 * C, seed=3)
    greedy = model.generate(prompt, 1, top_k=1)
    hidden, _ = model(tf.constant([prompt[-C:]], dtype=tf.int32))
    assert greedy[0] == int(np.argmax(model.output_head.log_probs(hidden[0, -1:])[0]))
    sample = model.generate(prompt, 25, temperature=0.8, top_k=5, seed=7)
    assert len(sample) == 25 and ((0 <= sample) & (sample < V)).all()
    np.testing.assert_array_equal(sample, model.generate(prompt, 25, temperature=0.8, top_k=5, seed=7))
    assert len(model.generate(np.array([], dtype=np.int64), 3, seed=0)) == 3


@pytest.mark.parametrize("positions,tied", [("learned", False), ("sinusoidal", True)])
def test_save_and_load_round_trip(tmp_path, positions, tied):
    model = tiny(positions=positions, tie_embeddings=tied, eval_stride=2, dropout=0.0)
    model.save(tmp_path / "m")
    loaded = TransformerLM.load(tmp_path / "m")
    assert loaded.get_config() == model.get_config()
    ids = random_ids(17, seed=4)
    np.testing.assert_allclose(loaded.score(ids), model.score(ids), rtol=1e-6)
