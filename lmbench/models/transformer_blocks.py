"""The Transformer's layers: causal self-attention (with grouped-query heads, rotary positions and a
key/value cache for generation), the MLP (GELU or SwiGLU), the norm (LayerNorm or RMSNorm) and the
pre-norm residual block that holds them. `models/transformer.py` stacks them into the model.

The defaults build GPT-2's block exactly as before these options existed (same layers, same
attribute names, so the same saved weights): learned or sinusoidal positions added to the input,
LayerNorm, a GELU MLP, biases everywhere, as many key/value heads as query heads. What a pretrained
checkpoint fixes besides (models/hf_checkpoint.py) is an option too, its default the old behaviour:
`norm_eps`, `rope_theta`, `gelu_approximate` (GPT-2's tanh form), `head_dim` (other than
d_model / n_head) and `mlp_hidden` (the SwiGLU width as given, not derived from d_ff).
"""

from __future__ import annotations

import math
from functools import partial

import keras
import numpy as np
import tensorflow as tf

from lmbench.errors import ConfigError
from lmbench.models.regularization import Dropout

POSITIONS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
ROPE_BASE = 10000.0  # RoFormer's and Llama's frequency base
SWIGLU_MULTIPLE = 8  # the SwiGLU hidden size is rounded to a multiple of this


