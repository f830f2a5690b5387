"""Output heads: the layer that turns a neural family's hidden states into token probabilities.

Every neural family ends in one (`model.output_head`), chosen by the family's `head` argument
(`model.head` in the config, checked by `lmbench.config.schema.head_config`):

    head: {kind: full}        # the exact softmax over the vocabulary (FullSoftmaxHead)

The interface, the same for every kind:

    head.token_nll(hidden, labels) -> float32 [...]
        -log p(label) at every position; `hidden` [..., d] in the model's compute dtype, `labels`
        [...] int. The training loss and the scores. Memory-bounded: its memory does not grow with
        positions x |V|, in the forward pass or in the gradient.
    head.log_probs(hidden) -> float32 [..., |V|]
        the whole normalized distribution (log p of every token), for generation and tests.
    head.flops_per_token() -> float
        forward FLOPs of `token_nll` per position (a multiply-add is 2; GEMMs only), for the
        family's `flops_per_token`.

A kind is a config class in `schema.HEAD_KINDS` and an `OutputHead` subclass in `HEADS` here,
built as `cls(config, owner=..., vocab_size=..., input_dim=..., tied_embedding=...,
kernel_initializer=...)`: `owner` is the family (a head may keep its variables there),
`tied_embedding` the family's input `keras.layers.Embedding` when the family ties input and output
embeddings, else None.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from lmbench.config.schema import AdaptiveHeadConfig, FullHeadConfig, head_config
from lmbench.errors import ConfigError
from lmbench.models.adaptive import AdaptiveSoftmax
from lmbench.models.fused import FusedSoftmax


@tf.function(jit_compile=True, reduce_retracing=True)
def token_nll(labels, logits):
    """−log p(label) at every position from full `logits` [..., V] (any float type, computed in
    float32), `labels` [...] int: the reference the heads are tested against.

    Same values as `tf.nn.sparse_softmax_cross_entropy_with_logits`, faster on CPU: compiled by
    XLA with a hand-written gradient (softmax − one-hot), so the float32 cast, log-sum-exp, pick and
    gradient each fuse into passes over the [positions, V] logits instead of several separate
    kernels (`benchmarks/projection_kernels.py` compares the two).
    """

    @tf.custom_gradient
    def nll(x, y):  # x [positions, V], y [positions]
        lse = tf.reduce_logsumexp(x, axis=-1)
        out = lse - tf.gather(x, y, batch_dims=1)

        def grad(upstream):
            softmax = tf.exp(x - lse[:, None])
            return (softmax - tf.one_hot(y, tf.shape(x)[-1], dtype=x.dtype)) * upstream[:, None], None

        return out, grad

    flat = tf.reshape(tf.cast(logits, tf.float32), [-1, tf.shape(logits)[-1]])
    return tf.reshape(nll(flat, tf.reshape(labels, [-1])), tf.shape(labels))


def over_positions(x, fn):
    """`fn` (e.g. the output projection) applied to `x` [..., d] flattened to [positions, d].

    A rank-3 x rank-2 `tf.matmul` runs as a broadcast batch matmul, and its weight gradient as one
    small product per batch row summed afterwards; one 2-D matmul over all positions is faster on
    CPU (`benchmarks/projection_kernels.py`)."""
    flat = fn(tf.reshape(x, [-1, x.shape[-1]]))
    return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], tf.shape(flat)[-1:]], axis=0))


class OutputHead(keras.layers.Layer):
    """What every kind of head implements (see the module docstring)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config

    def options(self) -> dict:
        """The head's config as plain data, for the family's `get_config`."""
        return dataclasses.asdict(self.config)

    def token_nll(self, hidden, labels):
        raise NotImplementedError

    def log_probs(self, hidden):
        raise NotImplementedError

    def adapt(self, train_ids: np.ndarray) -> None:
        """Derive from the training ids what the head needs before training; most kinds need nothing."""

    def observe(self, train_ids: np.ndarray) -> None:
        """Record what `flops_per_token` needs from the training ids, changing no weight (for a model
        that does not `adapt`: a fine-tune); most kinds need nothing."""

    def flops_per_token(self) -> float:
        raise NotImplementedError


