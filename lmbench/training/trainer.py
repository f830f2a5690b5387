"""The common trainer.

Counting models (`fit(ids)`) are estimated in one pass, then `tune(valid ids)` if they have it (the
interpolated family's weights); neural models are trained by truncated BPTT over `batch_size`
parallel streams whose hidden state is carried from window to window. All are then validated and
tested by the same evaluator on the same token ids.

A neural run can be killed at any moment and continued: `TrainState` plus `checkpoints/last`
(see checkpoints.py) record the exact data position, weights, optimizer and stream states.
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
from lmbench.models.neural import WEIGHTS_FILE, NeuralLM, token_nll
from lmbench.tracking import Tracker
from lmbench.training import checkpoints
from lmbench.training.checkpoints import TrainState
from lmbench.training.evaluation import EvalResult, evaluate, perplexity
from lmbench.training.progress import progress_bar

SCHEDULES = ("constant", "plateau", "cosine")


@dataclass
class FitResult:
    steps: int = 0
    epochs: int = 0
    train_seconds: float = 0.0
    train_tokens: int = 0
    best_valid: EvalResult | None = None
    history: list[EvalResult] = field(default_factory=list)
    stopped_early: bool = False

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


def make_train_step(model: NeuralLM, optimizer, jit_compile: bool, l1: float = 0.0, l2: float = 0.0):
    """One compiled optimizer step on a window; returns the data loss (mean nats/token) and the
    stream states to carry into the next window. L1/L2 apply to weight matrices only."""
    penalised = [v for v in model.trainable_variables if len(v.shape) >= 2] if (l1 or l2) else []

    # One trace per window shape (the full window, and the epoch's shorter last one): static shapes
    # let recurrent layers unroll their loop (models/recurrent.py).
    @tf.function(jit_compile=jit_compile)
    def step(x, y, states):
        with tf.GradientTape() as tape:
            logits, states = model(x, states=states, training=True)
            loss = tf.reduce_mean(token_nll(y, logits))
            total = loss + tf.add_n(model.losses) if model.losses else loss
            for v in penalised:
                w = tf.cast(v, tf.float32)
                total += l1 * tf.reduce_sum(tf.abs(w)) + l2 * tf.reduce_sum(tf.square(w))
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, states

    return step


def schedule_factor(cfg: TrainerConfig, step: int, total: int) -> float:
    """Multiplier of the learning rate at optimizer step `step` (1-based) of `total`."""
    factor = 1.0
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        factor = step / cfg.warmup_steps
    elif cfg.lr_schedule == "cosine":
        span = max(total - cfg.warmup_steps, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        factor = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


class Trainer:
    def __init__(self, cfg: TrainerConfig, optimizer_cfg, tracker: Tracker | None, checkpoint_dir: Path):
        self.cfg = cfg
        self.optimizer_cfg = optimizer_cfg
        self.tracker = tracker
        self.checkpoint_dir = Path(checkpoint_dir)
        self.optimizer = None  # built by check(), so a bad optimizer config fails before tracking
        self._float32_twin = None  # see _scorer
        self._checked = None  # the model check() last passed for

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last"

    def check(self, model, data: CorpusData) -> None:
        """Refuse an impossible set-up before anything is trained or logged."""
        cfg = self.cfg
        if cfg.max_epochs < 1:
            raise ConfigError(f"trainer.max_epochs must be >= 1, got {cfg.max_epochs}")
        for key in ("max_steps", "checkpoint_every_n_steps", "early_stopping_patience"):
            value = getattr(cfg, key)
            if value is not None and value < 1:
                raise ConfigError(f"trainer.{key} must be >= 1 or null, got {value}")
        if cfg.eval_batch_size < 1:
            raise ConfigError(f"trainer.eval_batch_size must be >= 1, got {cfg.eval_batch_size}")
        if cfg.lr_schedule not in SCHEDULES:
            raise ConfigError(f"trainer.lr_schedule={cfg.lr_schedule!r}; valid: {', '.join(SCHEDULES)}")
        if cfg.warmup_steps < 0 or not 0.0 <= cfg.min_lr_ratio <= 1.0 or cfg.lr_decay_factor <= 0:
            raise ConfigError("trainer.warmup_steps must be >= 0, min_lr_ratio in [0, 1], lr_decay_factor > 0")
        if cfg.l1 < 0 or cfg.l2 < 0:
            raise ConfigError("trainer.l1 and trainer.l2 must be >= 0")
        if isinstance(model, NeuralLM):
            as_streams(data.train.ids, cfg.batch_size, cfg.bptt)
            context = getattr(model, "context", None)  # attention models see at most this many tokens
            if context is not None and cfg.bptt > context:
                raise ConfigError(
                    f"trainer.bptt={cfg.bptt} exceeds model.context={context}: training windows must "
                    "fit the model's context; lower trainer.bptt or raise model.context"
                )
            self.optimizer = build_optimizer(self.optimizer_cfg, cfg.clip_norm)
        if cfg.export_arpa and not hasattr(model, "to_arpa"):
            raise ConfigError(
                f"trainer.export_arpa=true, but a {getattr(model, 'family', type(model).__name__)} "
                "model has no ARPA form; only n-gram models can be exported"
            )
        self._checked = model

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, model, data: CorpusData, state: TrainState | None = None, resumed: bool = False) -> FitResult:
        """Train `model` from `state`; with `resumed`, first restore checkpoints/last into it.
        Checks the set-up first unless `check` already passed for this model (run() checks before
        it starts tracking)."""
        if self._checked is not model:
            self.check(model, data)
        if isinstance(model, NeuralLM):
            return self._fit_neural(model, data, state or TrainState(), resumed)
        return self._fit_counting(model, data)

    def _fit_counting(self, model, data: CorpusData) -> FitResult:
        result = FitResult(epochs=1)
        start = time.perf_counter()
        with progress_bar(len(data.train), "count train", "tok", self.cfg.progress) as bar:
            stats = model.fit(data.train.ids, progress=bar.update)
        if hasattr(model, "tune"):  # fitted on the validation split, e.g. interpolation weights
            with progress_bar(len(data.valid), "tune valid", "tok", self.cfg.progress) as bar:
                stats = {**stats, **model.tune(data.valid.ids, batch_size=self.cfg.eval_batch_size, progress=bar.update)}
        result.train_seconds = time.perf_counter() - start
        result.train_tokens = len(data.train)
        self.tracker.log_metrics(stats)
        result.best_valid = self._validate(model, data, epoch=1, result=result)
        return result

    def _fit_neural(self, model: NeuralLM, data: CorpusData, state: TrainState, resumed: bool) -> FitResult:
        cfg, tracker, optimizer = self.cfg, self.tracker, self.optimizer
        streams = as_streams(data.train.ids, cfg.batch_size, cfg.bptt)
        per_epoch = n_windows(streams.shape[1], cfg.bptt)
        total = per_epoch * cfg.max_epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        model.build_for_inference()
        optimizer.build(model.trainable_variables)
        step_fn = make_train_step(model, optimizer, cfg.jit_compile, cfg.l1, cfg.l2)
        dataset = bptt_dataset(streams, cfg.bptt)
        per_step = cfg.warmup_steps > 0 or cfg.lr_schedule == "cosine"

        stream_states = model.initial_state(cfg.batch_size)
        if resumed:
            stream_states = checkpoints.restore(self.last_checkpoint, model, optimizer, stream_states)
            optimizer.learning_rate.assign(state.learning_rate)
        else:
            state.learning_rate = float(optimizer.learning_rate)
        result = FitResult(steps=state.global_step, train_seconds=state.train_seconds, train_tokens=state.train_tokens)
        best_path = self.checkpoint_dir / "best"
        if state.best_valid_loss is not None:
            result.best_valid = self._evaluate_best(model, data, best_path, state)

        while state.epoch <= cfg.max_epochs and not state.finished_training:
            epoch = state.epoch
            if state.step_in_epoch == 0:
                stream_states = model.initial_state(cfg.batch_size)
            n = min(per_epoch, total - state.global_step + state.step_in_epoch)
            window_start = time.perf_counter()
            with progress_bar(n, f"epoch {epoch}", "step", cfg.progress) as bar:
                bar.update(state.step_in_epoch)
                for x, y in dataset.skip(state.step_in_epoch).take(n - state.step_in_epoch):
                    step = state.global_step + 1
                    if per_step:
                        optimizer.learning_rate.assign(state.learning_rate * schedule_factor(cfg, step, total))
                    t0 = time.perf_counter()
                    loss, stream_states = step_fn(x, y, stream_states)
                    loss = float(loss)
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            f"training loss became {loss} at step {step} (epoch {epoch}); "
                            "lower optimizer.learning_rate or set trainer.clip_norm",
                            step=step,
                        )
                    tokens = int(np.prod(y.shape))
                    state.train_seconds += time.perf_counter() - t0
                    state.train_tokens += tokens
                    state.global_step, state.step_in_epoch = step, state.step_in_epoch + 1
                    state.window_loss += loss * tokens
                    state.window_tokens += tokens
                    if step % tracker.log_every_n_steps == 0 or step == total:
                        self._log_train_window(state, bar, time.perf_counter() - window_start, optimizer)
                        window_start = time.perf_counter()
                    if cfg.checkpoint_every_n_steps and step % cfg.checkpoint_every_n_steps == 0:
                        self._save(state, model, optimizer, stream_states)
                    bar.update(1)

            tracker.log_metrics({"train/lr": float(optimizer.learning_rate), "train/epoch": epoch}, step=epoch)
            valid = self._validate(model, data, epoch, result)
            stop = self._after_validation(valid, state, model, optimizer, best_path, result)
            state.epoch, state.step_in_epoch = epoch + 1, 0
            state.finished_training = stop or state.global_step >= total
            self._save(state, model, optimizer, stream_states)

        result.steps, result.epochs = state.global_step, min(state.epoch - 1, cfg.max_epochs)
        result.train_seconds, result.train_tokens = state.train_seconds, state.train_tokens
        if not result.history or result.history[-1] is not result.best_valid:
            model.load_weights(best_path / WEIGHTS_FILE)  # test with the best weights
        return result

    def _log_train_window(self, state: TrainState, bar, seconds: float, optimizer) -> None:
        mean = state.window_loss / state.window_tokens
        speed = state.window_tokens / max(seconds, 1e-9)
        self.tracker.log_metrics(
            {"train/loss": mean, "train/ppl": perplexity(mean), "train/tokens_per_sec": speed,
             "train/lr_step": float(optimizer.learning_rate)},
            step=state.global_step,
        )
        bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{perplexity(mean):.1f}", tok_s=f"{speed:.0f}")
        state.window_loss, state.window_tokens = 0.0, 0

    def _after_validation(self, valid, state, model, optimizer, best_path, result) -> bool:
        """Best checkpoint, plateau decay, early stopping. True when training should stop."""
        cfg = self.cfg
        state.valid_losses.append(valid.loss)
        if state.best_valid_loss is None or valid.loss < state.best_valid_loss - cfg.min_delta:
            state.best_valid_loss = valid.loss
            result.best_valid = valid
            model.save(best_path)
            state.stale_epochs = state.early_stop_count = 0
            return False
        state.stale_epochs += 1
        state.early_stop_count += 1
        if cfg.lr_schedule == "plateau" and state.stale_epochs > cfg.lr_decay_patience:
            state.learning_rate /= cfg.lr_decay_factor
            optimizer.learning_rate.assign(state.learning_rate)
            state.stale_epochs = 0
        if cfg.early_stopping_patience is not None and state.early_stop_count >= cfg.early_stopping_patience:
            result.stopped_early = True
            self.tracker.set_tags({"lmbench.stopped_early_at_epoch": str(state.epoch)})
            return True
        return False

    def _save(self, state: TrainState, model, optimizer, stream_states) -> None:
        state.run_id = self.tracker.run_id
        checkpoints.save(self.last_checkpoint, state, model, optimizer, stream_states)

    def _evaluate_best(self, model, data, best_path: Path, state: TrainState) -> EvalResult:
        """After a resume: the best checkpoint's validation result, recomputed (not re-logged)."""
        current = model.get_weights()
        model.load_weights(best_path / WEIGHTS_FILE)
        best = self._evaluate(model, data.valid)
        model.set_weights(current)
        return best

    def _validate(self, model, data: CorpusData, epoch: int, result: FitResult) -> EvalResult:
        valid = self._evaluate(model, data.valid)
        result.history.append(valid)
        self.tracker.log_metrics(valid.metrics(), step=epoch)
        return valid

    def test(self, model, data: CorpusData) -> EvalResult:
        return self._evaluate(model, data.test)

    def _evaluate(self, model, split) -> EvalResult:
        return evaluate(self._scorer(model), split, batch_size=self.cfg.eval_batch_size, show_progress=self.cfg.progress)

    def _scorer(self, model):
        """`model` itself, or for a network computing in bfloat16 (trainer.precision), a float32
        copy holding its current weights: figures do not depend on the training precision, and a
        reloaded bundle (always float32) reproduces them exactly."""
        if not isinstance(model, NeuralLM) or model.compute_dtype == "float32":
            return model
        if self._float32_twin is None:
            self._float32_twin = model.float32_copy()
        self._float32_twin.set_weights(model.get_weights())  # variables are float32 under mixed policies
        return self._float32_twin
