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
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _keep_mask(shape, rate: float, seed, dtype):
    """1 / (1 - rate) with probability 1 - rate, else 0, of `shape`."""
    ones = tf.ones(shape, dtype)
    return keras.random.dropout(ones, rate, seed=seed)


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
    return x * _keep_mask(shape, rate, seed, x.dtype)


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
