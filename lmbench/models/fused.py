"""The fused output projection and loss: -log p(label) = logsumexp(h W + b) - (h W + b)[label],
computed and differentiated without ever forming the [positions, |V|] logits or their gradient.

`FusedSoftmax(size, ...).nll(h, labels, kernel, bias)` is shared by the full softmax head (the whole
vocabulary) and the adaptive softmax (its head and each tail cluster), so both run the same kernels.

Positions are taken `chunk_positions` at a time and the vocabulary in blocks of
`chunk_logits // positions`. The forward pass runs over the blocks once for a float32 log-sum-exp
(online, as in Milakov & Gimelshein 2018); the gradient pass recomputes each block's logits (or,
when one chunk's logits fit `keep_logits_mb`, reuses the forward's) and turns them into that
block's share of dW, db and dh at once, so each block of dW is written once.
The GEMMs run in the compute dtype of `h` (bfloat16 under mixed_bfloat16, oneDNN accumulating in
float32); everything after them in float32, in small XLA-compiled functions. Against one GEMM per
direction over full logits, this costs one more forward GEMM (the recomputation) and saves the
passes over the [positions, |V|] arrays that do not fit in any cache.

A number of positions known only when the step runs is padded first, so that XLA compiles its
functions for a few row counts, not for every one: with a bound on it (an adaptive softmax's tail
rows, at most the window's positions) up to one of a few static sizes, each with blocks as wide as
its rows allow (`row_buckets`); without one (a scoring batch of unknown shape) to a multiple of
`ROW_BUCKET`.
"""

from __future__ import annotations

import functools

import tensorflow as tf

ROW_BUCKET = 64  # rows of a dynamic-size input are padded to a multiple of this
# The smallest static row count of a bounded dynamic input: an adaptive softmax's rarest cluster
# gets a dozen of a window's 700 positions, and padding those to 64 rows would compute 5x its logits.
FIRST_ROW_BUCKET = 16


# A pass over at least this many vocabulary blocks runs them in a `tf.while_loop` (the same blocks in
# the same order, so the same numbers) instead of a copy of the block's ops per block: TensorFlow
# keeps every instantiated op of a traced function, and unrolled, an adaptive softmax's clusters at
# |V| = 354k had ~10,000 nodes in a training window's forward pass and ~40,000 in a scoring
# window's (2,560 rows: nine row buckets), ~0.4 MB each (experiments/README.md, "Memory against
# corpus size").
LOOP_BLOCKS = 4


