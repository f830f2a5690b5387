"""The pieces of a neural training step: the optimizer, the BPTT windows, the compiled step, the
learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from hydra.utils import instantiate

from lmbench.config import TrainerConfig, check_optimizer_values
from lmbench.data.batching import n_windows
from lmbench.data.mapped import release
from lmbench.errors import ConfigError
from lmbench.models.neural import NeuralLM


def build_optimizer(optimizer_cfg):
    """The Keras optimizer named by the `optimizer` group. It does not clip: `make_train_step` does."""
    check_optimizer_values(optimizer_cfg)
    overrides = {}
    if isinstance(optimizer_cfg.get("learning_rate"), int):  # `learning_rate=35` on the command line
        overrides["learning_rate"] = float(optimizer_cfg.learning_rate)
    try:
        return instantiate(optimizer_cfg, **overrides)
    except Exception as ex:  # Keras raises TypeError/ValueError for bad arguments
        raise ConfigError(f"optimizer config cannot be built: {ex}") from None


def exclude_from_decay(optimizer, model: NeuralLM) -> None:
    """Decoupled weight decay (AdamW; any Keras optimizer given `weight_decay`) on the weight
    matrices only: not on the model's `no_decay_variables` (norms, biases, embeddings). Before
    `optimizer.build`, which fixes the exclusions."""
    if getattr(optimizer, "weight_decay", None):
        optimizer.exclude_from_weight_decay(var_list=model.no_decay_variables())


RELEASE_EVERY = 1024  # training windows between two hand-backs of the ids' pages they read


def bptt_windows(streams: np.ndarray, bptt: int, start: int = 0, stop: int | None = None):
    """(inputs, targets) int32 tensors of BPTT windows `start` .. `stop`-1 (None: the epoch's last)
    over [batch, L] `streams` (`batching.as_streams`); the last window of an epoch may be shorter.

    One window at a time from the NumPy streams (a view of the ids, memory-mapped from the cache):
    a tensor of the whole [batch, L] array -- `tf.data` over `tf.constant(streams)`, as this was --
    held a second copy of the training split, 4 bytes a token (285 MB at 71M tokens), and read every
    page of the map before the first step. Every RELEASE_EVERY windows the pages read so far are
    handed back (`mapped.release`), so an epoch does not leave the whole split resident either."""
    count = n_windows(streams.shape[1], bptt)
    bounds = np.minimum(np.arange(count + 1) * bptt, streams.shape[1] - 1)  # the last window: the rest
    yield from windows_between(streams, bounds, start, count if stop is None else stop)


def windows_between(streams: np.ndarray, bounds: np.ndarray, start: int, stop: int):
    """(inputs, targets) int32 tensors of windows `start` .. `stop`-1 of [batch, L] `streams`, window
    i predicting positions bounds[i] + 1 .. bounds[i + 1] from the ones before: copies of that window
    only, and every RELEASE_EVERY windows the pages read so far handed back (`mapped.release`). Fixed
    windows (`bptt_windows`) and variable-length ones (`windows.WindowPlan`) both come from here."""
    for index in range(start, stop):
        a, b = int(bounds[index]), int(bounds[index + 1])
        yield (tf.constant(np.array(streams[:, a:b], dtype=np.int32)),
               tf.constant(np.array(streams[:, a + 1 : b + 1], dtype=np.int32)))
        if (index + 1) % RELEASE_EVERY == 0:
            read = slice(int(bounds[index + 1 - RELEASE_EVERY]), b)
            for row in streams:
                release(row[read])


def window_losses(model: NeuralLM, x, y, states, penalised: list, l1: float, l2: float):
    """(data loss: mean nats/token, the loss to differentiate: plus the model's own `losses` and the
    L1/L2 penalties on `penalised`, the states after the window) of one training window; called
    inside a gradient tape."""
    hidden, states = model(x, states=states, training=True)
    loss = tf.reduce_mean(model.output_head.token_nll(hidden, y))
    total = loss + tf.add_n(model.losses) if model.losses else loss
    for v in penalised:
        w = tf.cast(v, tf.float32)
        total += l1 * tf.reduce_sum(tf.abs(w)) + l2 * tf.reduce_sum(tf.square(w))
    return loss, total, states


def make_train_step(
    model: NeuralLM, optimizer, jit_compile: bool, l1: float = 0.0, l2: float = 0.0, clip_norm: float | None = None
):
    """One compiled optimizer step on a window; returns the data loss (mean nats/token) and the
    stream states to carry into the next window. L1/L2 apply to weight matrices only; the gradients
    are clipped to a global norm of `clip_norm` (None: not clipped).

    Clipping is `tf.clip_by_global_norm`, not the Keras optimizer's `global_clipnorm`: Keras squares
    and scales every gradient as a dense tensor, which turns the embedding's sparse gradient (the
    rows of one window) into a [|V|, d] one and its update into a whole-table write -- 420 ms of
    each step at |V| = 250,000 x 200, against 1.6 ms clipped here (2026-12-01)."""
    penalised = [v for v in model.trainable_variables if len(v.shape) >= 2] if (l1 or l2) else []

    # One trace per window shape (the full window, and the epoch's shorter last one): static shapes
    # let recurrent layers unroll their loop (models/recurrent.py).
    @tf.function(jit_compile=jit_compile)
    def step(x, y, states):
        with tf.GradientTape() as tape:
            loss, total, states = window_losses(model, x, y, states, penalised, l1, l2)
        grads = tape.gradient(total, model.trainable_variables)
        if clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, clip_norm)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, states

    return step


def make_update(model: NeuralLM, optimizer, cfg: TrainerConfig):
    """One optimizer update over a list of consecutive windows [(x, y), ...] (at most
    `trainer.accumulate_steps`): `update(windows, states) -> (mean data loss over their tokens, states)`,
    each window's states carried into the next. With accumulate_steps=1 it is `make_train_step`'s
    step, unchanged."""
    if cfg.accumulate_steps == 1:
        step = make_train_step(model, optimizer, cfg.jit_compile, cfg.l1, cfg.l2, cfg.clip_norm)

        def single(windows, states):
            [(x, y)] = windows
            return step(x, y, states)

        return single
    return AccumulatingUpdate(model, optimizer, cfg.jit_compile, cfg.l1, cfg.l2, cfg.clip_norm)


class AccumulatingUpdate:
    """Gradient accumulation: every window's gradient (of its mean loss plus the penalties) is added,
    weighted by its share of the update's tokens, into float32 sums beside the weights; then the
    sums are clipped to `clip_norm` and applied once, and zeroed. Token weights make k windows of a
    stateless model the same update as one batch of their rows (an epoch's shorter last window
    counts for its tokens); clipping the sum, not each window, keeps that true under clipping.

    The embedding's gradient lands in a dense [|V|, d] sum (a scatter-add per window), so its update
    writes the whole table: free on PTB, costly at |V| in the hundreds of thousands."""

    def __init__(self, model: NeuralLM, optimizer, jit_compile: bool, l1: float, l2: float, clip_norm: float | None):
        variables = model.trainable_variables
        self.sums = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in variables]
        penalised = [v for v in variables if len(v.shape) >= 2] if (l1 or l2) else []

        @tf.function(jit_compile=jit_compile)
        def add(x, y, states, weight):
            with tf.GradientTape() as tape:
                loss, total, states = window_losses(model, x, y, states, penalised, l1, l2)
            for total_grad, grad in zip(self.sums, tape.gradient(total, variables)):
                if isinstance(grad, tf.IndexedSlices):  # the embedding's rows of this window
                    total_grad.scatter_add(tf.IndexedSlices(tf.cast(grad.values, tf.float32) * weight, grad.indices))
                elif grad is not None:
                    total_grad.assign_add(tf.cast(grad, tf.float32) * weight)
            return loss, states

        @tf.function
        def apply():
            grads = [tf.identity(total) for total in self.sums]
            if clip_norm is not None:
                grads, _ = tf.clip_by_global_norm(grads, clip_norm)
            optimizer.apply_gradients(zip(grads, variables))
            for total in self.sums:
                total.assign(tf.zeros_like(total))

        self.add, self.apply = add, apply

    def __call__(self, windows, states):
        tokens = [int(np.prod(y.shape)) for _, y in windows]
        loss = 0.0
        for (x, y), n in zip(windows, tokens):
            window_loss, states = self.add(x, y, states, tf.constant(n / sum(tokens), tf.float32))
            loss += float(window_loss) * n / sum(tokens)
        self.apply()
        return loss, states


def schedule_factor(cfg: TrainerConfig, step: int, total: int, time_fraction: float = 0.0) -> float:
    """Multiplier of the learning rate at optimizer step `step` (1-based) of `total`. Under a time
    budget, `time_fraction` is the share of trainer.max_time used: the cosine follows whichever of
    it and the share of steps is ahead."""
    factor = 1.0
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        factor = step / cfg.warmup_steps
    elif cfg.lr_schedule == "cosine":
        span = max(total - cfg.warmup_steps, 1)
        progress = min(max((step - cfg.warmup_steps) / span, time_fraction), 1.0)
        factor = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor
