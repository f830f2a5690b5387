"""Recurrent language models: embedding -> N stacked RNN/GRU/LSTM layers -> output head.

The Zaremba et al. (2014) set-up: dropout on the non-recurrent connections (after the embedding,
between layers, before the output projection), hidden state carried across truncated-BPTT windows
by the trainer, optional tying of the input and output embeddings (Press & Wolf 2017).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from lmbench.errors import ConfigError
from lmbench.models.embedding import Embedding
from lmbench.models.heads import build_head, planned_head
from lmbench.models.neural import NeuralLM, Planned

CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}
# Gate blocks per cell: each has an input and a recurrent kernel of `hidden_size` columns (the GRU's
# reset-after form also multiplies h by all three of its recurrent blocks).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}

# Without a GPU, Keras runs a recurrent layer as a loop of small ops, one iteration per time step;
# on a CPU a window of known length is unrolled into straight-line code instead, in pieces of at
# most this many steps (a training window of 35 is one piece, a scoring window of 256 four), which
# makes training steps and scoring faster (`benchmarks/train_throughput.py`, `eval_throughput.py`).
# On a GPU everything stays a loop: unrolling would switch cuDNN off.
UNROLL_MAX_STEPS = 64


def _check_options(cell, embedding_dim, hidden_size, num_layers, dropout, tie_embeddings, activation) -> None:
    """A bad option is one ConfigError, before any weight exists."""
    if cell not in CELLS:
        raise ConfigError(f"model.cell={cell!r} is not one of {', '.join(CELLS)}")
    if num_layers < 1 or hidden_size < 1 or embedding_dim < 1:
        raise ConfigError("model.num_layers, hidden_size and embedding_dim must be >= 1")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
    if tie_embeddings and embedding_dim != hidden_size:
        raise ConfigError(
            "model.tie_embeddings=true needs model.embedding_dim == model.hidden_size "
            f"(got {embedding_dim} and {hidden_size})"
        )
    if cell == "rnn" and activation not in ("tanh", "relu"):
        raise ConfigError(f"model.activation must be tanh or relu, got {activation!r}")


def unrolled_lstm(cell, x, state):
    """What `keras.layers.LSTM(return_sequences=True, return_state=True, unroll=True)` computes
    with `cell`'s own weights (no dropout inside the cell: the family drops out between layers),
    x [batch, steps, d] in the compute dtype -> (outputs, h, c).

    Keras' unrolled cell casts its float32 kernels to the compute dtype again at every step, forward
    and backward (12 ms of a 110 ms mixed_bfloat16 step of a 2 x 200 LSTM, 35 steps), and multiplies
    each step's input apart; here the kernels are cast once per window and the inputs of all steps
    go through one GEMM. Gates in Keras' order (input, forget, candidate, output)."""
    dtype = x.dtype
    kernel, recurrent, bias = (tf.cast(w, dtype) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    steps, units = x.shape[1], cell.units
    time_major = tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, x.shape[-1]])
    # unstack, not projected[:, t]: a slice's gradient is a whole zero-padded window per step
    projected = tf.unstack(tf.reshape(tf.matmul(time_major, kernel) + bias, [steps, -1, 4 * units]))
    h, c = (tf.cast(s, dtype) for s in state)
    gate, activation = cell.recurrent_activation, cell.activation
    outputs = []
    for t in range(steps):
        z = projected[t] + tf.matmul(h, recurrent)
        i, f, candidate, o = tf.split(z, 4, axis=1)
        c = gate(f) * c + gate(i) * activation(candidate)
        h = gate(o) * activation(c)
        outputs.append(h)
    return tf.stack(outputs, axis=1), h, c


