"""Decoder-only Transformer language model (GPT-2 / nanoGPT style, pre-layer-norm).

token embedding + positions -> n_layer x [LN -> causal self-attention -> +, LN -> GELU MLP -> +]
-> final LN -> output head (models/heads.py: own projection, or the token embedding transposed when tied).

Training: the model is stateless. It trains on the common trainer's windows of `trainer.bptt`
tokens, each window on its own (`initial_state` is empty and `call` hands it back unchanged), so
`trainer.bptt` must not exceed `context`: the conf/model/transformer*.yaml files set
`context: ${trainer.bptt}` so that the two agree unless overridden.

Evaluation: a stateless model cannot carry history from one window to the next, so `score` slides
a window of `context` tokens over the split with stride `eval_stride`; every token is scored once,
in the window where it has the most history (see `sliding_windows`).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from lmbench.errors import ConfigError
from lmbench.models.base import Progress
from lmbench.models.embedding import Embedding
from lmbench.models.heads import build_head, planned_head
from lmbench.models.neural import NeuralLM, Planned

POSITIONS = ("learned", "sinusoidal")
# Scored positions per scoring call, at least: `score` runs this many // stride windows at once
# even when the evaluator's batch is smaller (eval_throughput.py, |V| = 10k: 64 windows of
# context 35, stride 17, at once score 1.39x faster than 10).
SCORE_POSITIONS = 1024


def sliding_windows(n_tokens: int, context: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the evaluation windows over positions 0..n_tokens-1.

    Window w covers positions [starts[w], ends[w]) and scores [ends[w-1], ends[w]) (the first window
    scores all of its positions), so the scored ranges tile the split exactly once. Ends advance by
    `stride`; the last window is moved left to stay `context` long, which only adds history.
    Every scored position thus sees between context - stride + 1 and context tokens of history.
    """
    ends = np.append(np.arange(min(context, n_tokens), n_tokens, stride), n_tokens)
    starts = np.maximum(ends - context, 0)
    return starts, ends


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """Vaswani et al. (2017) position encodings, [length, dim]."""
    pos = np.arange(length)[:, None]
    freq = np.exp(-math.log(10000.0) * (np.arange(0, dim, 2) / dim))
    table = np.zeros((length, dim), dtype=np.float32)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)[:, : dim // 2]
    return table


class CausalSelfAttention(keras.layers.Layer):
    """Multi-head self-attention where position t attends to positions <= t.

    One fused QKV projection and plain matmuls: on CPU this is faster than
    keras.layers.MultiHeadAttention, which projects Q, K and V by three separate einsums.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float, init_scale: float, out_scale: float, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.n_head, self.dropout = d_model, n_head, dropout
        self.init_scale, self.out_scale = init_scale, out_scale
        self.qkv = keras.layers.Dense(3 * d_model, kernel_initializer=keras.initializers.RandomNormal(0.0, init_scale))
        self.out = keras.layers.Dense(d_model, kernel_initializer=keras.initializers.RandomNormal(0.0, out_scale))
        self.attn_drop = keras.layers.Dropout(dropout)
        self.resid_drop = keras.layers.Dropout(dropout)

    def call(self, x, training=False):
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        head_dim = self.d_model // self.n_head
        qkv = tf.reshape(self.qkv(x), (batch, length, 3, self.n_head, head_dim))
        q, k, v = tf.unstack(tf.transpose(qkv, (2, 0, 3, 1, 4)))  # each [batch, head, length, head_dim]
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(head_dim))
        # Softmax in float32 even under a bfloat16 policy: the row sums need the precision.
        causal = tf.linalg.band_part(tf.ones((length, length), tf.bool), -1, 0)
        scores = tf.where(causal, tf.cast(scores, tf.float32), -1e9)
        weights = self.attn_drop(tf.cast(tf.nn.softmax(scores), v.dtype), training=training)
        y = tf.transpose(tf.matmul(weights, v), (0, 2, 1, 3))
        y = tf.reshape(y, (batch, length, self.d_model))
        return self.resid_drop(self.out(y), training=training)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "d_model": self.d_model, "n_head": self.n_head, "dropout": self.dropout,
            "init_scale": self.init_scale, "out_scale": self.out_scale,
        }


class Block(keras.layers.Layer):
    """Pre-LN residual block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self, d_model: int, n_head: int, d_ff: int, dropout: float, init_scale: float, out_scale: float, **kwargs
    ):
        super().__init__(**kwargs)
        self.d_model, self.n_head, self.d_ff, self.dropout = d_model, n_head, d_ff, dropout
        self.init_scale, self.out_scale = init_scale, out_scale
        self.ln1 = keras.layers.LayerNormalization(epsilon=1e-5)
        self.attn = CausalSelfAttention(d_model, n_head, dropout, init_scale, out_scale)
        self.ln2 = keras.layers.LayerNormalization(epsilon=1e-5)
        self.fc = keras.layers.Dense(
            d_ff, activation="gelu", kernel_initializer=keras.initializers.RandomNormal(0.0, init_scale)
        )
        self.proj = keras.layers.Dense(d_model, kernel_initializer=keras.initializers.RandomNormal(0.0, out_scale))
        self.mlp_drop = keras.layers.Dropout(dropout)

    def call(self, x, training=False):
        x = x + self.attn(self.ln1(x), training=training)
        return x + self.mlp_drop(self.proj(self.fc(self.ln2(x))), training=training)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "d_model": self.d_model, "n_head": self.n_head, "d_ff": self.d_ff, "dropout": self.dropout,
            "init_scale": self.init_scale, "out_scale": self.out_scale,
        }


class TransformerLM(NeuralLM):
    family = "transformer"

    def __init__(
        self,
        vocab_size: int,
        eos_id: int,
        n_layer: int = 2,
        n_head: int = 4,
        d_model: int = 200,
        d_ff: int = 800,
        dropout: float = 0.1,
        context: int = 35,  # longest input, in tokens; training windows (trainer.bptt) must fit
        positions: str = "learned",  # learned | sinusoidal
        tie_embeddings: bool = False,
        eval_stride: int | None = None,  # null: context // 2; = context: non-overlapping blocks
        init_scale: float = 0.02,  # weights ~ N(0, s) as GPT-2
        head: dict | None = None,  # the output layer (models/heads.py); null: {kind: full}
    ):
        super().__init__(vocab_size, eos_id)
        if min(n_layer, n_head, d_model, d_ff, context) < 1:
            raise ConfigError("model.n_layer, n_head, d_model, d_ff and context must be >= 1")
        if d_model % n_head:
            raise ConfigError(f"model.d_model={d_model} must be divisible by model.n_head={n_head}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
        if positions not in POSITIONS:
            raise ConfigError(f"model.positions={positions!r} is not one of {', '.join(POSITIONS)}")
        if positions == "sinusoidal" and d_model % 2:
            raise ConfigError(f"model.positions=sinusoidal needs an even model.d_model, got {d_model}")
        stride = max(1, context // 2) if eval_stride is None else eval_stride
        if not 1 <= stride <= context:
            raise ConfigError(f"model.eval_stride must be in [1, context={context}] or null, got {eval_stride}")
        self.n_layer, self.n_head, self.d_model, self.d_ff = n_layer, n_head, d_model, d_ff
        self.dropout_rate, self.context, self.positions = dropout, context, positions
        self.tie_embeddings, self.eval_stride, self.init_scale = tie_embeddings, eval_stride, init_scale
        self.stride = stride

        normal = keras.initializers.RandomNormal(0.0, init_scale)
        self.token_embedding = Embedding(vocab_size, d_model, embeddings_initializer=normal)
        if positions == "learned":
            self.position_embedding = keras.layers.Embedding(context, d_model, embeddings_initializer=normal)
        else:
            self.position_table = tf.constant(sinusoidal_table(context, d_model))
        self.drop = keras.layers.Dropout(dropout)
        # GPT-2: scale the layers that write into the residual stream by 1/sqrt(2 n_layer), so the
        # stream's variance at init does not grow with depth.
        out_scale = init_scale / math.sqrt(2 * n_layer)
        self.blocks = [Block(d_model, n_head, d_ff, dropout, init_scale, out_scale) for _ in range(n_layer)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5)
        self.output_head = build_head(
            head,
            owner=self,
            vocab_size=vocab_size,
            input_dim=d_model,
            tied_embedding=self.token_embedding if tie_embeddings else None,
            kernel_initializer=normal,
        )

    @classmethod
    def planned(cls, options: dict, batch: int, steps: int, compute_bytes: int = 4) -> Planned:
        """Per block two norms, the QKV and output projections and the MLP; kept per block: about
        8 d + 2 d_ff values a token and the attention scores and weights, 2 x heads x steps² a window."""
        vocab, d, d_ff, layers = options["vocab_size"], options["d_model"], options["d_ff"], options["n_layer"]
        block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * d_ff + d_ff) + (d_ff * d + d)
        positions = options["context"] * d if options["positions"] == "learned" else 0
        tokens = batch * steps
        head, kept = planned_head(options["head"], vocab, d, options["tie_embeddings"], tokens, compute_bytes)
        activations = tokens * d + layers * (tokens * (8 * d + 2 * d_ff) + 2 * batch * options["n_head"] * steps**2)
        return Planned(vocab * d, positions + layers * block + 2 * d + head, activations + kept)

    @property
    def eval_method(self) -> str:
        """How `score` conditions each token, for the run's record."""
        return f"sliding window, context {self.context}, stride {self.stride}"

    def initial_state(self, batch_size: int) -> list:
        return []  # stateless: every window starts from nothing

    def call(self, inputs, states=None, training=False):
        return self.features(inputs, training=training), [] if states is None else states

    def features(self, inputs, training=False):
        """The final-norm hidden state of every position: [batch, length, d_model]."""
        length = inputs.shape[1]
        if length is not None and length > self.context:
            raise ConfigError(
                f"the Transformer got {length} tokens but model.context={self.context}; "
                "keep trainer.bptt <= model.context"
            )
        if length is None:  # shape known only when the graph runs
            tf.debugging.assert_less_equal(
                tf.shape(inputs)[1], self.context,
                message="the Transformer's input is longer than model.context; keep trainer.bptt <= model.context",
            )
        x = self.token_embedding(inputs)
        n = tf.shape(inputs)[1]
        if self.positions == "learned":
            x = x + self.position_embedding(tf.range(n))
        else:
            x = x + tf.cast(self.position_table[:n], x.dtype)
        x = self.drop(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.final_norm(x)

    # -- the contract: exact scoring and generation for a model with a context limit ------------
    def score(self, ids: np.ndarray, *, batch_size: int = 10, progress: Progress | None = None) -> np.ndarray:
        """Log-probability (nats) of every token of `ids`, by sliding windows of `context` tokens.

        Position p's input is the token before it (a lone eos before ids[0], as the contract says).
        Windows are independent, so `batch_size` of them (or more, see SCORE_POSITIONS) run at once.
        The first window scores all its positions; every later one only its last `stride` (or
        fewer), so only those go through the output projection, the costliest layer at word-level
        vocabularies.
        """
        ids = np.asarray(ids)
        if len(ids) == 0:
            return np.zeros(0, dtype=np.float64)
        inputs_stream = np.concatenate([[self.eos_id], ids[:-1]]).astype(np.int32)
        starts, ends = sliding_windows(len(ids), self.context, self.stride)
        lows = np.concatenate([[0], ends[:-1]])  # window w scores positions [lows[w], ends[w])
        width = int(ends[0] - starts[0])  # every window: context, or the whole split if shorter
        cols = starts[:, None] + np.arange(width)
        inputs, targets = inputs_stream[cols], ids[cols].astype(np.int32)
        out = np.empty(len(ids), dtype=np.float64)
        step = self._tail_scoring_step()
        groups = [(0, 1, width)]  # (first window, last window + 1, scored tail length)
        tail = min(self.stride, width)
        # Windows are independent, so how many run at once changes no number: at least enough for
        # SCORE_POSITIONS scored positions (a few dozen at stride 17), or the GEMMs are too small.
        batch_size = max(batch_size, -(-SCORE_POSITIONS // tail))
        groups += [(b, min(b + batch_size, len(starts)), tail) for b in range(1, len(starts), batch_size)]
        for first, last, keep in groups:
            # The last group filled up to batch_size windows (copies of its last one, not read):
            # every group after the first has one static shape, so one traced step.
            rows = np.arange(first, last) if first == 0 else np.minimum(np.arange(first, first + batch_size), last - 1)
            logp = step(tf.constant(inputs[rows]), tf.constant(targets[rows, width - keep :])).numpy()
            for w in range(first, last):
                n = int(ends[w] - lows[w])
                out[lows[w] : ends[w]] = logp[w - first, keep - n :]
            if progress is not None:
                progress(int(ends[last - 1] - lows[first]))
        return out

    def body_flops_per_token(self, context: int | None = None) -> float:
        """Forward FLOPs per position for windows of `context` tokens (None: the model's context).

        Per layer: the fused QKV projection 2·d·3d, the output projection 2·d·d, the MLP 2·2·d·d_ff,
        and attention's QKᵀ and AV products, 2·T·d each: `CausalSelfAttention` computes the whole
        T x T score matrix and masks it, so every position pays for all T, not for the ≈ T/2 of a
        causal average."""
        t = self.context if context is None else int(context)
        if not 1 <= t <= self.context:
            raise ValueError(f"context must be in [1, model.context={self.context}], got {context}")
        d = self.d_model
        projections = 2.0 * (3 * d * d + d * d) + 2.0 * 2 * d * self.d_ff
        attention = 2.0 * 2 * t * d
        return self.n_layer * (projections + attention)

    def scoring_flops_per_token(self) -> float:
        """What `score` computes per scored token (forward only): each window of `context` tokens
        runs the whole network over all its positions but scores only its last `stride`, which alone
        go through the head; so the network's cost is paid context / stride times per token. Not
        counted: the first window (it scores all its positions), the copies that fill the last group
        of windows, and splits shorter than `context`."""
        return self.body_flops_per_token(self.context) * self.context / self.stride + self.output_head.flops_per_token()

    def _tail_scoring_step(self):
        """log p of the last `targets.shape[1]` positions of each window."""
        if self._score_fn is None:

            @tf.function  # two traces: the first window, then groups of batch_size windows
            def step(x, y_tail):
                h = self.features(x, training=False)[:, tf.shape(x)[1] - tf.shape(y_tail)[1] :]
                return -self.output_head.token_nll(h, y_tail)

            self._score_fn = step
        return self._score_fn

    def stepper(self, prompt: np.ndarray) -> WindowStepper:
        """As NeuralLM's, but each step re-reads the last `context` tokens: there is no state to
        carry the history (`generate` uses it too)."""
        return WindowStepper(self, prompt)

    def get_config(self) -> dict:
        # Not NeuralLM's: eval_window (its recurrent scoring chunk) has no meaning here.
        return {
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "d_model": self.d_model,
            "d_ff": self.d_ff,
            "dropout": self.dropout_rate,
            "context": self.context,
            "positions": self.positions,
            "tie_embeddings": self.tie_embeddings,
            "eval_stride": self.eval_stride,
            "init_scale": self.init_scale,
            "head": self.output_head.options(),
        }


class WindowStepper:
    """Next-token log-probabilities of a stateless model from the last `context` tokens (see
    `base.Stepper`)."""

    def __init__(self, model: TransformerLM, prompt: np.ndarray):
        self.model = model
        self.history = [model.eos_id, *np.asarray(prompt, dtype=np.int64).tolist()]

    def next_logits(self) -> np.ndarray:
        window = tf.constant([self.history[-self.model.context :]], dtype=tf.int32)
        last = self.model.features(window)[:, -1]  # only the last position goes through the head
        return self.model.output_head.log_probs(last)[0].numpy().astype(np.float64)

    def append(self, token: int) -> None:
        self.history.append(int(token))
