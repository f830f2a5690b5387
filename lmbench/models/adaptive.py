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
through it, and every softmax (the head's and each cluster's) is the fused, chunked one of the full
softmax head (`lmbench.models.fused`), so no [positions x |V|] tensor is ever made; `log_probs`
builds the full distribution for generation (one position at a time).

Which tokens are frequent is a property of the ids, not of the layer: `rank` (a non-trainable
variable saved with the weights) maps every id to its frequency rank. It starts as the identity --
right for lmbench's word vocabularies, which `Vocabulary.build` already sorts by training frequency
after the special tokens -- and `adapt(train ids)` sets it from the training counts, which a subword
vocabulary (ids in the tokenizer's own order) needs. The distribution is exact whatever `rank` is;
the ranking only decides how much work each token costs.

That work, for the FLOPs count (`flops_per_token`): every position pays for the head layer, a
position whose target falls in tail cluster i also for that cluster's projection and output, so the
count weighs each cluster by its share of the training tokens. `adapt` records those shares (not
saved: a copy built from the config, a loaded bundle or a fine-tune's source has none until
`observe(train ids)`); without them the shares are Zipf's law's over the ranks (p(rank r) ∝ 1/(r+1)),
a stated estimate.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from lmbench.data.mapped import count_ids
from lmbench.errors import ConfigError
from lmbench.models.fused import FusedSoftmax


def check_fits(vocab_size: int, input_dim: int, cutoffs: list[int], factor: float) -> None:
    """What `AdaptiveHeadConfig.check` cannot know: the cutoffs against the vocabulary, the tail
    widths against the hidden size (a `ConfigError` before anything is trained)."""
    if cutoffs[-1] >= vocab_size:
        raise ConfigError(
            f"model.head.cutoffs={cutoffs} must each be < the vocabulary size {vocab_size}: the last cutoff "
            "starts the last tail cluster, which ends at the vocabulary size. For this vocabulary choose "
            f"smaller cutoffs, e.g. [{max(1, vocab_size // 10)}], or the full softmax (model/head=full)."
        )
    if int(input_dim // factor ** len(cutoffs)) < 1:
        raise ConfigError(
            f"model.head.factor={factor} leaves the last of {len(cutoffs)} tail clusters "
            f"{input_dim} // {factor}**{len(cutoffs)} = 0 dimensions; lower the factor or use fewer cutoffs"
        )


def token_counts(train_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each id occurs in the training ids, [vocab_size]."""
    return count_ids(train_ids, vocab_size)  # in pieces: no copy of the split, none of its pages kept


def frequency_rank(train_ids: np.ndarray, vocab_size: int, counts: np.ndarray | None = None) -> np.ndarray:
    """rank[id]: the id's place when ids are sorted by descending training count (ties by id)."""
    counts = token_counts(train_ids, vocab_size) if counts is None else counts
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(vocab_size, dtype=np.int32)
    rank[order] = np.arange(vocab_size, dtype=np.int32)
    return rank


def zipf_shares(bounds: list[int]) -> np.ndarray:
    """The share of tokens with rank in [bounds[k], bounds[k+1]) under Zipf's law, p(rank r) ∝
    1/(r+1), over ranks 0..bounds[-1]-1: the estimate of the cluster shares before `adapt`."""
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, bounds[-1] + 1))])
    return np.diff(harmonic[bounds]) / harmonic[bounds[-1]]


