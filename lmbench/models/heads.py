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


@tf.function(jit_compile=True, reduce_retracing=True)
def _block_max_sumexp(z, bias):
    """Row max and sum of exp(logit - max) of one block of logits `z` [n, b] (+ float32 `bias`)."""
    x = tf.cast(z, tf.float32) + bias
    top = tf.reduce_max(x, axis=1)
    return top, tf.reduce_sum(tf.exp(x - top[:, None]), axis=1)


@tf.function(jit_compile=True, reduce_retracing=True)
def _block_softmax_grad(z, bias, lse, weight, local_labels):
    """d(weight · nll)/d logits of one block, (softmax − one-hot) · weight, in the dtype of `z`
    (for the GEMMs that follow), and its column sums in float32 (the bias gradient). A label
    outside the block (`local_labels` < 0 or >= b) has no one-hot there."""
    x = tf.cast(z, tf.float32) + bias
    onehot = tf.one_hot(local_labels, tf.shape(z)[1], dtype=tf.float32)
    g = (tf.exp(x - lse[:, None]) - onehot) * weight[:, None]
    return tf.cast(g, z.dtype), tf.reduce_sum(g, axis=0)


class FullSoftmaxHead(OutputHead):
    """The exact softmax over the vocabulary: logits = h W + b, with W the family's own projection
    or, when tied, its input embedding transposed (Press & Wolf 2017).

    `token_nll` never forms the [positions, |V|] logits or their gradient: positions are taken
    `chunk_positions` at a time and the vocabulary in blocks of `chunk_logits // positions`. The
    forward pass runs over the blocks once for a float32 log-sum-exp (online, as in
    Milakov & Gimelshein 2018); the gradient pass recomputes each block's logits and turns them
    into that block's share of dW, db and dh at once, so each block of dW is written once. The
    GEMMs run in the compute dtype of `hidden` (bfloat16 under mixed_bfloat16, oneDNN accumulating
    in float32); everything after them in float32. Against one GEMM per direction over full
    logits, this costs one more forward GEMM (the recomputation) and saves the passes over the
    [positions, |V|] arrays that do not fit in any cache.
    """

    def __init__(self, config: FullHeadConfig, *, owner, vocab_size, input_dim, tied_embedding, kernel_initializer):
        super().__init__(config)
        self.vocab_size = int(vocab_size)
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
        nll = self._fused_nll(flat, tf.reshape(tf.cast(labels, tf.int32), [-1]), kernel, bias)
        return tf.reshape(nll, tf.shape(labels))

    # -- the fused computation -------------------------------------------------------------------
    def _fused_nll(self, h, labels, kernel, bias):
        """−log p(labels) for h [n, d] with a hand-written gradient for h, kernel and bias."""

        @tf.custom_gradient
        def nll(h, kernel, bias):
            kernel = tf.cast(kernel, h.dtype)
            bias = tf.cast(bias, tf.float32)
            lse, picked = self._over_chunks(self._chunk_lse_and_pick, h, labels, kernel, bias)

            def grad(upstream):
                dh, dkernel, dbias = self._chunked_grads(h, labels, upstream, lse, kernel, bias)
                return dh, dkernel, dbias

            return lse - picked, grad

        return nll(h, tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias))

    def _chunk_rows(self, h):
        """Positions per chunk when all of them fit in one (known shape), else None: equal chunks
        of at most `chunk_positions` rows in a graph loop (`_padded_chunks`)."""
        n = h.shape[0]
        return n if n is not None and n <= self.config.chunk_positions else None

    def _blocks(self, rows: int | None) -> list[tuple[int, int]]:
        """The vocabulary blocks for chunks of `rows` positions (None: unknown, at most
        `chunk_positions`)."""
        rows = self.config.chunk_positions if rows is None else max(rows, 1)
        size = max(1, min(self.vocab_size, self.config.chunk_logits // rows))
        return [(lo, min(lo + size, self.vocab_size)) for lo in range(0, self.vocab_size, size)]

    def _block_kernel(self, kernel, lo, hi):
        return kernel[lo:hi] if self.transposed else kernel[:, lo:hi]

    def _block_logits(self, h, kernel, lo, hi):
        return tf.matmul(h, self._block_kernel(kernel, lo, hi), transpose_b=self.transposed)

    def _chunk_lse_and_pick(self, h, labels, kernel, bias):
        """float32 log-sum-exp of every row's logits, block by block, and the label's logit."""
        top = total = None
        for lo, hi in self._blocks(h.shape[0]):
            # One block after the other (not all at once, as the graph would allow): the memory bound.
            with tf.control_dependencies([] if total is None else [total]):
                z = self._block_logits(h, kernel, lo, hi)
            block_top, block_total = _block_max_sumexp(z, bias[lo:hi])
            if total is None:
                top, total = block_top, block_total
            else:
                new_top = tf.maximum(top, block_top)
                total = total * tf.exp(top - new_top) + block_total * tf.exp(block_top - new_top)
                top = new_top
        rows = tf.gather(kernel, labels) if self.transposed else tf.transpose(tf.gather(kernel, labels, axis=1))
        picked = tf.reduce_sum(tf.cast(h, tf.float32) * tf.cast(rows, tf.float32), axis=1) + tf.gather(bias, labels)
        return top + tf.math.log(total), picked

    def _chunk_grads(self, h, labels, weight, lse, kernel, bias):
        """Gradient of sum(weight · nll) of one chunk: dh [n, d] (float32), dkernel, dbias."""
        dh, dkernel, dbias = None, [], []
        for lo, hi in self._blocks(h.shape[0]):
            with tf.control_dependencies([] if dh is None else [dh]):
                z = self._block_logits(h, kernel, lo, hi)
            g, db = _block_softmax_grad(z, bias[lo:hi], lse, weight, labels - lo)
            block = self._block_kernel(kernel, lo, hi)
            if self.transposed:  # kernel [|V|, d]: logits = h E^T
                dkernel.append(tf.matmul(g, h, transpose_a=True))
                dh_block = tf.matmul(g, block)
            else:  # kernel [d, |V|]: logits = h W
                dkernel.append(tf.matmul(h, g, transpose_a=True))
                dh_block = tf.matmul(g, block, transpose_b=True)
            dh = tf.cast(dh_block, tf.float32) if dh is None else dh + tf.cast(dh_block, tf.float32)
            dbias.append(db)
        dkernel = tf.concat(dkernel, axis=0 if self.transposed else 1) if len(dkernel) > 1 else dkernel[0]
        dbias = tf.concat(dbias, axis=0) if len(dbias) > 1 else dbias[0]
        return dh, tf.cast(dkernel, tf.float32), dbias

    def _padded_chunks(self, *per_position):
        """Each [n, ...] tensor split into the fewest chunks of at most `chunk_positions` rows, all
        of one size (the last padded with zeros by fewer rows than there are chunks):
        [chunks, rows, ...]."""
        n = tf.shape(per_position[0])[0]
        chunks = tf.maximum((n + self.config.chunk_positions - 1) // self.config.chunk_positions, 1)
        rows = tf.maximum((n + chunks - 1) // chunks, 1)
        pad = chunks * rows - n
        out = []
        for x in per_position:
            x = tf.pad(x, [[0, pad]] + [[0, 0]] * (len(x.shape) - 1))
            out.append(tf.reshape(x, tf.concat([[-1, rows], tf.shape(x)[1:]], axis=0)))
        return out, n

    def _over_chunks(self, fn, h, labels, kernel, bias):
        """`fn(h_chunk, labels_chunk, kernel, bias)` -> per-position outputs, over the chunks."""
        if self._chunk_rows(h) is not None:
            return fn(h, labels, kernel, bias)
        (hs, ys), n = self._padded_chunks(h, labels)
        outs = tf.map_fn(
            lambda chunk: fn(chunk[0], chunk[1], kernel, bias),
            (hs, ys),
            fn_output_signature=(tf.float32, tf.float32),
            parallel_iterations=1,
        )
        return tuple(tf.reshape(o, [-1])[:n] for o in outs)

    def _chunked_grads(self, h, labels, weight, lse, kernel, bias):
        if self._chunk_rows(h) is not None:
            dh, dkernel, dbias = self._chunk_grads(h, labels, weight, lse, kernel, bias)
            return tf.cast(dh, h.dtype), dkernel, dbias
        (hs, ys, ws, ls), n = self._padded_chunks(h, labels, weight, lse)  # padding has weight 0

        def body(i, dh_parts, dkernel, dbias):
            dh, dk, db = self._chunk_grads(hs[i], ys[i], ws[i], ls[i], kernel, bias)
            return i + 1, dh_parts.write(i, dh), dkernel + dk, dbias + db

        parts = tf.TensorArray(tf.float32, size=tf.shape(hs)[0], element_shape=[None, h.shape[-1]])
        zeros_kernel = tf.zeros(tf.shape(kernel), tf.float32)
        _, parts, dkernel, dbias = tf.while_loop(
            lambda i, *_: i < tf.shape(hs)[0],
            body,
            (0, parts, zeros_kernel, tf.zeros([self.vocab_size], tf.float32)),
            parallel_iterations=1,
        )
        return tf.cast(parts.concat()[:n], h.dtype), dkernel, dbias


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
            name="adaptive_softmax",
        )
        self.built = True

    def token_nll(self, hidden, labels):
        return self.softmax.token_nll(hidden, labels)

    def log_probs(self, hidden):
        return self.softmax.log_probs(hidden)

    def adapt(self, train_ids: np.ndarray) -> None:
        self.softmax.adapt(train_ids)


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