def row_buckets(max_rows: int) -> list[int]:
    """The static row counts a dynamic input of at most `max_rows` rows is padded to:
    FIRST_ROW_BUCKET doubled while below `max_rows`, then `max_rows` rounded up to ROW_BUCKET."""
    top = -(-max(int(max_rows), 1) // ROW_BUCKET) * ROW_BUCKET
    sizes = [FIRST_ROW_BUCKET]
    while sizes[-1] * 2 < top:
        sizes.append(sizes[-1] * 2)
    return sizes + [top] if sizes[-1] < top else sizes


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


class FusedSoftmax:
    """The chunked softmax cross-entropy over `size` classes with a hand-written gradient.

    `kernel` is [d, size], or [size, d] when `transposed` (a tied input embedding); `bias` [size]."""

    def __init__(
        self, size: int, *, transposed: bool = False, chunk_positions: int = 1024, chunk_logits: int = 1 << 20,
        keep_logits_mb: float = 0.0,
    ):
        self.vocab_size = int(size)
        self.transposed = transposed
        self.chunk_positions, self.chunk_logits = int(chunk_positions), int(chunk_logits)
        self.keep_logits_bytes = float(keep_logits_mb) * 2**20

    def _keeps(self, h) -> bool:
        """Whether the forward pass keeps its blocks of logits for the gradient pass instead of
        recomputing them: only for one chunk of known rows whose logits fit `keep_logits_mb`."""
        rows = self._chunk_rows(h)
        return rows is not None and rows * self.vocab_size * h.dtype.size <= self.keep_logits_bytes

    def nll(self, h, labels, kernel, bias, max_rows: int | None = None):
        """-log p(labels) [n] float32 for h [n, d] (compute dtype), labels [n] int32.

        `max_rows`: a bound on n when n is known only when the step runs (an adaptive softmax
        cluster gets some of a window's positions). Then n is padded up to the next of a few static
        sizes (`row_buckets`) and each size has its own branch with blocks as wide as its rows
        allow: a cluster with 100 rows takes 8,192 vocabulary columns per block, not 1,024."""
        if h.shape[0] is None and max_rows is None:
            n = tf.shape(h)[0]
            pad = (-n) % ROW_BUCKET  # padded rows get label 0; their values are cut off, so no gradient
            padded = self._fused_nll(tf.pad(h, [[0, pad], [0, 0]]), tf.pad(labels, [[0, pad]]), kernel, bias)
            return padded[:n]
        return self._fused_nll(h, labels, kernel, bias, None if h.shape[0] is not None else max_rows)

    # -- the fused computation -------------------------------------------------------------------
    def _fused_nll(self, h, labels, kernel, bias, max_rows=None):
        """−log p(labels) for h [n, d] with a hand-written gradient for h, kernel and bias. With
        `max_rows`, each pass pads h to a static bucket size in a `tf.switch_case` (inside the custom
        gradient: the gradient pass captures only tensors from outside the branches)."""

        @tf.custom_gradient
        def nll(h, kernel, bias):
            kernel = tf.cast(kernel, h.dtype)
            bias = tf.cast(bias, tf.float32)
            kept = [] if max_rows is None and self._keeps(h) else None  # the forward's blocks of logits
            if max_rows is None:
                forward = functools.partial(self._chunk_lse_and_pick, kept=kept)
                lse, picked = self._over_chunks(forward, h, labels, kernel, bias)
            else:
                forward = lambda hp, lp, _w, _l: self._over_chunks(self._chunk_lse_and_pick, hp, lp, kernel, bias)  # noqa: E731
                lse, picked = self._by_bucket(max_rows, h, forward, labels)

            def grad(upstream):
                if max_rows is None:
                    return self._chunked_grads(h, labels, upstream, lse, kernel, bias, kept)
                return self._by_bucket(
                    max_rows, h, lambda hp, lp, wp, sp: self._chunked_grads(hp, lp, wp, sp, kernel, bias),
                    labels, upstream, lse, rows_out=1,
                )

            return lse - picked, grad

        return nll(h, tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias))

    def _by_bucket(self, max_rows, h, fn, labels, weight=None, lse=None, rows_out=2):
        """`fn(h, labels, weight, lse)` on the inputs padded to the first `row_buckets(max_rows)` size
        that holds their n rows (weight 0 on the padding), one static branch per size; the first
        `rows_out` outputs are per-row and cut back to n."""
        n = tf.shape(h)[0]
        sizes = row_buckets(max_rows)

        def branch(size):
            def padded():
                pad = lambda x: None if x is None else tf.pad(x, [[0, size - n]] + [[0, 0]] * (len(x.shape) - 1))  # noqa: E731
                hp = tf.ensure_shape(pad(h), [size, h.shape[1]])
                outs = fn(hp, pad(labels), pad(weight), pad(lse))
                return tuple(o[:n] if k < rows_out else o for k, o in enumerate(outs))

            return padded

        index = tf.reduce_sum(tf.cast(tf.constant(sizes[:-1], tf.int32) < n, tf.int32))  # the first size >= n
        return tf.switch_case(index, [branch(size) for size in sizes])

    def _chunk_rows(self, h):
        """Positions per chunk when all of them fit in one (known shape), else None: equal chunks
        of at most `chunk_positions` rows in a graph loop (`_padded_chunks`)."""
        n = h.shape[0]
        return n if n is not None and n <= self.chunk_positions else None

    def _blocks(self, rows: int | None) -> list[tuple[int, int]]:
        """The vocabulary blocks for chunks of `rows` positions (None: unknown, at most
        `chunk_positions`)."""
        rows = self.chunk_positions if rows is None else max(rows, 1)
        size = max(1, min(self.vocab_size, self.chunk_logits // rows))
        return [(lo, min(lo + size, self.vocab_size)) for lo in range(0, self.vocab_size, size)]

    def _block_kernel(self, kernel, lo, hi):
        return kernel[lo:hi] if self.transposed else kernel[:, lo:hi]

    def _block_logits(self, h, kernel, lo, hi):
        return tf.matmul(h, self._block_kernel(kernel, lo, hi), transpose_b=self.transposed)

    def _block_at(self, x, lo, width: int):
        """Block `lo` .. `lo + width` of a kernel (its columns; its rows when transposed) or of a
        bias, `lo` a tensor: what `_block_kernel` and `bias[lo:hi]` take in a loop over blocks."""
        if len(x.shape) == 1:
            return tf.slice(x, [lo], [width])
        return tf.slice(x, [lo, 0], [width, -1]) if self.transposed else tf.slice(x, [0, lo], [-1, width])

    def _looped(self, blocks, first, step):
        """`first(0, width)`, then `step(carry, lo, width)` over the other blocks of equal width in
        a `tf.while_loop`, one after the other (`parallel_iterations=1`: the memory bound), then
        over the last block when it is narrower; the carry at the end."""
        width = blocks[0][1] - blocks[0][0]
        equal = sum(hi - lo == width for lo, hi in blocks)
        carry = first(0, width)
        _, carry = tf.while_loop(
            lambda k, _: k < equal, lambda k, c: (k + 1, step(c, k * width, width)), (tf.constant(1), carry),
            parallel_iterations=1,
        )
        if equal < len(blocks):
            carry = step(carry, blocks[-1][0], blocks[-1][1] - blocks[-1][0])
        return carry

    def _chunk_lse_and_pick(self, h, labels, kernel, bias, kept=None):
        """float32 log-sum-exp of every row's logits, block by block, and the label's logit; each
        block of logits is appended to `kept` when it is a list."""

        def merge(top, total, block_top, block_total):
            new_top = tf.maximum(top, block_top)
            return new_top, total * tf.exp(top - new_top) + block_total * tf.exp(block_top - new_top)

        blocks = self._blocks(h.shape[0])
        if kept is None and len(blocks) >= LOOP_BLOCKS:

            def block(lo, width):
                z = tf.matmul(h, self._block_at(kernel, lo, width), transpose_b=self.transposed)
                return _block_max_sumexp(z, self._block_at(bias, lo, width))

            top, total = self._looped(blocks, block, lambda c, lo, width: merge(*c, *block(lo, width)))
        else:
            top = total = None
        for lo, hi in blocks if top is None else []:
            # One block after the other (not all at once, as the graph would allow): the memory bound.
            with tf.control_dependencies([] if total is None else [total]):
                z = self._block_logits(h, kernel, lo, hi)
            if kept is not None:
                kept.append(z)
            block_top, block_total = _block_max_sumexp(z, bias[lo:hi])
            if total is None:
                top, total = block_top, block_total
            else:
                top, total = merge(top, total, block_top, block_total)
        rows = tf.gather(kernel, labels) if self.transposed else tf.transpose(tf.gather(kernel, labels, axis=1))
        picked = tf.reduce_sum(tf.cast(h, tf.float32) * tf.cast(rows, tf.float32), axis=1) + tf.gather(bias, labels)
        return top + tf.math.log(total), picked

    def _chunk_grads(self, h, labels, weight, lse, kernel, bias, kept=None):
        """Gradient of sum(weight · nll) of one chunk: dh [n, d] (float32), dkernel, dbias; the
        blocks of logits are recomputed, or taken from `kept`."""
        blocks = self._blocks(h.shape[0])
        if kept is None and len(blocks) >= LOOP_BLOCKS:
            return self._looped_grads(h, labels, weight, lse, kernel, bias, blocks)
        dh, dkernel, dbias = None, [], []
        for k, (lo, hi) in enumerate(self._blocks(h.shape[0])):
            if kept is not None:
                z = kept[k]
            else:
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

    def _looped_grads(self, h, labels, weight, lse, kernel, bias, blocks):
        """`_chunk_grads` with the blocks of equal width in a `tf.while_loop` (`_looped`): the same
        products in the same order; the blocks of dkernel and dbias gathered in TensorArrays."""
        width = blocks[0][1] - blocks[0][0]
        equal = sum(hi - lo == width for lo, hi in blocks)

        def block(lo, size):
            kernel_block = self._block_at(kernel, lo, size)
            z = tf.matmul(h, kernel_block, transpose_b=self.transposed)
            g, db = _block_softmax_grad(z, self._block_at(bias, lo, size), lse, weight, labels - lo)
            if self.transposed:  # kernel [|V|, d]: logits = h E^T
                dk, dh = tf.matmul(g, h, transpose_a=True), tf.matmul(g, kernel_block)
            else:  # kernel [d, |V|]: logits = h W
                dk, dh = tf.matmul(h, g, transpose_a=True), tf.matmul(g, kernel_block, transpose_b=True)
            return tf.cast(dh, tf.float32), dk, db

        def first(lo, size):
            dh, dk, db = block(lo, size)
            dks = tf.TensorArray(dk.dtype, size=equal, element_shape=dk.shape).write(0, dk)
            return dh, dks, tf.TensorArray(tf.float32, size=equal, element_shape=db.shape).write(0, db)

        def step(carry, lo, size):
            dh, dks, dbs = carry
            block_dh, dk, db = block(lo, size)
            if size < width:  # the last, narrower block: after the loop
                return dh + block_dh, (dks, dk), (dbs, db)
            k = lo // width
            return dh + block_dh, dks.write(k, dk), dbs.write(k, db)

        dh, dks, dbs = self._looped(blocks, first, step)
        last_dk = last_db = None
        if isinstance(dks, tuple):
            (dks, last_dk), (dbs, last_db) = dks, dbs
        if self.transposed:  # blocks [width, d], one under the other
            dkernel = dks.concat()
        else:  # blocks [d, width], side by side
            stacked = dks.stack()
            dkernel = tf.reshape(tf.transpose(stacked, [1, 0, 2]), [stacked.shape[1], equal * width])
        dbias = dbs.concat()
        if last_dk is not None:
            dkernel = tf.concat([dkernel, last_dk], axis=0 if self.transposed else 1)
            dbias = tf.concat([dbias, last_db], axis=0)
        return dh, tf.cast(dkernel, tf.float32), dbias

    def _padded_chunks(self, *per_position):
        """Each [n, ...] tensor split into the fewest chunks of at most `chunk_positions` rows, all
        of one size (the last padded with zeros by fewer rows than there are chunks):
        [chunks, rows, ...]."""
        n = tf.shape(per_position[0])[0]
        chunks = tf.maximum((n + self.chunk_positions - 1) // self.chunk_positions, 1)
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

    def _chunked_grads(self, h, labels, weight, lse, kernel, bias, kept=None):
        """The gradient over the chunks; `kept`, the forward's blocks of logits (one chunk only)."""
        if self._chunk_rows(h) is not None:
            dh, dkernel, dbias = self._chunk_grads(h, labels, weight, lse, kernel, bias, kept)
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
