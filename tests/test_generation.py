"""Generation: the Transformer's key/value cache against re-reading the window, greedy decoding and
nucleus sampling for every family, and one clear error for a bad sampling value."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import tensorflow as tf
from helpers import fitted

from lmbench.cli.generate import main as generate_main
from lmbench.errors import ConfigError
from lmbench.models.base import check_sampling, nucleus, sample_next, sample_tokens
from lmbench.models.recurrent import RecurrentLM
from lmbench.models.transformer import TransformerLM, refill_length

V, EOS, C = 23, 0, 12
VARIANTS = {
    "learned": {},
    "sinusoidal": {"positions": "sinusoidal"},
    "rope": {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
    "rope_gqa": {"positions": "rope", "n_kv_head": 2, "qk_norm": True},
    "learned_gqa": {"n_kv_head": 1},
}


def transformer(**kwargs) -> TransformerLM:
    model = TransformerLM(V, EOS, n_layer=2, n_head=4, d_model=16, d_ff=32, context=C, dropout=0.0, **kwargs)
    model.build_for_inference()
    return model


def prompt(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, V, n)


def window_log_probs(model: TransformerLM, window: list[int]) -> np.ndarray:
    hidden = model.features(tf.constant([window], dtype=tf.int32))[:, -1]
    return model.output_head.log_probs(hidden)[0].numpy()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_greedy_generation_is_the_uncached_one(variant):
    """Within the context (eos + 4 prompt tokens + 7 generated = 12) the cache gives every step the
    same history as re-reading the window: the same tokens, the same log-probabilities."""
    model = transformer(**VARIANTS[variant])
    p = prompt(4)
    cached = sample_tokens(model.stepper(p), 8, temperature=0, top_k=None, seed=None)
    uncached = sample_tokens(model.stepper(p, cached=False), 8, temperature=0, top_k=None, seed=None)
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(model.generate(p, 8, temperature=0), cached)  # `generate` is cached
    a, b = model.stepper(p), model.stepper(p, cached=False)
    for token in cached:
        np.testing.assert_allclose(a.next_logits(), b.next_logits(), rtol=1e-5, atol=1e-5)
        a.append(int(token))
        b.append(int(token))


@pytest.mark.parametrize("variant", ["learned", "rope_gqa"])
def test_a_full_cache_encodes_the_last_three_quarters_again(variant):
    """Past the context, the cached stepper's history restarts at the last refill_length(C) = 9
    tokens whenever the cache fills: each step equals the model reading exactly that window."""
    model = transformer(**VARIANTS[variant])
    p = prompt(20, seed=1)  # longer than the context: the first window is its last C tokens
    stepper = model.stepper(p)
    history = [EOS, *p.tolist()]
    start = len(history) - C
    assert refill_length(C) == 9
    for token in prompt(25, seed=2):
        window = history[start:]
        assert len(window) <= C
        np.testing.assert_allclose(stepper.next_logits(), window_log_probs(model, window), rtol=1e-5, atol=1e-5)
        stepper.append(int(token))
        history.append(int(token))
        if len(history) - start > C:
            start = len(history) - refill_length(C)


def test_top_p_keeps_the_smallest_set_with_mass_p():
    p = np.array([0.125, 0.5, 0.25, 0.0625, 0.0625])  # binary fractions: sums are exact
    assert nucleus(p, 0.5).tolist() == [False, True, False, False, False]  # 0.5 alone reaches 0.5
    assert nucleus(p, 0.6).tolist() == [False, True, True, False, False]  # 0.75 >= 0.6, 0.5 < 0.6
    assert nucleus(p, 0.75).tolist() == [False, True, True, False, False]
    assert nucleus(p, 0.8).tolist() == [True, True, True, False, False]  # 0.875
    assert nucleus(p, 0.9).tolist() == [True, True, True, True, False]  # a tie at the edge: the lower id
    assert nucleus(p, 1.0).all()
    assert nucleus(p, 1e-9).sum() == 1


def test_sampling_with_top_p_draws_only_from_the_nucleus_with_renormalized_odds():
    logits = np.log(np.array([0.125, 0.5, 0.25, 0.0625, 0.0625]))
    rng = np.random.default_rng(0)
    draws = np.array([sample_next(logits, rng, 1.0, None, 0.75) for _ in range(3000)])
    assert set(draws.tolist()) == {1, 2}
    assert abs((draws == 1).mean() - 2 / 3) < 0.03
    # top_k first, then top_p of what is left: k = 2 leaves {1: 2/3, 2: 1/3}, p = 0.6 only token 1
    assert {sample_next(logits, rng, 1.0, 2, 0.6) for _ in range(50)} == {1}


def test_greedy_takes_the_likeliest_token_whatever_the_seed():
    logits = np.array([0.1, 2.0, 2.0, -1.0])
    assert {sample_next(logits, np.random.default_rng(s), 0.0, None, 0.3) for s in range(20)} == {1}


@pytest.mark.parametrize("family", ["ngram", "lstm", "transformer"])
def test_every_family_decodes_greedily_and_by_nucleus(family):
    if family == "ngram":
        model = fitted("mkn", 3)
        p = np.array([3, 4])
    elif family == "lstm":
        model = RecurrentLM(V, EOS, cell="lstm", embedding_dim=8, hidden_size=8, num_layers=1)
        model.build_for_inference()
        p = prompt(3)
    else:
        model = transformer(**VARIANTS["rope"])
        p = prompt(3)
    greedy = model.generate(p, 6, temperature=0, seed=1)
    np.testing.assert_array_equal(greedy, model.generate(p, 6, temperature=0, seed=2))
    stepper, expected = model.stepper(p), []
    for _ in range(6):
        expected.append(int(np.argmax(stepper.next_logits())))
        stepper.append(expected[-1])
    assert greedy.tolist() == expected
    # A tiny nucleus is the likeliest token alone: greedy again.
    np.testing.assert_array_equal(model.generate(p, 6, top_p=1e-6, seed=3), greedy)
    nucleus_sample = model.generate(p, 10, top_p=0.9, seed=4)
    np.testing.assert_array_equal(nucleus_sample, model.generate(p, 10, top_p=0.9, seed=4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.5}, "temperature must be >= 0"), ({"temperature": math.nan}, "temperature"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"), ({"top_p": 1.5}, "top_p"), ({"top_p": math.nan}, "top_p"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_a_bad_sampling_value_is_one_config_error(kwargs, message, capsys):
    with pytest.raises(ConfigError, match=message):
        check_sampling(**{"temperature": 1.0, "top_k": None, **kwargs})
    with pytest.raises(ConfigError, match=message):  # before the model is touched
        fitted("mkn", 2).generate(np.array([3]), 5, **kwargs)
    # lmbench-generate: one line, exit status 2, before it looks for the model (which does not exist)
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in kwargs.items()]
    with pytest.raises(SystemExit) as exit_:
        generate_main(["no-such-model", *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lmbench-generate: error: ") and err.count("\n") == 1
    assert re.search(message, err)
