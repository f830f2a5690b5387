"""The input embedding of the neural families, whose training step touches only the rows it read.

`keras.layers.Embedding` reads its whole table (a dense ReadVariableOp) and gathers from that copy.
While the read is alive, the optimizer's sparse update (`scatter_sub` of the window's rows) cannot
write in place, and TensorFlow copies the whole table first: at |V| = 250,000 x 200 the embedding's
share of an SGD step (20 x 35 ids) was 56 ms with Keras' layer, 1.5 ms with this one (2026-12-01).
Gathering from the variable itself (ResourceGather) reads only the rows, so the update stays a
scatter into the table.

Saving hands Keras a tensor read from each variable instead of the variable: Keras turns what it is
given into NumPy with `np.array`, which copies a variable twice (through `.numpy()`) and a tensor
once, and the table is the largest array of a large-vocabulary model (283 MB at 354k x 200), so a
checkpoint or bundle had held two extra copies of it at the run's peak.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class TensorStore:
    """The store Keras saves a layer's variables into, handed each variable as a tensor read from
    it (the same values; see the module docstring)."""

    def __init__(self, store):
        self.store = store

    def __setitem__(self, key, value):
        self.store[key] = tf.convert_to_tensor(value) if isinstance(value, keras.Variable) else value

    def __getattr__(self, name):
        return getattr(self.store, name)


class Embedding(keras.layers.Embedding):
    """`keras.layers.Embedding` (same variables, same saved weights) with a row-only read, saved
    with one copy of its table at a time."""

    def save_own_variables(self, store):
        super().save_own_variables(TensorStore(store))

    def call(self, inputs):
        rows = tf.nn.embedding_lookup(self.embeddings.value, tf.cast(inputs, tf.int32))
        return tf.cast(rows, self.compute_dtype)