class FullSoftmaxHead(OutputHead):
    """The exact softmax over the vocabulary: logits = h W + b, with W the family's own projection
    or, when tied, its input embedding transposed (Press & Wolf 2017).

    `token_nll` never forms the [positions, |V|] logits or their gradient: it is
    `lmbench.models.fused.FusedSoftmax` over the whole vocabulary, in blocks of `chunk_positions`
    positions by `chunk_logits // positions` tokens.
    """

    def __init__(self, config: FullHeadConfig, *, owner, vocab_size, input_dim, tied_embedding, kernel_initializer):
        super().__init__(config)
        self.vocab_size, self.input_dim = int(vocab_size), int(input_dim)
        # The variables live on the family, under the names they had before heads existed, so
        # bundles saved then load unchanged; the head only reads them (plain references, not
        # tracked by Keras, so that they are saved once).
        if tied_embedding is None:
            owner.projection = keras.layers.Dense(vocab_size, kernel_initializer=kernel_initializer)
            owner.projection.build((None, input_dim))
            weights = lambda: (owner.projection.kernel, owner.projection.bias)  # noqa: E731
        else:
            owner.output_bias = owner.add_weight(shape=(vocab_size,), initializer="zeros", name="output_bias")
            weights = lambda: (tied_embedding.embeddings, owner.output_bias)  # noqa: E731
        object.__setattr__(self, "_weights", weights)  # kernel [d, |V|], or [|V|, d] when tied
        self.transposed = tied_embedding is not None
        self.fused = FusedSoftmax(
            self.vocab_size, transposed=self.transposed, chunk_positions=config.chunk_positions,
            chunk_logits=config.chunk_logits, keep_logits_mb=config.keep_logits_mb,
        )
        self.built = True  # no variables of its own

    # -- the interface ---------------------------------------------------------------------------
    def logits(self, hidden):
        """[..., d] -> [..., |V|] in the dtype of `hidden`: the whole matrix (generation, tests)."""
        kernel, bias = self._weights()

        def project(h):
            # Explicit casts: under mixed_bfloat16 h is bfloat16 while the variables stay float32.
            return tf.matmul(h, tf.cast(kernel, h.dtype), transpose_b=self.transposed) + tf.cast(bias, h.dtype)

        return over_positions(hidden, project)

    def log_probs(self, hidden):
        return tf.nn.log_softmax(tf.cast(self.logits(hidden), tf.float32))

    def token_nll(self, hidden, labels):
        kernel, bias = self._weights()
        flat = tf.reshape(hidden, [-1, hidden.shape[-1]])
        nll = self.fused.nll(flat, tf.reshape(tf.cast(labels, tf.int32), [-1]), kernel, bias)
        return tf.reshape(nll, tf.shape(labels))

    def flops_per_token(self) -> float:
        """2 d |V|: the projection onto the whole vocabulary (the gradient pass's recomputation of
        the logits, when they are not kept, is not counted: model FLOPs, not hardware FLOPs)."""
        return 2.0 * self.input_dim * self.vocab_size

class AdaptiveSoftmaxHead(OutputHead):
    """The adaptive softmax (`lmbench.models.adaptive.AdaptiveSoftmax`, which holds its own variables).

    Not with tied embeddings: its tail clusters score tokens from projections narrower than the
    input embedding, and adaptive input embeddings (which fairseq ties them to) are not built."""

    def __init__(self, config: AdaptiveHeadConfig, *, owner, vocab_size, input_dim, tied_embedding, kernel_initializer):
        super().__init__(config)
        if tied_embedding is not None:
            raise ConfigError(
                "model.head.kind=adaptive cannot tie its output to the input embedding: its tail clusters "
                "score tokens from narrower projections of the hidden state. Set model.tie_embeddings=false "
                "(or use model/head=full to keep tying)"
            )
        self.softmax = AdaptiveSoftmax(
            vocab_size, input_dim, config.cutoffs, config.factor, kernel_initializer=kernel_initializer,
            chunk_positions=config.chunk_positions, chunk_logits=config.chunk_logits,
            keep_logits_mb=config.keep_logits_mb, name="adaptive_softmax",
        )
        self.built = True

    def token_nll(self, hidden, labels):
        return self.softmax.token_nll(hidden, labels)

    def log_probs(self, hidden):
        return self.softmax.log_probs(hidden)

    def adapt(self, train_ids: np.ndarray) -> None:
        self.softmax.adapt(train_ids)

    def observe(self, train_ids: np.ndarray) -> None:
        self.softmax.observe(train_ids)

    def flops_per_token(self) -> float:
        """The head layer for every position, each tail cluster for its share of them
        (`AdaptiveSoftmax.flops_per_token`)."""
        return self.softmax.flops_per_token()


def planned_head(head, vocab_size: int, input_dim: int, tied: bool, positions: int, compute_bytes: int
                 ) -> tuple[int, int]:
    """(trainable parameters, values kept for the backward pass) of the head `head` asks for, before
    it is built: the full softmax's d |V| + |V| (|V| when tied), and the window's logits when they
    fit its `keep_logits_mb`; the adaptive softmax's head layer and tail projections."""
    config = head_config(head)
    if config.kind == "adaptive":
        cutoffs = [int(c) for c in config.cutoffs]
        sizes = [b - a for a, b in zip(cutoffs, [*cutoffs[1:], vocab_size])]
        first = cutoffs[0] + len(sizes)
        params = input_dim * first + first
        for i, size in enumerate(sizes):
            width = int(input_dim // config.factor ** (i + 1))
            params += input_dim * width + width * size + size
        return params, 0
    params = vocab_size + (0 if tied else input_dim * vocab_size)
    logits = positions * vocab_size
    kept = logits if logits * compute_bytes <= config.keep_logits_mb * 2**20 else 0
    return params, kept


HEADS: dict[str, type[OutputHead]] = {"full": FullSoftmaxHead, "adaptive": AdaptiveSoftmaxHead}


def build_head(
    head, *, owner, vocab_size: int, input_dim: int, tied_embedding=None, kernel_initializer="glorot_uniform"
) -> OutputHead:
    """The head that `head` (a family's `head` argument: a mapping, a DictConfig or None) asks for.

    Bad options are a ConfigError (`schema.head_config`)."""
    config = head_config(head)
    return HEADS[config.kind](
        config,
        owner=owner,
        vocab_size=vocab_size,
        input_dim=input_dim,
        tied_embedding=tied_embedding,
        kernel_initializer=kernel_initializer,
    )
