"""Recurrent language models: embedding -> N stacked RNN/GRU/LSTM layers -> output head.

The Zaremba et al. (2014) set-up: dropout on the non-recurrent connections (after the embedding,
between layers, before the output projection), hidden state carried across truncated-BPTT windows
by the trainer, optional tying of the input and output embeddings (Press & Wolf 2017).

The AWD-LSTM (Merity et al. 2018) is the same family with options, all off by default so that every
existing config builds the same network with the same random draws: `dropout_input`,
`dropout_hidden` (null: `dropout`), `dropout_embedding` (whole words), `locked_dropout` (one mask
per stream per window), `weight_drop` (DropConnect on the LSTM's recurrent kernels, one mask per
window), `ar_alpha`/`tar_beta` (activation penalties, added through Keras' `add_loss`) and
`last_layer_size` (the last layer as wide as the embedding, so that a 1150-wide stack can be tied).
The pieces are in `regularization.py`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from lmbench.errors import ConfigError
from lmbench.models.embedding import Embedding
from lmbench.models.heads import build_head, planned_head
from lmbench.models.neural import NeuralLM, Planned
from lmbench.models.regularization import (
    Dropout,
    activation_penalty,
    embedding_dropout,
    locked_dropout,
    weight_drop,
)

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


def _check_options(cell, embedding_dim, hidden_size, num_layers, tie_embeddings, activation, rates, awd) -> None:
    """A bad option is one ConfigError, before any weight exists."""
    if cell not in CELLS:
        raise ConfigError(f"model.cell={cell!r} is not one of {', '.join(CELLS)}")
    last = awd["last_layer_size"] or hidden_size
    if num_layers < 1 or hidden_size < 1 or embedding_dim < 1 or last < 1:
        raise ConfigError("model.num_layers, hidden_size, embedding_dim and last_layer_size must be >= 1")
    for key, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ConfigError(f"model.{key} must be in [0, 1), got {rate!r}")
    for key in ("ar_alpha", "tar_beta"):
        if not awd[key] >= 0.0:
            raise ConfigError(f"model.{key} must be >= 0, got {awd[key]}")
    if rates["weight_drop"] and cell != "lstm":
        raise ConfigError(f"model.weight_drop is built for the LSTM's recurrent kernels, not model.cell={cell}")
    if tie_embeddings and embedding_dim != last:
        raise ConfigError(
            "model.tie_embeddings=true needs model.embedding_dim == the last layer's size (model.hidden_size, "
            f"or model.last_layer_size when set) (got {embedding_dim} and {last})"
        )
    if cell == "rnn" and activation not in ("tanh", "relu"):
        raise ConfigError(f"model.activation must be tanh or relu, got {activation!r}")


def unrolled_lstm(cell, x, state, recurrent=None):
    """What `keras.layers.LSTM(return_sequences=True, return_state=True, unroll=True)` computes
    with `cell`'s own weights (no dropout inside the cell: the family drops out between layers),
    x [batch, steps, d] in the compute dtype -> (outputs, h, c). `recurrent`: the hidden-to-hidden
    kernel to use instead of the cell's (weight drop: the cell's, masked, one mask per window).

    Keras' unrolled cell casts its float32 kernels to the compute dtype again at every step, forward
    and backward (12 ms of a 110 ms mixed_bfloat16 step of a 2 x 200 LSTM, 35 steps), and multiplies
    each step's input apart; here the kernels are cast once per window and the inputs of all steps
    go through one GEMM. Gates in Keras' order (input, forget, candidate, output)."""
    dtype = x.dtype
    recurrent = cell.recurrent_kernel if recurrent is None else recurrent
    kernel, recurrent, bias = (tf.cast(w, dtype) for w in (cell.kernel, recurrent, cell.bias))
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
        # AWD-LSTM (module docstring); the defaults build the Zaremba network unchanged
        dropout_input: float | None = None,  # on the embedding's output; null: `dropout`
        dropout_hidden: float | None = None,  # between layers; null: `dropout`
        dropout_embedding: float = 0.0,  # whole words, before dropout_input
        locked_dropout: bool = False,  # the three dropouts: one mask per stream per window
        weight_drop: float = 0.0,  # DropConnect on the LSTM's recurrent kernels, one mask per window
        ar_alpha: float = 0.0,  # AR: alpha x mean(dropped last-layer outputs^2), added to the loss
        tar_beta: float = 0.0,  # TAR: beta x mean((h_{t+1} - h_t)^2) of undropped last-layer outputs
        last_layer_size: int | None = None,  # units of the last layer; null: hidden_size
    ):
        super().__init__(vocab_size, eos_id, eval_window=eval_window)
        self.last_layer_size = last_layer_size
        self.layer_sizes = [hidden_size] * (num_layers - 1) + [last_layer_size or hidden_size]
        self._regularize(
            dropout=dropout, dropout_input=dropout_input, dropout_hidden=dropout_hidden,
            dropout_embedding=dropout_embedding, locked_dropout=locked_dropout, weight_drop=weight_drop,
            ar_alpha=ar_alpha, tar_beta=tar_beta,
        )
        _check_options(cell, embedding_dim, hidden_size, num_layers, tie_embeddings, activation, self.rates,
                       self.awd_options)
        self.family = self.cell = cell
        self.embedding_dim, self.hidden_size, self.num_layers = embedding_dim, hidden_size, num_layers
        self.dropout_rate, self.tie_embeddings = dropout, tie_embeddings
        self.activation, self.init_scale = activation, init_scale

        def init(keras_default: str):
            if init_scale is None:
                return keras_default
            return keras.initializers.RandomUniform(-init_scale, init_scale)

        self.embedding = Embedding(vocab_size, embedding_dim, embeddings_initializer=init("uniform"))
        layer_kwargs = {"activation": activation} if cell == "rnn" else {}
        self.rnns = [
            CELLS[cell](units, return_sequences=True, return_state=True, **layer_kwargs) for units in self.layer_sizes
        ]
        self.drop = Dropout(dropout)
        self._may_unroll = not tf.config.list_logical_devices("GPU")
        self.output_head = build_head(
            head,
            owner=self,
            vocab_size=vocab_size,
            input_dim=self.layer_sizes[-1],
            tied_embedding=self.embedding if tie_embeddings else None,
            kernel_initializer=init("glorot_uniform"),
        )

    def _regularize(self, **options) -> None:
        """The AWD options as given (`awd_options`, for get_config), the rate of each dropout
        (`rates`: dropout_input and dropout_hidden default to `dropout`) and whether any is set
        (`awd`): if not, the Zaremba path -- one Dropout layer everywhere, the same layers and random
        draws as before the options existed."""
        self.awd_options = {k: v for k, v in options.items() if k != "dropout"}
        self.awd_options["last_layer_size"] = self.last_layer_size
        self.dropout_embedding, self.locked_dropout = options["dropout_embedding"], options["locked_dropout"]
        self.weight_drop = options["weight_drop"]
        self.ar_alpha, self.tar_beta = options["ar_alpha"], options["tar_beta"]
        dropout = options["dropout"]
        self.rates = {
            "dropout": dropout, "dropout_embedding": self.dropout_embedding, "weight_drop": self.weight_drop,
            **{k: dropout if options[k] is None else options[k] for k in ("dropout_input", "dropout_hidden")},
        }
        self.awd = bool(
            options["dropout_input"] is not None or options["dropout_hidden"] is not None or self.dropout_embedding
            or self.locked_dropout or self.weight_drop or self.ar_alpha or self.tar_beta
        )
        if self.awd:
            self.noise = keras.random.SeedGenerator(name="awd_noise")

    @property
    def state_size(self) -> int:
        return 2 if self.cell == "lstm" else 1

    def initial_state(self, batch_size: int) -> list:
        # In the compute dtype, as every later window's state comes back: float32 zeros made the
        # training step trace a second time (bfloat16 states from the second window on), and each
        # trace of a step is kept (an adaptive head's at |V| = 354k: ~90 MB).
        return [[tf.zeros((batch_size, size), self.compute_dtype)] * self.state_size for size in self.layer_sizes]

    def _drop(self, x, key: str, training: bool):
        """Dropout `key` (dropout_input, dropout_hidden or dropout) of `x` [batch, steps, d]."""
        if not self.awd:
            return self.drop(x, training=training)
        return locked_dropout(x, self.rates[key], self.noise, self.locked_dropout) if training else x

    def call(self, inputs, states=None, training=False):
        if states is None:
            states = self.initial_state(tf.shape(inputs)[0])
        x = self.embedding(inputs)
        if training and self.dropout_embedding:
            x = embedding_dropout(x, inputs, self.vocab_size, self.dropout_embedding, self.noise)
        x = self._drop(x, "dropout_input", training)
        steps = inputs.shape[1]
        weight_dropped = training and self.weight_drop > 0
        # weight drop needs the unrolled LSTM (a masked kernel), on a GPU too; scoring does not drop
        unroll = (self._may_unroll or weight_dropped) and steps is not None
        new_states = []
        for index, (rnn, state) in enumerate(zip(self.rnns, states)):
            rnn.unroll = unroll  # read when the layer's call is traced
            if unroll:  # windows of at most UNROLL_MAX_STEPS, the state carried from one to the next
                recurrent = self._recurrent_kernel(rnn, x.shape, weight_dropped)  # one mask for the window
                outputs, state = [], list(state)
                for start in range(0, steps, UNROLL_MAX_STEPS):
                    piece = x[:, start : start + UNROLL_MAX_STEPS]
                    out, *state = self._unrolled(rnn, piece, state, training, recurrent)
                    outputs.append(out)
                x = outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=1)
            else:
                if weight_dropped:
                    raise ValueError("model.weight_drop needs training windows of a known length")
                x, *state = rnn(x, initial_state=list(state), training=training)
            undropped = x
            x = self._drop(x, "dropout" if index == self.num_layers - 1 else "dropout_hidden", training)
            new_states.append(state)
        if training and (self.ar_alpha or self.tar_beta):
            self.add_loss(activation_penalty(x, undropped, self.ar_alpha, self.tar_beta))
        return x, new_states

    def _recurrent_kernel(self, rnn, shape, dropped: bool):
        """The LSTM's hidden-to-hidden kernel for one window: the cell's, or with weight drop a
        masked copy (None: the cell's own, read inside `unrolled_lstm`)."""
        if self.cell != "lstm" or not dropped:
            return None
        if not rnn.built:
            rnn.build(shape)
        return weight_drop(rnn.cell.recurrent_kernel, self.weight_drop, self.noise)

    def _unrolled(self, rnn, x, state: list, training: bool, recurrent=None):
        if self.cell == "lstm":  # the same arithmetic, casts hoisted (unrolled_lstm)
            if not rnn.built:
                rnn.build(x.shape)
            return unrolled_lstm(rnn.cell, x, state, recurrent)
        return rnn(x, initial_state=state, training=training)

    @classmethod
    def planned(cls, options: dict, batch: int, steps: int, compute_bytes: int = 4) -> Planned:
        """Per layer gates x (input width + hidden_size) x hidden_size kernels and gates x hidden_size
        biases (the GRU's reset-after form two sets); kept per layer and token: the gates' pre- and
        post-activation values and the cell's outputs, (2 gates + 2) x hidden_size values."""
        vocab, width, hidden = options["vocab_size"], options["embedding_dim"], options["hidden_size"]
        cell = options["cell"]
        gates, tokens = GATES.get(cell, 1), batch * steps
        sizes = [hidden] * (options["num_layers"] - 1) + [options.get("last_layer_size") or hidden]  # AWD's last
        dense = 0
        for size in sizes:
            dense += gates * (width + size) * size + gates * size * (2 if cell == "gru" else 1)
            width = size
        head, kept = planned_head(options["head"], vocab, width, options["tie_embeddings"], tokens, compute_bytes)
        activations = tokens * options["embedding_dim"] + tokens * sum(sizes) * (2 * gates + 2)
        return Planned(vocab * options["embedding_dim"], dense + head, activations + kept)

    def body_flops_per_token(self, context: int | None = None) -> float:
        """Per layer, 2 x gates x (input width + hidden_size) x hidden_size: the input GEMM and the
        recurrent GEMM of every gate block (`GATES`); the window's length does not matter."""
        flops, width = 0.0, self.embedding_dim
        for size in self.layer_sizes:
            flops += 2.0 * GATES[self.cell] * (width + size) * size
            width = size
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
            **self._awd_config(),
        }

    def _awd_config(self) -> dict:
        """The AWD options that differ from their defaults: a bundle of a plain network keeps the
        config it had before they existed."""
        defaults = {"dropout_input": None, "dropout_hidden": None, "dropout_embedding": 0.0, "locked_dropout": False,
                    "weight_drop": 0.0, "ar_alpha": 0.0, "tar_beta": 0.0, "last_layer_size": None}
        return {k: v for k, v in self.awd_options.items() if v != defaults[k]}
