"""Decoder-only Transformer language model (GPT-2 / nanoGPT style by default, pre-norm).

token embedding + positions -> n_layer x [norm -> causal self-attention -> +, norm -> MLP -> +]
-> final norm -> output head (models/heads.py: own projection, or the token embedding transposed when tied).
The blocks (models/transformer_blocks.py) take the modern options: rotary positions
(`positions=rope`), RMSNorm (`norm=rmsnorm`), a SwiGLU MLP (`mlp=swiglu`), no biases (`bias=false`),
grouped-query attention (`n_kv_head`) and QK-norm (`qk_norm`); the defaults are GPT-2's.

Training: the model is stateless. It trains on the common trainer's windows of `trainer.bptt`
tokens, each window on its own (`initial_state` is empty and `call` hands it back unchanged), so
`trainer.bptt` must not exceed `context`: the conf/model/transformer*.yaml files set
`context: ${trainer.bptt}` so that the two agree unless overridden.

Evaluation: a stateless model cannot carry history from one window to the next, so `score` slides
a window of `context` tokens over the split with stride `eval_stride`; every token is scored once,
in the window where it has the most history (see `sliding_windows`).

Generation (`CachedStepper`): the prompt is encoded once and each new token costs one position,
its keys and values appended to a per-layer cache of `context` positions. When the cache is full
the last `refill_length(context)` tokens (3/4 of it) are encoded again from position 0 and the cache
refills: every generated token sees between 3/4 context and context tokens of history (the uncached
`WindowStepper` gives each exactly the last `context`, at the cost of a whole window per token).
Sliding the cache instead would keep keys computed from history that is no longer in the window
(for every layer after the first), which no trained window ever showed the model.
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
from lmbench.models.regularization import Dropout
from lmbench.models.transformer_blocks import (
    ROPE_BASE,
    Block,
    check_options,
    make_norm,
    sinusoidal_table,
    swiglu_hidden,
)

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
        positions: str = "learned",  # learned | sinusoidal | rope
        tie_embeddings: bool = False,
        eval_stride: int | None = None,  # null: context // 2; = context: non-overlapping blocks
        init_scale: float = 0.02,  # weights ~ N(0, s) as GPT-2
        head: dict | None = None,  # the output layer (models/heads.py); null: {kind: full}
        norm: str = "layernorm",  # layernorm | rmsnorm
        mlp: str = "gelu",  # gelu | swiglu (hidden size swiglu_hidden(d_ff): as many weights)
        bias: bool = True,  # false: no biases in the blocks and norms (the output head keeps its own)
        n_kv_head: int | None = None,  # key/value heads (grouped-query attention); null: n_head
        qk_norm: bool = False,  # RMS-normalize each head's queries and keys
        # What a pretrained checkpoint fixes (models/hf_checkpoint.py); the defaults are the above's:
        head_dim: int | None = None,  # null: d_model // n_head
        rope_theta: float = ROPE_BASE,  # the rotary frequency base
        norm_eps: float | None = None,  # null: 1e-5 (LayerNorm), 1e-6 (RMSNorm)
        gelu_approximate: bool = False,  # GELU's tanh form (GPT-2's gelu_new)
        mlp_hidden: int | None = None,  # SwiGLU's hidden size; null: swiglu_hidden(d_ff)
    ):
        super().__init__(vocab_size, eos_id)
        check_options(n_layer, n_head, d_model, d_ff, dropout, context, positions, norm, mlp, n_kv_head, head_dim)
        stride = max(1, context // 2) if eval_stride is None else eval_stride
        if not 1 <= stride <= context:
            raise ConfigError(f"model.eval_stride must be in [1, context={context}] or null, got {eval_stride}")
        self.n_layer, self.n_head, self.d_model, self.d_ff = n_layer, n_head, d_model, d_ff
        self.dropout_rate, self.context, self.positions = dropout, context, positions
        self.tie_embeddings, self.eval_stride, self.init_scale = tie_embeddings, eval_stride, init_scale
        self.stride = stride
        self.norm, self.mlp, self.bias, self.n_kv_head, self.qk_norm = norm, mlp, bias, n_kv_head, qk_norm
        self.head_dim, self.rope_theta, self.norm_eps = head_dim, rope_theta, norm_eps
        self.gelu_approximate, self.mlp_hidden = gelu_approximate, mlp_hidden
        self._generation_fns = None  # (prefill, step) of `CachedStepper`, traced on first use

        normal = keras.initializers.RandomNormal(0.0, init_scale)
        self.token_embedding = Embedding(vocab_size, d_model, embeddings_initializer=normal)
        if positions == "learned":
            self.position_embedding = keras.layers.Embedding(context, d_model, embeddings_initializer=normal)
        elif positions == "sinusoidal":
            self.position_table = tf.constant(sinusoidal_table(context, d_model))
        self.drop = Dropout(dropout)
        self.blocks = [self._block() for _ in range(n_layer)]
        self.final_norm = make_norm(norm, bias, norm_eps)
        self.output_head = build_head(
            head,
            owner=self,
            vocab_size=vocab_size,
            input_dim=d_model,
            tied_embedding=self.token_embedding if tie_embeddings else None,
            kernel_initializer=normal,
        )

    def _block(self) -> Block:
        # GPT-2: scale the layers that write into the residual stream by 1/sqrt(2 n_layer), so the
        # stream's variance at init does not grow with depth.
        out_scale = self.init_scale / math.sqrt(2 * self.n_layer)
        return Block(
            self.d_model, self.n_head, self.d_ff, self.dropout_rate, self.init_scale, out_scale,
            n_kv_head=self.n_kv_head or self.n_head, norm=self.norm, mlp=self.mlp, bias=self.bias,
            qk_norm=self.qk_norm, rope_length=self.context if self.positions == "rope" else 0, head_dim=self.head_dim,
            rope_theta=self.rope_theta, norm_eps=self.norm_eps, gelu_approximate=self.gelu_approximate,
            mlp_hidden=self.mlp_hidden,
        )

    @classmethod
    def planned(cls, options: dict, batch: int, steps: int, compute_bytes: int = 4) -> Planned:
        """Per block two norms, the QKV and output projections and the MLP; kept per block: about
        8 d + 2 d_ff values a token and the attention scores and weights, 2 x heads x steps² a window."""
        vocab, d, d_ff, layers = options["vocab_size"], options["d_model"], options["d_ff"], options["n_layer"]
        bias, heads = options.get("bias", True), options["n_head"]
        kv_heads, head_dim = options.get("n_kv_head") or heads, options.get("head_dim") or d // heads
        norm = d if options.get("norm", "layernorm") == "rmsnorm" or not bias else 2 * d  # scale (+ shift)
        qkv = (heads + 2 * kv_heads) * head_dim
        hidden = (options.get("mlp_hidden") or swiglu_hidden(d_ff)) if options.get("mlp", "gelu") == "swiglu" else d_ff
        mlp_in = 2 * hidden if options.get("mlp", "gelu") == "swiglu" else hidden  # SwiGLU: gate and value
        block = 2 * norm + d * qkv + heads * head_dim * d + d * mlp_in + hidden * d
        block += 2 * head_dim if options.get("qk_norm") else 0
        block += (qkv + d + mlp_in + d) if bias else 0
        positions = options["context"] * d if options["positions"] == "learned" else 0
        tokens = batch * steps
        head, kept = planned_head(options["head"], vocab, d, options["tie_embeddings"], tokens, compute_bytes)
        activations = tokens * d + layers * (tokens * (8 * d + 2 * d_ff) + 2 * batch * options["n_head"] * steps**2)
        return Planned(vocab * d, positions + layers * block + norm + head, activations + kept)

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
        x = self.drop(self.embed(inputs), training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.final_norm(x)

    def embed(self, inputs, start=0):
        """Token embeddings of `inputs` [batch, n], plus the positions start..start+n-1 where they are
        added to the input (learned, sinusoidal; rotary ones turn queries and keys instead)."""
        x = self.token_embedding(inputs)
        n = tf.shape(inputs)[1]
        if self.positions == "learned":
            x = x + self.position_embedding(tf.range(start, start + n))
        elif self.positions == "sinusoidal":
            x = x + tf.cast(self.position_table[start : start + n], x.dtype)
        return x

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

        Per layer: the fused QKV projection 2·d·(d + 2·kv), kv = n_kv_head·head_dim (= d without
        grouped-query attention: 2·d·3d), the output projection 2·d·d, the MLP 2·2·d·d_ff (GELU) or
        2·3·d·h (SwiGLU's three matrices, h = swiglu_hidden(d_ff)), and attention's QKᵀ and AV
        products, 2·T·d each (every query head reads T keys, grouped or not):
        `CausalSelfAttention` computes the whole T x T score matrix and masks it, so every position
        pays for all T, not for the ≈ T/2 of a causal average. Rotary positions and norms are
        elementwise, not counted."""
        t = self.context if context is None else int(context)
        if not 1 <= t <= self.context:
            raise ValueError(f"context must be in [1, model.context={self.context}], got {context}")
        d = self.d_model
        attn = self.blocks[0].attn
        q, kv = self.n_head * attn.head_dim, attn.n_kv_head * attn.head_dim
        mlp = 3 * self.blocks[0].hidden if self.mlp == "swiglu" else 2 * self.d_ff
        projections = 2.0 * (d * (q + 2 * kv) + q * d) + 2.0 * d * mlp
        attention = 2.0 * 2 * t * q
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

    def stepper(self, prompt: np.ndarray, cached: bool = True) -> CachedStepper | WindowStepper:
        """The model after reading a lone eos and `prompt`, ready to step token by token (`generate`
        uses it): with a key/value cache (`CachedStepper`), or re-reading the last `context` tokens
        at every step (`cached=False`, the reference the cache is tested against)."""
        return CachedStepper(self, prompt) if cached else WindowStepper(self, prompt)

    def generation_fns(self):
        """(prefill, step) of `CachedStepper`, traced once: prefill(window [1, T]) encodes a window
        from position 0, step(token [1, 1], position, caches) one more position; both return the
        next token's log-probabilities [1, |V|] and the caches (keys and values of every layer,
        [1, n_kv_head, context, head_dim] each)."""
        if self._generation_fns is None:

            @tf.function(input_signature=[tf.TensorSpec([1, None], tf.int32)])
            def prefill(window):
                x, caches = self.embed(window), []
                for block in self.blocks:
                    x, k, v = block.prefill(x, self.context)
                    caches += [k, v]
                return self.output_head.log_probs(self.final_norm(x)[:, -1]), caches

            @tf.function
            def step(token, position, caches):
                x, new = self.embed(token, start=position), []
                for i, block in enumerate(self.blocks):
                    x, k, v = block.step(x, position, caches[2 * i], caches[2 * i + 1])
                    new += [k, v]
                return self.output_head.log_probs(self.final_norm(x)[:, -1]), new

            self._generation_fns = (prefill, step)
        return self._generation_fns

    def get_config(self) -> dict:
        # Not NeuralLM's: eval_window (its recurrent scoring chunk) has no meaning here.
        keys = (
            "vocab_size", "eos_id", "n_layer", "n_head", "d_model", "d_ff", "context", "positions", "tie_embeddings",
            "eval_stride", "init_scale", "norm", "mlp", "bias", "n_kv_head", "qk_norm", "head_dim", "rope_theta",
            "norm_eps", "gelu_approximate", "mlp_hidden",
        )
        return {**{key: getattr(self, key) for key in keys}, "dropout": self.dropout_rate,
                "head": self.output_head.options()}


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