class AdaptiveSoftmax(keras.layers.Layer):
    """Hidden states [..., input_dim] -> per-token negative log-likelihoods or log-probabilities."""

    def __init__(
        self, vocab_size: int, input_dim: int, cutoffs: list[int], factor: float = 4.0,
        kernel_initializer="glorot_uniform", chunk_positions: int = 1024, chunk_logits: int = 1 << 20,
        keep_logits_mb: float = 0.0, **kwargs,
    ):
        super().__init__(**kwargs)
        check_fits(vocab_size, input_dim, cutoffs, factor)
        self.cutoffs, self.factor = [int(c) for c in cutoffs], float(factor)
        self.vocab_size, self.input_dim = int(vocab_size), int(input_dim)
        bounds = [*self.cutoffs, self.vocab_size]
        self.cluster_sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        # Biases on the head and tail scores: they learn the unigram distribution in a few steps.
        init = kernel_initializer
        self.head = keras.layers.Dense(self.cutoffs[0] + len(self.cluster_sizes), kernel_initializer=init, name="head")
        self.tails = [
            keras.Sequential(
                [
                    keras.layers.Dense(self.tail_width(i), use_bias=False, kernel_initializer=init),
                    keras.layers.Dense(size, kernel_initializer=init),
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
        self._observed_shares = None  # per part (head, then each tail cluster), set by `observe`
        # Each softmax (the head's, each cluster's) is the fused one of the full softmax head.
        chunks = {"chunk_positions": chunk_positions, "chunk_logits": chunk_logits, "keep_logits_mb": keep_logits_mb}
        self.fused = [FusedSoftmax(self.cutoffs[0] + len(self.cluster_sizes), **chunks)]
        self.fused += [FusedSoftmax(size, **chunks) for size in self.cluster_sizes]
        # Built now, not at a first call: token_nll and log_probs are not `__call__`, and the
        # optimizer and load_weights need every variable once the model is built.
        for layer in (self.head, *self.tails):
            layer.build((None, self.input_dim))
        self.built = True

    def tail_width(self, i: int) -> int:
        """The width tail cluster i projects the hidden state to (fairseq's and PyTorch's rule)."""
        return int(self.input_dim // self.factor ** (i + 1))

    def adapt(self, train_ids: np.ndarray) -> None:
        """Rank the ids by their training counts (see the module docstring), and record how the
        training tokens then fall on the head and the tail clusters (`observe`)."""
        counts = token_counts(train_ids, self.vocab_size)
        self.rank.assign(frequency_rank(train_ids, self.vocab_size, counts))
        self._observe_counts(counts)

    def observe(self, train_ids: np.ndarray) -> None:
        """Record the share of the training tokens that falls in the head and in each tail cluster
        under the current ranking, for `flops_per_token`; changes no weight (a fine-tune, whose
        source brings its ranking, calls this instead of `adapt`)."""
        self._observe_counts(token_counts(train_ids, self.vocab_size))

    def _observe_counts(self, counts: np.ndarray) -> None:
        by_rank = np.zeros(self.vocab_size, dtype=np.float64)
        by_rank[self.rank.numpy()] = counts
        cumulative = np.concatenate([[0.0], np.cumsum(by_rank)])
        per_part = np.diff(cumulative[[0, *self.cutoffs, self.vocab_size]])
        self._observed_shares = per_part / max(cumulative[-1], 1.0)

    @property
    def shares_from(self) -> str:
        """Where `cluster_shares` comes from: the training ids, or Zipf's law (see the module docstring)."""
        return "training ids" if self._observed_shares is not None else "Zipf's law (no training ids observed)"

    def cluster_shares(self) -> list[float]:
        """The share of the tokens whose target falls in each tail cluster (in order): observed on
        the training ids (`adapt`, `observe`), else Zipf's law's estimate."""
        shares = self._observed_shares
        if shares is None:
            shares = zipf_shares([0, *self.cutoffs, self.vocab_size])
        return [float(x) for x in shares[1:]]

    def flops_per_token(self) -> float:
        """Forward FLOPs (a multiply-add is 2) of `token_nll` per position: the head layer for every
        position, and each tail cluster's projection and output for its share of the positions
        (`cluster_shares`). Not counted: the padding of a cluster's rows to a static bucket
        (`fused.row_buckets`), the gathers and scatters, and the softmax itself (elementwise)."""
        d = self.input_dim
        flops = 2.0 * d * (self.cutoffs[0] + len(self.cluster_sizes))
        for i, (share, size) in enumerate(zip(self.cluster_shares(), self.cluster_sizes)):
            width = self.tail_width(i)
            flops += share * (2.0 * d * width + 2.0 * width * size)
        return flops

    def token_nll(self, hidden, labels):
        """-log p(label) at every position, float32 [...]: `hidden` [..., input_dim], `labels` [...]."""
        h = tf.reshape(hidden, [-1, self.input_dim])
        ranks = tf.gather(self.rank, tf.reshape(tf.cast(labels, tf.int32), [-1]))
        cluster = tf.reduce_sum(tf.cast(ranks[:, None] >= tf.constant(self.cutoffs)[None, :], tf.int32), axis=1)
        head_target = tf.where(cluster == 0, ranks, self.cutoffs[0] + cluster - 1)
        nll = self.fused[0].nll(h, head_target, self.head.kernel, self.head.bias)
        for i, tail in enumerate(self.tails):
            rows = tf.where(cluster == i + 1)  # [n_i, 1]: only these positions pay for cluster i
            down, out = tail.layers
            tail_h = down(tf.gather_nd(h, rows))
            targets = tf.gather_nd(ranks, rows) - self.cutoffs[i]
            tail_nll = self.fused[i + 1].nll(tail_h, targets, out.kernel, out.bias, max_rows=h.shape[0])
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

