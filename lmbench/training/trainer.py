"""The common trainer.

Counting models (`fit(ids)`) are estimated in one pass; neural models are trained by truncated BPTT
over `batch_size` parallel streams whose hidden state is carried from window to window. Both are
then validated and tested by the same evaluator on the same token ids.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from hydra.utils import instantiate

from lmbench.config import TrainerConfig
from lmbench.data.batching import as_streams, n_windows
from lmbench.data.types import CorpusData
from lmbench.errors import ConfigError, TrainingDiverged
from lmbench.models.neural import WEIGHTS_FILE, NeuralLM
from lmbench.tracking import Tracker
from lmbench.training.evaluation import EvalResult, evaluate, perplexity
from lmbench.training.progress import progress_bar


@dataclass
class FitResult:
    steps: int = 0
    epochs: int = 0
    train_seconds: float = 0.0
    train_tokens: int = 0
    best_valid: EvalResult | None = None
    history: list[EvalResult] = field(default_factory=list)

    @property
    def tokens_per_sec(self) -> float:
        return self.train_tokens / max(self.train_seconds, 1e-9)


def build_optimizer(optimizer_cfg, clip_norm: float | None):
    """The Keras optimizer named by the `optimizer` group, clipping by global norm if asked."""
    overrides = {}
    if isinstance(optimizer_cfg.get("learning_rate"), int):  # `learning_rate=35` on the command line
        overrides["learning_rate"] = float(optimizer_cfg.learning_rate)
    try:
        return instantiate(optimizer_cfg, global_clipnorm=clip_norm, **overrides)
    except Exception as ex:  # Keras raises TypeError/ValueError for bad arguments
        raise ConfigError(f"optimizer config cannot be built: {ex}") from None


def bptt_dataset(streams: np.ndarray, bptt: int) -> tf.data.Dataset:
    """(inputs, targets) windows over [batch, L] streams; the last window may be shorter."""
    data = tf.constant(streams)
    length = streams.shape[1]

    def window(start):
        size = tf.minimum(tf.constant(bptt, tf.int64), length - 1 - start)
        return data[:, start : start + size], data[:, start + 1 : start + 1 + size]

    starts = tf.data.Dataset.range(0, length - 1, bptt)
    return starts.map(window, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def make_train_step(model: NeuralLM, optimizer, jit_compile: bool):
    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(x, y, states):
        with tf.GradientTape() as tape:
            logits, states = model(x, states=states, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))
            )
            total = loss + tf.add_n(model.losses) if model.losses else loss
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, states

    return step


class Trainer:
    def __init__(self, cfg: TrainerConfig, optimizer_cfg, tracker: Tracker, checkpoint_dir: Path):
        self.cfg = cfg
        self.optimizer_cfg = optimizer_cfg
        self.tracker = tracker
        self.checkpoint_dir = Path(checkpoint_dir)
        self.optimizer = None  # built by check(), so a bad optimizer config fails before tracking

    def check(self, model, data: CorpusData) -> None:
        """Refuse an impossible set-up before anything is trained or logged."""
        cfg = self.cfg
        if cfg.max_epochs < 1:
            raise ConfigError(f"trainer.max_epochs must be >= 1, got {cfg.max_epochs}")
        if cfg.max_steps is not None and cfg.max_steps < 1:
            raise ConfigError(f"trainer.max_steps must be >= 1 or null, got {cfg.max_steps}")
        if cfg.eval_batch_size < 1:
            raise ConfigError(f"trainer.eval_batch_size must be >= 1, got {cfg.eval_batch_size}")
        if isinstance(model, NeuralLM):
            as_streams(data.train.ids, cfg.batch_size, cfg.bptt)
            self.optimizer = build_optimizer(self.optimizer_cfg, cfg.clip_norm)
        if cfg.export_arpa and not hasattr(model, "to_arpa"):
            raise ConfigError(
                f"trainer.export_arpa=true, but a {getattr(model, 'family', type(model).__name__)} "
                "model has no ARPA form; only n-gram models can be exported"
            )

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, model, data: CorpusData) -> FitResult:
        self.check(model, data)
        if isinstance(model, NeuralLM):
            return self._fit_neural(model, data)
        return self._fit_counting(model, data)

    def _fit_counting(self, model, data: CorpusData) -> FitResult:
        result = FitResult(epochs=1)
        start = time.perf_counter()
        with progress_bar(len(data.train), "count train", "tok", self.cfg.progress) as bar:
            stats = model.fit(data.train.ids, progress=bar.update)
        result.train_seconds = time.perf_counter() - start
        result.train_tokens = len(data.train)
        self.tracker.log_metrics(stats)
        result.best_valid = self._validate(model, data, epoch=1, result=result)
        return result

    def _fit_neural(self, model: NeuralLM, data: CorpusData) -> FitResult:
        cfg = self.cfg
        streams = as_streams(data.train.ids, cfg.batch_size, cfg.bptt)
        per_epoch = n_windows(streams.shape[1], cfg.bptt)
        total = per_epoch * cfg.max_epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        optimizer = self.optimizer
        model.build_for_inference()
        optimizer.build(model.trainable_variables)
        step_fn = make_train_step(model, optimizer, cfg.jit_compile)
        dataset = bptt_dataset(streams, cfg.bptt)

        result = FitResult()
        best_path = self.checkpoint_dir / "best"
        stale_epochs = 0
        window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
        for epoch in range(1, cfg.max_epochs + 1):
            states = model.initial_state(cfg.batch_size)
            n = min(per_epoch, total - result.steps)
            with progress_bar(n, f"epoch {epoch}", "step", cfg.progress) as bar:
                epoch_start = time.perf_counter()
                for x, y in dataset.take(n):
                    loss, states = step_fn(x, y, states)
                    loss = float(loss)
                    result.steps += 1
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            f"training loss became {loss} at step {result.steps} (epoch {epoch}); "
                            "lower optimizer.learning_rate or set trainer.clip_norm",
                            step=result.steps,
                        )
                    tokens = int(np.prod(y.shape))
                    result.train_tokens += tokens
                    window_loss += loss * tokens
                    window_tokens += tokens
                    if result.steps % self.tracker.log_every_n_steps == 0 or result.steps == total:
                        now = time.perf_counter()
                        mean = window_loss / window_tokens
                        speed = window_tokens / (now - window_start)
                        self.tracker.log_metrics(
                            {"train/loss": mean, "train/ppl": perplexity(mean), "train/tokens_per_sec": speed},
                            step=result.steps,
                        )
                        bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{perplexity(mean):.1f}", tok_s=f"{speed:.0f}")
                        window_loss, window_tokens, window_start = 0.0, 0, now
                    bar.update(1)
                result.train_seconds += time.perf_counter() - epoch_start
            result.epochs = epoch
            lr = float(optimizer.learning_rate)
            self.tracker.log_metrics({"train/lr": lr, "train/epoch": epoch}, step=epoch)
            valid = self._validate(model, data, epoch, result)
            if result.best_valid is None or valid.loss < result.best_valid.loss - cfg.min_delta:
                result.best_valid = valid
                model.save(best_path)
                stale_epochs = 0
            else:
                stale_epochs += 1
                if stale_epochs > cfg.lr_decay_patience:
                    optimizer.learning_rate.assign(lr / cfg.lr_decay_factor)
                    stale_epochs = 0
            if result.steps >= total:
                break
        if result.history[-1] is not result.best_valid:
            model.load_weights(best_path / WEIGHTS_FILE)
        return result

    def _validate(self, model, data: CorpusData, epoch: int, result: FitResult) -> EvalResult:
        valid = evaluate(model, data.valid, batch_size=self.cfg.eval_batch_size, show_progress=self.cfg.progress)
        result.history.append(valid)
        self.tracker.log_metrics(valid.metrics(), step=epoch)
        return valid

    def test(self, model, data: CorpusData) -> EvalResult:
        return evaluate(model, data.test, batch_size=self.cfg.eval_batch_size, show_progress=self.cfg.progress)
