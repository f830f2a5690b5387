"""Adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs"), the output
layer fairseq trains WikiText-103 with.

Tokens are ranked by training frequency and cut by `cutoffs` into a head (the `cutoffs[0]` most
frequent tokens) and tail clusters. The head layer scores the head tokens plus one entry per tail
cluster; tail cluster i projects the hidden state down to `input_dim // factor**(i+1)` dimensions
and scores its own tokens. So

    log p(t) = log p_head(t)                               t in the head
    log p(t) = log p_head(cluster i) + log p_tail_i(t)     t in tail cluster i

which is an exact, normalized distribution over the whole vocabulary (each token scored once).
Training and scoring (`token_nll`) send only the positions whose target falls in a tail cluster
through it, so no [positions x |V|] tensor is ever made; `log_probs` builds the full distribution
for generation (one position at a time).

Which tokens are frequent is a property of the ids, not of the layer: `rank` (a non-trainable
variable saved with the weights) maps every id to its frequency rank. It starts as the identity --
right for lmbench's word vocabularies, which `Vocabulary.build` already sorts by training frequency
after the special tokens -- and `adapt(train ids)` sets it from the training counts, which a subword
vocabulary (ids in the tokenizer's own order) needs. The distribution is exact whatever `rank` is;
the ranking only decides how much work each token costs.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from lmbench.errors import ConfigError


def check_adaptive(vocab_size: int, input_dim: int, cutoffs, factor) -> tuple[list[int], float]:
    """The cutoffs and factor as the layer uses them, or a `ConfigError` saying what is wrong."""
    if not isinstance(cutoffs, (list, tuple)) or not cutoffs:
        raise ConfigError(
            f"model.head.cutoffs must be a non-empty list of token ranks, e.g. [20000, 60000], got {cutoffs!r}"
        )
    if any(isinstance(c, bool) or not isinstance(c, int) for c in cutoffs):
        raise ConfigError(f"model.head.cutoffs must be whole numbers, got {list(cutoffs)}")
    cutoffs = [int(c) for c in cutoffs]
    if any(b <= a for a, b in zip(cutoffs, cutoffs[1:])) or cutoffs[0] <= 0 or cutoffs[-1] >= vocab_size:
        raise ConfigError(
            f"model.head.cutoffs={cutoffs} must be strictly increasing, each > 0 and < the vocabulary size "
            f"{vocab_size}: the head keeps the cutoffs[0] most frequent tokens, and each following cutoff "
            "starts a tail cluster (the last one ends at the vocabulary size). For this vocabulary choose "
            f"values below {vocab_size}, e.g. [{max(1, vocab_size // 10)}]."
        )
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor < 1:
        raise ConfigError(
            f"model.head.factor={factor!r} must be a finite number >= 1: tail cluster i projects the hidden "
            "state to input_dim // factor**(i+1) dimensions (fairseq and PyTorch use 4; 1 keeps the full width)"
        )
    smallest = int(input_dim // factor ** len(cutoffs))
    if smallest < 1:
        raise ConfigError(
            f"model.head.factor={factor} leaves the last of {len(cutoffs)} tail clusters "
            f"{input_dim} // {factor}**{len(cutoffs)} = 0 dimensions; lower the factor or use fewer cutoffs"
        )
    return cutoffs, float(factor)


def frequency_rank(train_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """rank[id]: the id's place when ids are sorted by descending training count (ties by id)."""
    counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=vocab_size)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(vocab_size, dtype=np.int32)
    rank[order] = np.arange(vocab_size, dtype=np.int32)
    return rank


class AdaptiveSoftmax(keras.layers.Layer):
    """Hidden states [..., input_dim] -> per-token negative log-likelihoods or log-probabilities."""

    def __init__(self, vocab_size: int, input_dim: int, cutoffs, factor: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        self.cutoffs, self.factor = check_adaptive(vocab_size, input_dim, cutoffs, factor)
        self.vocab_size, self.input_dim = int(vocab_size), int(input_dim)
        bounds = [*self.cutoffs, self.vocab_size]
        self.cluster_sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        # Biases on the head and tail scores: they learn the unigram distribution in a few steps.
        self.head = keras.layers.Dense(self.cutoffs[0] + len(self.cluster_sizes), name="head")
        self.tails = [
            keras.Sequential(
                [
                    keras.layers.Dense(int(input_dim // self.factor ** (i + 1)), use_bias=False),
                    keras.layers.Dense(size),
                ],
                name=f"tail_{i}",
            )
            for i, size in enumerate(self.cluster_sizes)
        ]
        self.rank = self.add_weight(
            shape=(self.vocab_size,),
            dtype="int32",
            trainable=False,
            initializer=lambda shape, dtype=None: tf.range(shape[0], dtype="int32"),
            name="rank",
        )

    def build(self, input_shape):
        self.head.build((None, self.input_dim))
        for tail in self.tails:
            tail.build((None, self.input_dim))

    def adapt(self, train_ids: np.ndarray) -> None:
        """Rank the ids by their training counts (see the module docstring)."""
        self.rank.assign(frequency_rank(train_ids, self.vocab_size))

    def token_nll(self, hidden, labels):
        """-log p(label) at every position, float32 [...]: `hidden` [..., input_dim], `labels` [...]."""
        h = tf.reshape(hidden, [-1, self.input_dim])
        ranks = tf.gather(self.rank, tf.reshape(tf.cast(labels, tf.int32), [-1]))
        cluster = tf.reduce_sum(tf.cast(ranks[:, None] >= tf.constant(self.cutoffs)[None, :], tf.int32), axis=1)
        head_target = tf.where(cluster == 0, ranks, self.cutoffs[0] + cluster - 1)
        nll = sparse_nll(head_target, self.head(h))
        for i, tail in enumerate(self.tails):
            rows = tf.where(cluster == i + 1)  # [n_i, 1]: only these positions pay for cluster i
            tail_nll = sparse_nll(tf.gather_nd(ranks, rows) - self.cutoffs[i], tail(tf.gather_nd(h, rows)))
            nll = tf.tensor_scatter_nd_add(nll, rows, tail_nll)
        return tf.reshape(nll, tf.shape(labels))

    def log_probs(self, hidden):
        """log p of every token, float32 [..., vocab_size], in id order."""
        h = tf.reshape(hidden, [-1, self.input_dim])
        head = tf.nn.log_softmax(tf.cast(self.head(h), tf.float32))
        shortlist = self.cutoffs[0]
        parts = [head[:, :shortlist]]
        for i, tail in enumerate(self.tails):
            cluster = head[:, shortlist + i : shortlist + i + 1]
            parts.append(cluster + tf.nn.log_softmax(tf.cast(tail(h), tf.float32)))
        by_id = tf.gather(tf.concat(parts, axis=-1), self.rank, axis=-1)
        return tf.reshape(by_id, tf.concat([tf.shape(hidden)[:-1], [self.vocab_size]], axis=0))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "input_dim": self.input_dim,
            "cutoffs": self.cutoffs,
            "factor": self.factor,
        }


def sparse_nll(labels, logits):
    """-log softmax(logits)[label] in float32, for a number of rows known only when the step runs
    (TensorFlow's fused kernel; no XLA, which would compile again for every new row count)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))
