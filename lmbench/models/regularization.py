"""The AWD-LSTM regularizers (Merity, Keskar & Socher 2018, "Regularizing and Optimizing LSTM
Language Models"), as pieces the recurrent family applies to one training window:

- `embedding_dropout`: whole words dropped (dropoute): a word's embedding row is zeroed at every
  position of the window, the kept rows scaled by 1 / (1 - rate) (Gal & Ghahramani 2016).
- `locked_dropout`: variational dropout (dropouti, dropouth, dropout): one mask per stream per
  window, the same at every time step.
- `weight_drop`: DropConnect on a hidden-to-hidden kernel (wdrop): one mask per window, shared by
  every stream and every time step, scaled by 1 / (1 - rate).
- `activation_penalty`: AR (alpha x mean of the squared, dropped outputs of the last layer) and TAR
  (beta x mean squared difference of consecutive, undropped outputs of the last layer).

Every mask is drawn from a `keras.random.SeedGenerator`, so a run is reproducible from its seed.

Data-parallel training (training/distributed.py): every replica holds the same generator state
and advances it the same way, so Keras would draw the same mask on every replica. A mask over
streams (`dropout`, `Dropout`, `locked_dropout`) is drawn with the replica's id folded into the seed
(`tf.random.experimental.stateless_fold_in`): each replica's streams get their own masks, as one
device's streams do. A mask shared by the whole batch on one device (`weight_drop`,
`embedding_dropout`: one a window) stays the same on every replica. So the masks of the whole batch
follow one device's law (the same expected loss), not its draws; on one device (or outside a
replica) the draws are Keras' own, bit for bit.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def dropout(x, rate: float, seed, per_stream: bool = True):
    """`keras.random.dropout(x, rate, seed=seed)`; in a replica of a step with several replicas and
    `per_stream`, drawn with the replica's id folded into the seed (the module's docstring)."""
    context = tf.distribute.get_replica_context()
    if not per_stream or context is None or context.num_replicas_in_sync == 1 or not 0.0 < rate < 1.0:
        return keras.random.dropout(x, rate, seed=seed)
    drawn = tf.random.experimental.stateless_fold_in(seed.next(), context.replica_id_in_sync_group)
    drawn = tf.cast(tf.math.floormod(drawn, tf.int32.max - 1), tf.int32)  # as Keras' _cast_seed
    return tf.nn.experimental.stateless_dropout(x, rate, seed=drawn)


class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` drawing with `dropout`: its own mask on every replica."""

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return dropout(inputs, self.rate, self.seed_generator)
        return inputs


def _keep_mask(shape, rate: float, seed, dtype, per_stream: bool = False):
    """1 / (1 - rate) with probability 1 - rate, else 0, of `shape`."""
    ones = tf.ones(shape, dtype)
    return dropout(ones, rate, seed, per_stream)


def embedding_dropout(rows, ids, vocab_size: int, rate: float, seed):
    """`rows` [batch, steps, d], the embeddings of `ids` [batch, steps], with whole words dropped: a
    mask over the vocabulary ([|V|], one draw a window) gathered at `ids`. Equivalent to masking the
    table's rows as Merity et al. do, without touching the table (its gradient stays sparse)."""
    if rate <= 0.0:
        return rows
    mask = _keep_mask([vocab_size], rate, seed, rows.dtype)
    return rows * tf.gather(mask, tf.cast(ids, tf.int32))[..., None]


def locked_dropout(x, rate: float, seed, locked: bool = True):
    """`x` [batch, steps, d] times one mask per stream, shared by every step of the window
    (`locked=False`: an independent mask per element, plain dropout)."""
    if rate <= 0.0:
        return x
    shape = tf.shape(x)
    if locked:
        shape = tf.concat([shape[:1], [1], shape[2:]], axis=0)
    return x * _keep_mask(shape, rate, seed, x.dtype, per_stream=True)


def weight_drop(kernel, rate: float, seed):
    """`kernel` with DropConnect: each weight zeroed with probability `rate`, the rest scaled by
    1 / (1 - rate); one mask for the whole window (all streams, all steps)."""
    if rate <= 0.0:
        return kernel
    return kernel * _keep_mask(tf.shape(kernel), rate, seed, kernel.dtype)


def activation_penalty(dropped, undropped, alpha: float, beta: float):
    """AR + TAR of the last layer's outputs [batch, steps, d] (float32): alpha x mean(dropped^2) +
    beta x mean((h_{t+1} - h_t)^2) over the undropped outputs, each a mean over every element, as
    Merity et al.'s `pow(2).mean()`."""
    penalty = tf.constant(0.0, tf.float32)
    if alpha:
        penalty += alpha * tf.reduce_mean(tf.square(tf.cast(dropped, tf.float32)))
    if beta:
        h = tf.cast(undropped, tf.float32)
        steps = tf.square(h[:, 1:] - h[:, :-1])  # empty for a one-token window: no penalty
        penalty += beta * tf.math.divide_no_nan(tf.reduce_sum(steps), tf.cast(tf.size(steps), tf.float32))
    return penalty