class RecurrentLM(NeuralLM):
    def __init__(
        self,
        vocab_size: int,
        eos_id: int,
        cell: str = "lstm",
        embedding_dim: int = 200,
        hidden_size: int = 200,
        num_layers: int = 2,
        dropout: float = 0.0,
        tie_embeddings: bool = False,
        activation: str = "tanh",  # rnn cell only: tanh or relu
        init_scale: float | None = 0.1,  # embedding and output ~ U(-s, s); null: Keras defaults
        eval_window: int = 256,
        head: dict | None = None,  # the output layer (models/heads.py); null: {kind: full}
    ):
        super().__init__(vocab_size, eos_id, eval_window=eval_window)
        _check_options(cell, embedding_dim, hidden_size, num_layers, dropout, tie_embeddings, activation)
        self.family = cell
        self.cell = cell
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout_rate = dropout
        self.tie_embeddings = tie_embeddings
        self.activation = activation
        self.init_scale = init_scale

        def init(keras_default: str):
            if init_scale is None:
                return keras_default
            return keras.initializers.RandomUniform(-init_scale, init_scale)

        self.embedding = Embedding(vocab_size, embedding_dim, embeddings_initializer=init("uniform"))
        layer_kwargs = {"activation": activation} if cell == "rnn" else {}
        self.rnns = [
            CELLS[cell](hidden_size, return_sequences=True, return_state=True, **layer_kwargs)
            for _ in range(num_layers)
        ]
        self.drop = keras.layers.Dropout(dropout)
        self._may_unroll = not tf.config.list_logical_devices("GPU")
        self.output_head = build_head(
            head,
            owner=self,
            vocab_size=vocab_size,
            input_dim=hidden_size,
            tied_embedding=self.embedding if tie_embeddings else None,
            kernel_initializer=init("glorot_uniform"),
        )

    @property
    def state_size(self) -> int:
        return 2 if self.cell == "lstm" else 1

    def initial_state(self, batch_size: int) -> list:
        # In the compute dtype, as every later window's state comes back: float32 zeros made the
        # training step trace a second time (bfloat16 states from the second window on), and each
        # trace of a step is kept (an adaptive head's at |V| = 354k: ~90 MB).
        zeros = tf.zeros((batch_size, self.hidden_size), self.compute_dtype)
        return [[zeros] * self.state_size for _ in range(self.num_layers)]

    def call(self, inputs, states=None, training=False):
        if states is None:
            states = self.initial_state(tf.shape(inputs)[0])
        x = self.drop(self.embedding(inputs), training=training)
        steps = inputs.shape[1]
        unroll = self._may_unroll and steps is not None
        new_states = []
        for rnn, state in zip(self.rnns, states):
            rnn.unroll = unroll  # read when the layer's call is traced
            if unroll:  # windows of at most UNROLL_MAX_STEPS, the state carried from one to the next
                outputs, state = [], list(state)
                for start in range(0, steps, UNROLL_MAX_STEPS):
                    out, *state = self._unrolled(rnn, x[:, start : start + UNROLL_MAX_STEPS], state, training)
                    outputs.append(out)
                x = outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=1)
            else:
                x, *state = rnn(x, initial_state=list(state), training=training)
            x = self.drop(x, training=training)
            new_states.append(state)
        return x, new_states

    def _unrolled(self, rnn, x, state: list, training: bool):
        if self.cell == "lstm":  # the same arithmetic, casts hoisted (unrolled_lstm)
            if not rnn.built:
                rnn.build(x.shape)
            return unrolled_lstm(rnn.cell, x, state)
        return rnn(x, initial_state=state, training=training)

    @classmethod
    def planned(cls, options: dict, batch: int, steps: int, compute_bytes: int = 4) -> Planned:
        """Per layer gates x (input width + hidden_size) x hidden_size kernels and gates x hidden_size
        biases (the GRU's reset-after form two sets); kept per layer and token: the gates' pre- and
        post-activation values and the cell's outputs, (2 gates + 2) x hidden_size values."""
        vocab, width, hidden = options["vocab_size"], options["embedding_dim"], options["hidden_size"]
        cell = options["cell"]
        gates, tokens = GATES.get(cell, 1), batch * steps
        dense = 0
        for _ in range(options["num_layers"]):
            dense += gates * (width + hidden) * hidden + gates * hidden * (2 if cell == "gru" else 1)
            width = hidden
        head, kept = planned_head(options["head"], vocab, hidden, options["tie_embeddings"], tokens, compute_bytes)
        activations = tokens * options["embedding_dim"] + options["num_layers"] * tokens * hidden * (2 * gates + 2)
        return Planned(vocab * options["embedding_dim"], dense + head, activations + kept)

    def body_flops_per_token(self, context: int | None = None) -> float:
        """Per layer, 2 x gates x (input width + hidden_size) x hidden_size: the input GEMM and the
        recurrent GEMM of every gate block (`GATES`); the window's length does not matter."""
        flops, width = 0.0, self.embedding_dim
        for _ in range(self.num_layers):
            flops += 2.0 * GATES[self.cell] * (width + self.hidden_size) * self.hidden_size
            width = self.hidden_size
        return flops

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "cell": self.cell,
            "embedding_dim": self.embedding_dim,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "dropout": self.dropout_rate,
            "tie_embeddings": self.tie_embeddings,
            "activation": self.activation,
            "init_scale": self.init_scale,
            "head": self.output_head.options(),
        }