def swiglu_hidden(d_ff: int) -> int:
    """The SwiGLU hidden size whose three d x h matrices hold as many weights as GELU's two d x d_ff:
    2/3 d_ff, rounded to the nearest multiple of SWIGLU_MULTIPLE (at least one multiple). Llama's
    rule, with a multiple small enough for CPU-sized models (Llama rounds up to 256)."""
    return max(SWIGLU_MULTIPLE, SWIGLU_MULTIPLE * round(2 * d_ff / 3 / SWIGLU_MULTIPLE))


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """Vaswani et al. (2017) position encodings, [length, dim]."""
    pos = np.arange(length)[:, None]
    freq = np.exp(-math.log(10000.0) * (np.arange(0, dim, 2) / dim))
    table = np.zeros((length, dim), dtype=np.float32)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)[:, : dim // 2]
    return table


def rope_tables(length: int, head_dim: int, base: float = ROPE_BASE) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of RoPE's rotation angles (Su et al. 2021), [length, head_dim / 2]: dimension
    pair i of position t turns by t * base^(-2i / head_dim)."""
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(length, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x, cos, sin):
    """x [..., T, head_dim] rotated by the angles of its positions (cos, sin: [T, head_dim / 2]).
    The pairs are (i, i + head_dim / 2), the "rotate half" layout of GPT-NeoX and Llama: two
    slices instead of an interleaving gather."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = tf.cast(cos, x.dtype), tf.cast(sin, x.dtype)
    return tf.concat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def check_options(
    n_layer: int, n_head: int, d_model: int, d_ff: int, dropout: float, context: int, positions: str, norm: str,
    mlp: str, n_kv_head: int | None, head_dim: int | None = None,
) -> None:
    """A `ConfigError` naming the first of the Transformer's options that cannot be built."""
    if min(n_layer, n_head, d_model, d_ff, context) < 1 or (head_dim is not None and head_dim < 1):
        raise ConfigError("model.n_layer, n_head, d_model, d_ff, context (and head_dim if set) must be >= 1")
    if head_dim is None and d_model % n_head:
        raise ConfigError(f"model.d_model={d_model} must be divisible by model.n_head={n_head}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
    if positions not in POSITIONS:
        raise ConfigError(f"model.positions={positions!r} is not one of {', '.join(POSITIONS)}")
    if positions == "sinusoidal" and d_model % 2:
        raise ConfigError(f"model.positions=sinusoidal needs an even model.d_model, got {d_model}")
    size = d_model // n_head if head_dim is None else head_dim
    if positions == "rope" and size % 2:
        raise ConfigError(f"model.positions=rope needs an even head size, got {size}")
    if norm not in NORMS:
        raise ConfigError(f"model.norm={norm!r} is not one of {', '.join(NORMS)}")
    if mlp not in MLPS:
        raise ConfigError(f"model.mlp={mlp!r} is not one of {', '.join(MLPS)}")
    kv_heads = n_head if n_kv_head is None else n_kv_head
    if kv_heads < 1 or n_head % kv_heads:
        raise ConfigError(f"model.n_kv_head={n_kv_head} must be >= 1 and divide model.n_head={n_head}")


def make_norm(kind: str, bias: bool, eps: float | None = None):
    """The block's norm: LayerNorm (with its shift unless bias=False) or RMSNorm (Zhang & Sennrich
    2019: a scale only), both in float32 under a bfloat16 policy (Keras computes them so). `eps`:
    the variance's epsilon; None: 1e-6 for RMSNorm, 1e-5 for LayerNorm."""
    if kind == "rmsnorm":
        return keras.layers.RMSNormalization(epsilon=1e-6 if eps is None else eps)
    return keras.layers.LayerNormalization(epsilon=1e-5 if eps is None else eps, center=bias)


class CausalSelfAttention(keras.layers.Layer):
    """Multi-head self-attention where position t attends to positions <= t.

    One fused QKV projection and plain matmuls: on CPU this is faster than
    keras.layers.MultiHeadAttention, which projects Q, K and V by three separate einsums, and than
    keras.ops.dot_product_attention (benchmarks/attention_kernels.py; experiments/README.md).
    `n_kv_head` < `n_head` is grouped-query attention (Ainslie et al. 2023): each group of
    n_head / n_kv_head query heads shares one key/value head, so the projection is
    (n_head + 2 n_kv_head) x head_dim wide. `rope_length` > 0 rotates queries and keys by their
    positions (up to that many, frequency base `rope_theta`); `qk_norm` RMS-normalizes each head's
    queries and keys. `head_dim` (None: d_model / n_head) sets the width of every head.
    """

    def __init__(
        self, d_model: int, n_head: int, dropout: float, init_scale: float, out_scale: float,
        n_kv_head: int | None = None, bias: bool = True, qk_norm: bool = False, rope_length: int = 0,
        head_dim: int | None = None, rope_theta: float = ROPE_BASE, **kwargs,
    ):
        super().__init__(**kwargs)
        self.d_model, self.n_head, self.dropout = d_model, n_head, dropout
        self.init_scale, self.out_scale = init_scale, out_scale
        self.n_kv_head = n_head if n_kv_head is None else n_kv_head
        self.bias, self.qk_norm, self.rope_length = bias, qk_norm, rope_length
        self.head_dim = d_model // n_head if head_dim is None else head_dim
        self.rope_theta = rope_theta
        width = (n_head + 2 * self.n_kv_head) * self.head_dim
        self.qkv = keras.layers.Dense(
            width, use_bias=bias, kernel_initializer=keras.initializers.RandomNormal(0.0, init_scale)
        )
        self.out = keras.layers.Dense(
            d_model, use_bias=bias, kernel_initializer=keras.initializers.RandomNormal(0.0, out_scale)
        )
        self.attn_drop = Dropout(dropout)
        self.resid_drop = Dropout(dropout)
        if qk_norm:  # created only when asked, so a default block saves the weights it always did
            self.q_norm = keras.layers.RMSNormalization(epsilon=1e-6)
            self.k_norm = keras.layers.RMSNormalization(epsilon=1e-6)
        if rope_length:
            cos, sin = rope_tables(rope_length, self.head_dim, rope_theta)
            self.rope_cos, self.rope_sin = tf.constant(cos), tf.constant(sin)

    def heads(self, x, start=0):
        """q [batch, n_head, T, head_dim] and k, v [batch, n_kv_head, T, head_dim] of x
        [batch, T, d_model] whose first position is `start` (for the rotary angles)."""
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        hd, h, kv = self.head_dim, self.n_head, self.n_kv_head
        q, k, v = tf.split(self.qkv(x), [h * hd, kv * hd, kv * hd], axis=-1)
        q = tf.transpose(tf.reshape(q, (batch, length, h, hd)), (0, 2, 1, 3))
        k = tf.transpose(tf.reshape(k, (batch, length, kv, hd)), (0, 2, 1, 3))
        v = tf.transpose(tf.reshape(v, (batch, length, kv, hd)), (0, 2, 1, 3))
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope_length:
            cos, sin = self.rope_cos[start : start + length], self.rope_sin[start : start + length]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def attend(self, q, k, v, visible, training=False):
        """softmax(q kᵀ / sqrt(head_dim)) v over the keys `visible` [T, S] lets each query see:
        [batch, T, d_model]. Grouped heads: the queries of a group are stacked along T, so one
        matmul per key/value head serves them all (no repeated keys)."""
        batch, length, groups = tf.shape(q)[0], tf.shape(q)[2], self.n_head // self.n_kv_head
        if groups > 1:
            q = tf.reshape(q, (batch, self.n_kv_head, groups * length, self.head_dim))
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(self.head_dim))
        if groups > 1:
            scores = tf.reshape(scores, (batch, self.n_kv_head, groups, length, -1))
        # Softmax in float32 even under a bfloat16 policy: the row sums need the precision.
        scores = tf.where(visible, tf.cast(scores, tf.float32), -1e9)
        weights = self.attn_drop(tf.cast(tf.nn.softmax(scores), v.dtype), training=training)
        if groups > 1:
            weights = tf.reshape(weights, (batch, self.n_kv_head, groups * length, -1))
        y = tf.reshape(tf.matmul(weights, v), (batch, self.n_head, length, self.head_dim))
        y = tf.reshape(tf.transpose(y, (0, 2, 1, 3)), (batch, length, self.n_head * self.head_dim))
        return self.resid_drop(self.out(y), training=training)

    def call(self, x, training=False):
        q, k, v = self.heads(x)
        length = tf.shape(x)[1]
        causal = tf.linalg.band_part(tf.ones((length, length), tf.bool), -1, 0)
        return self.attend(q, k, v, causal, training=training)

    def prefill(self, x, size: int):
        """`call` (inference) on a prompt x [batch, T, d_model] from position 0, and its keys and
        values in a cache of `size` positions ([batch, n_kv_head, size, head_dim], zeros after T)."""
        q, k, v = self.heads(x)
        length = tf.shape(x)[1]
        y = self.attend(q, k, v, tf.linalg.band_part(tf.ones((length, length), tf.bool), -1, 0))
        pad = [[0, 0], [0, 0], [0, size - length], [0, 0]]
        return y, tf.pad(k, pad), tf.pad(v, pad)

    def step(self, x, position, k_cache, v_cache):
        """One new position x [batch, 1, d_model] at `position` (a scalar tensor): its keys and values
        written into the caches, its query attending to cache entries 0..position."""
        q, k, v = self.heads(x, start=position)
        batch = tf.shape(x)[0]
        rows = tf.reshape(tf.range(batch * self.n_kv_head), (batch, self.n_kv_head))
        where = tf.stack([rows // self.n_kv_head, rows % self.n_kv_head, tf.fill(tf.shape(rows), position)], -1)
        k_cache = tf.tensor_scatter_nd_update(k_cache, where, k[:, :, 0])
        v_cache = tf.tensor_scatter_nd_update(v_cache, where, v[:, :, 0])
        visible = (tf.range(tf.shape(k_cache)[2]) <= position)[None, :]
        return self.attend(q, k_cache, v_cache, visible), k_cache, v_cache

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "d_model": self.d_model, "n_head": self.n_head, "dropout": self.dropout,
            "init_scale": self.init_scale, "out_scale": self.out_scale, "n_kv_head": self.n_kv_head,
            "bias": self.bias, "qk_norm": self.qk_norm, "rope_length": self.rope_length,
            "head_dim": self.head_dim, "rope_theta": self.rope_theta,
        }


class Block(keras.layers.Layer):
    """Pre-norm residual block: x + attn(norm(x)), then x + MLP(norm(x)).

    The MLP is GELU(x W1) W2 (GPT-2), or SwiGLU (Shazeer 2020): (silu(x Wg) * x Wu) W2 with
    `mlp_hidden` columns (None: `swiglu_hidden(d_ff)`), Wg and Wu fused into `fc` (one GEMM). GELU is
    exact (erf) unless `gelu_approximate` (tanh form, GPT-2's `gelu_new`). `norm_eps`: see make_norm."""

    def __init__(
        self, d_model: int, n_head: int, d_ff: int, dropout: float, init_scale: float, out_scale: float,
        n_kv_head: int | None = None, norm: str = "layernorm", mlp: str = "gelu", bias: bool = True,
        qk_norm: bool = False, rope_length: int = 0, head_dim: int | None = None, rope_theta: float = ROPE_BASE,
        norm_eps: float | None = None, gelu_approximate: bool = False, mlp_hidden: int | None = None, **kwargs,
    ):
        super().__init__(**kwargs)
        self.d_model, self.n_head, self.d_ff, self.dropout = d_model, n_head, d_ff, dropout
        self.init_scale, self.out_scale = init_scale, out_scale
        self.norm, self.mlp, self.bias = norm, mlp, bias
        self.norm_eps, self.gelu_approximate = norm_eps, gelu_approximate
        self.ln1 = make_norm(norm, bias, norm_eps)
        self.attn = CausalSelfAttention(
            d_model, n_head, dropout, init_scale, out_scale, n_kv_head=n_kv_head, bias=bias, qk_norm=qk_norm,
            rope_length=rope_length, head_dim=head_dim, rope_theta=rope_theta,
        )
        self.ln2 = make_norm(norm, bias, norm_eps)
        normal = keras.initializers.RandomNormal(0.0, init_scale)
        if mlp == "swiglu":
            self.hidden = swiglu_hidden(d_ff) if mlp_hidden is None else mlp_hidden
            self.fc = keras.layers.Dense(2 * self.hidden, use_bias=bias, kernel_initializer=normal)
        else:
            self.hidden = d_ff
            gelu = partial(keras.activations.gelu, approximate=True) if gelu_approximate else "gelu"
            self.fc = keras.layers.Dense(d_ff, activation=gelu, use_bias=bias, kernel_initializer=normal)
        self.proj = keras.layers.Dense(
            d_model, use_bias=bias, kernel_initializer=keras.initializers.RandomNormal(0.0, out_scale)
        )
        self.mlp_drop = Dropout(dropout)

    def feed_forward(self, x, training=False):
        h = self.fc(x)
        if self.mlp == "swiglu":
            gate, up = tf.split(h, 2, axis=-1)
            h = tf.nn.silu(gate) * up
        return self.mlp_drop(self.proj(h), training=training)

    def call(self, x, training=False):
        x = x + self.attn(self.ln1(x), training=training)
        return x + self.feed_forward(self.ln2(x), training=training)

    def prefill(self, x, size: int):
        """`call` (inference) on a prompt, with the attention's key/value cache (see its `prefill`)."""
        y, k, v = self.attn.prefill(self.ln1(x), size)
        x = x + y
        return x + self.feed_forward(self.ln2(x)), k, v

    def step(self, x, position, k_cache, v_cache):
        """`call` (inference) on one new position, reading and extending the key/value cache."""
        y, k_cache, v_cache = self.attn.step(self.ln1(x), position, k_cache, v_cache)
        x = x + y
        return x + self.feed_forward(self.ln2(x)), k_cache, v_cache

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "d_model": self.d_model, "n_head": self.n_head, "d_ff": self.d_ff, "dropout": self.dropout,
            "init_scale": self.init_scale, "out_scale": self.out_scale, "n_kv_head": self.attn.n_kv_head,
            "norm": self.norm, "mlp": self.mlp, "bias": self.bias, "qk_norm": self.attn.qk_norm,
            "rope_length": self.attn.rope_length, "head_dim": self.attn.head_dim, "rope_theta": self.attn.rope_theta,
            "norm_eps": self.norm_eps, "gelu_approximate": self.gelu_approximate, "mlp_hidden": self.hidden,
        }