def refill_length(context: int) -> int:
    """How many of the last tokens `CachedStepper` encodes again when its cache is full: 3/4 of the
    context, so a refill (one pass over them) comes every context/4 tokens and every token keeps
    at least 3/4 of the context as history."""
    return max(1, 3 * context // 4)


class CachedStepper:
    """Next-token log-probabilities of the Transformer with a key/value cache (see the module
    docstring): the prompt encoded once, then one position per token."""

    def __init__(self, model: TransformerLM, prompt: np.ndarray):
        self.model = model
        self.prefill, self.step = model.generation_fns()
        self.history = [model.eos_id, *np.asarray(prompt, dtype=np.int64).tolist()]
        self._encode(self.history[-model.context :])

    def _encode(self, window: list[int]) -> None:
        self.log_probs, self.caches = self.prefill(tf.constant([window], dtype=tf.int32))
        self.position = len(window)  # cache entries filled: the next token's position

    def next_logits(self) -> np.ndarray:
        return self.log_probs[0].numpy().astype(np.float64)

    def append(self, token: int) -> None:
        self.history.append(int(token))
        if self.position == self.model.context:  # full: encode the last tokens again from position 0
            self._encode(self.history[-refill_length(self.model.context) :])
            return
        token_t = tf.constant([[int(token)]], dtype=tf.int32)
        self.log_probs, self.caches = self.step(token_t, tf.constant(self.position, tf.int32), self.caches)
        self.position += 1
