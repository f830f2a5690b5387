"""Training a network: truncated BPTT over `batch_size` parallel streams whose hidden state is
carried from window to window, validation after each epoch, plateau decay, early stopping, and a
resumable checkpoint (checkpoints.py) that records the exact data position, weights, optimizer and
stream states, so that a run killed at any moment continues where it stopped.

A step is one optimizer update: `trainer.accumulate_steps` consecutive windows (steps.make_update),
so every budget, schedule and cadence counts updates; checkpoints fall between updates only. With
`trainer.nt_asgd` the weights are averaged once validation stalls (averaging.py), and every
validation, the best checkpoint and the test see the average.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lmbench import names
from lmbench.config import TrainerConfig
from lmbench.data.batching import as_streams
from lmbench.data.types import CorpusData
from lmbench.models.neural import WEIGHTS_FILE, NeuralLM
from lmbench.progress import progress_bar
from lmbench.scoring import EvalResult, perplexity
from lmbench.tracking import Tracker
from lmbench.training import checkpoints, distributed
from lmbench.training.averaging import WeightAverage, should_switch
from lmbench.training.checkpoints import TrainState
from lmbench.training.divergence import DivergenceGuard
from lmbench.training.result import FitResult, TrainingStopped, ValidationObserver
from lmbench.training.steps import exclude_from_decay, make_update, schedule_factor
from lmbench.training.windows import WindowPlan


class NeuralLoop:
    """One network's training from a `TrainState`. `validate(model, data, epoch, result)` scores
    and logs the valid split; `evaluate(model, split)` scores without logging; `observer` sees every
    validation and may stop training (`TrainingStopped`)."""

    def __init__(
        self, model: NeuralLM, data: CorpusData, optimizer, cfg: TrainerConfig, tracker: Tracker,
        checkpoint_dir: Path, validate: Callable[..., EvalResult], evaluate: Callable[..., EvalResult],
        observer: ValidationObserver | None = None, seed: int = 0,
    ):
        self.model, self.data, self.optimizer, self.cfg, self.tracker = model, data, optimizer, cfg, tracker
        self.last, self.best = Path(checkpoint_dir) / "last", Path(checkpoint_dir) / "best"
        self.validate, self.evaluate, self.observer = validate, evaluate, observer
        self.streams = as_streams(data.train.ids, cfg.batch_size, cfg.bptt)
        self.plan = WindowPlan(self.streams.shape[1], cfg.bptt, cfg.accumulate_steps, cfg.variable_bptt, seed)
        self.per_epoch = self.plan.updates(1)  # optimizer updates (with variable_bptt: epoch 1's)
        self.total, self.budget = self._step_budget()
        self.per_step_lr = cfg.warmup_steps > 0 or cfg.lr_schedule == "cosine"
        self.guard = DivergenceGuard(len(data.vocab), cfg.divergence_grace_steps)
        self.validate_every = self._validation_interval()
        self._quarters_validated = 0  # max_time's quarters validated (_time_mark_passed)

    def _step_budget(self) -> tuple[int, str]:
        """The optimizer steps that max_epochs, max_steps and max_tokens allow, and which of them
        is the first reached (max_time is watched while training)."""
        cfg = self.cfg
        budgets = {}
        if cfg.max_steps is not None:
            budgets["max_steps"] = cfg.max_steps
        if cfg.max_tokens is not None:
            budgets["max_tokens"] = self.plan.updates_for_tokens(
                cfg.max_tokens, cfg.batch_size, min(budgets.values(), default=1 << 62)
            )
        budgets["max_epochs"] = self.plan.updates_in(cfg.max_epochs, min(budgets.values(), default=1 << 62))
        total = min(budgets.values())
        # On a tie the budget the user set says why: max_tokens, then max_steps, then max_epochs.
        reason = next(k for k in ("max_tokens", "max_steps", "max_epochs") if budgets.get(k) == total)
        return total, reason

    def _validation_interval(self) -> int | None:
        """trainer.validate_every_n_steps; unset, a run that ends inside its first epoch (max_steps)
        validates 4 times, so that it has a validation curve, not one point."""
        if self.cfg.validate_every_n_steps or self.total >= self.per_epoch:
            return self.cfg.validate_every_n_steps
        return max(1, -(-self.total // 4))

    def run(self, state: TrainState, resumed: bool) -> FitResult:
        """Train from `state` (after restoring checkpoints/last into the model when `resumed`)
        until max_epochs, max_steps or early stopping; the model ends with its best weights."""
        model, optimizer, cfg = self.model, self.optimizer, self.cfg
        with distributed.scope():  # several devices: mirrored variables (a no-op for one)
            model.build_for_inference()
            exclude_from_decay(optimizer, model)
            optimizer.build(model.trainable_variables)
        replicas = distributed.active()
        if replicas is None:
            self.update = make_update(model, optimizer, cfg)
        else:  # the same step, split over the replicas (distributed.py); one window an update
            step = distributed.train_step(replicas, model, optimizer, cfg.l1, cfg.l2, cfg.clip_norm)
            self.update = lambda windows, states: step(*windows[0], states)
        self.average = WeightAverage(model.trainable_variables)
        stream_states = model.initial_state(cfg.batch_size)
        if cfg.max_time is not None:
            self._quarters_validated = min(3, int(4 * state.train_seconds / cfg.max_time))
        if resumed:
            stream_states = checkpoints.restore(self.last, model, optimizer, stream_states)
            optimizer.learning_rate.assign(state.learning_rate)
            if state.averaging_from_step is not None:
                self.average.restore(checkpoints.read_arrays(self.last, "avg_"), state.averaged_updates)
        else:
            state.learning_rate = float(optimizer.learning_rate.numpy())
        result = FitResult(
            steps=state.global_step, train_seconds=state.train_seconds, train_tokens=state.train_tokens,
            steps_per_epoch=self.per_epoch,
        )
        if state.best_valid_loss is not None:
            result.best_valid = self._best_so_far()
        while state.epoch <= cfg.max_epochs and not state.finished_training:
            if state.step_in_epoch == 0:
                stream_states = model.initial_state(cfg.batch_size)
            stream_states = self._epoch(state, stream_states)
            self._end_epoch(state, stream_states, result)
        result.steps, result.epochs = state.global_step, min(state.epoch - 1, cfg.max_epochs)
        result.train_seconds, result.train_tokens = state.train_seconds, state.train_tokens
        result.stop_reason = state.stop_reason or self.budget
        if not result.history or result.history[-1] is not result.best_valid or self.average.active:
            model.load_weights(checkpoints.whole(self.best, WEIGHTS_FILE) / WEIGHTS_FILE)  # test with the best weights
        return result

    def _epoch(self, state: TrainState, stream_states):
        """The rest of epoch `state.epoch` (from its `step_in_epoch`-th window), or up to max_steps."""
        cfg, k = self.cfg, self.cfg.accumulate_steps
        per_epoch = self.plan.windows(state.epoch)
        n = min(per_epoch, (self.total - state.global_step) * k + state.step_in_epoch)  # windows
        window_start = time.perf_counter()
        # A run that max_steps stops inside an epoch says how much of the epoch it trains.
        share = n / per_epoch
        what = f"epoch {state.epoch}" if share == 1 else f"{share:.0%} of epoch {state.epoch}"
        with progress_bar(n, what, "step" if k == 1 else "window", cfg.progress) as bar:
            bar.update(state.step_in_epoch)
            windows = self.plan.iterate(self.streams, state.epoch, state.step_in_epoch, n)
            while group := [w for _, w in zip(range(k), windows)]:  # the windows of one update
                stream_states = self._step(state, group, stream_states)
                step = state.global_step
                if step % self.tracker.log_every_n_steps == 0 or step == self.total:
                    self._log_window(state, bar, time.perf_counter() - window_start)
                    window_start = time.perf_counter()
                if self.validate_every and step % self.validate_every == 0 and step < self.total:
                    if state.step_in_epoch < n:  # the epoch's end validates anyway
                        self._validate_step(state)
                elif self._time_mark_passed(state) and state.step_in_epoch < n:
                    self._validate_step(state)
                if cfg.checkpoint_every_n_steps and step % cfg.checkpoint_every_n_steps == 0:
                    self._save(state, stream_states)
                bar.update(len(group))
                if cfg.max_time is not None and state.train_seconds >= cfg.max_time:
                    state.stop_reason = "max_time"  # _end_epoch validates, saves and ends training
                    break
        return stream_states

    def _validate_step(self, state: TrainState) -> None:
        """A validation inside an epoch (valid_step/*), of the average under NT-ASGD."""
        with self.average.applied():
            valid = self.evaluate(self.model, self.data.valid)
        self._log_valid_step(valid, state.global_step)
        self._observe(state, valid)

    def _time_mark_passed(self, state: TrainState) -> bool:
        """Under trainer.max_time, without validate_every_n_steps: True once training time passes
        each quarter of the budget, so that a run stopped by the clock has a validation curve."""
        cfg = self.cfg
        if cfg.max_time is None or self.validate_every:
            return False
        quarter = int(4 * state.train_seconds / cfg.max_time)
        if quarter > self._quarters_validated and quarter < 4:
            self._quarters_validated = quarter
            return True
        return False

    def _step(self, state: TrainState, windows: list, stream_states):
        """One optimizer update on consecutive `windows` [(x, y), ...]; a diverging loss raises
        `TrainingDiverged` (after the steps before it are logged: what a run logged is never lost)."""
        step = state.global_step + 1
        if self.per_step_lr or self.cfg.variable_bptt:
            factor = schedule_factor(self.cfg, step, self.total, self._time_fraction(state))
            if self.cfg.variable_bptt:  # Merity et al.: lr x seq_len / bptt (the update's mean length)
                factor *= np.mean([x.shape[1] for x, _ in windows]) / self.cfg.bptt
            self.optimizer.learning_rate.assign(state.learning_rate * factor)
        t0 = time.perf_counter()
        loss, stream_states = self.update(windows, stream_states)
        loss = float(loss)
        self.guard.check(step, loss, state.epoch)
        self.average.update()
        tokens = sum(int(np.prod(y.shape)) for _, y in windows)
        state.train_seconds += time.perf_counter() - t0
        state.train_tokens += tokens
        state.global_step, state.step_in_epoch = step, state.step_in_epoch + len(windows)
        state.window_loss += loss * tokens
        state.window_tokens += tokens
        return stream_states

    def _time_fraction(self, state: TrainState) -> float:
        """The share of trainer.max_time used (0 without one): a cosine schedule follows it when it
        runs ahead of the share of steps, so that a time budget ends on the schedule's floor."""
        return state.train_seconds / self.cfg.max_time if self.cfg.max_time else 0.0

    def _log_window(self, state: TrainState, bar, seconds: float) -> None:
        mean = state.window_loss / state.window_tokens
        speed = state.window_tokens / max(seconds, 1e-9)
        self.tracker.log_metrics(
            {names.TRAIN_LOSS: mean, names.TRAIN_PPL: perplexity(mean), names.TRAIN_WINDOW_TOKENS_PER_SEC: speed,
             names.TRAIN_LR_STEP: float(self.optimizer.learning_rate.numpy())},
            step=state.global_step,
        )
        bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{perplexity(mean):.1f}", tok_s=f"{speed:.0f}")
        state.window_loss, state.window_tokens = 0.0, 0

    def _end_epoch(self, state: TrainState, stream_states, result: FitResult) -> None:
        """Validation, the best checkpoint, decay or stop, and the resumable checkpoint."""
        epoch = state.epoch
        lr = float(self.optimizer.learning_rate.numpy())
        if self.cfg.variable_bptt:  # the scheduled rate, not the last window's length-scaled one
            factor = schedule_factor(self.cfg, state.global_step, self.total, self._time_fraction(state))
            lr = state.learning_rate * factor
        self.tracker.log_metrics({names.TRAIN_LR: lr, names.TRAIN_EPOCH: epoch}, step=epoch)
        with self.average.applied():  # NT-ASGD: the average is validated and kept as the best
            valid = self.validate(self.model, self.data, epoch, result)
            if self.validate_every:
                self._log_valid_step(valid, state.global_step)
            self._observe(state, valid, last=state.global_step >= self.total or state.stop_reason == "max_time")
            stop = self._after_validation(valid, state, result)
        if self.cfg.nt_asgd and not self.average.active and should_switch(state.valid_losses, self.cfg.nonmono):
            self.average.start()
            state.averaging_from_step = state.global_step
            self.tracker.set_tags({names.ASGD_FROM_STEP: str(state.global_step)})
        state.epoch, state.step_in_epoch = epoch + 1, 0
        state.finished_training = stop or state.global_step >= self.total or state.stop_reason == "max_time"
        self._save(state, stream_states)

    def _log_valid_step(self, valid: EvalResult, step: int) -> None:
        """A validation as a point of the per-step curve (`valid_step/*`); epochs log `valid/*`."""
        self.tracker.log_metrics(valid.metrics(names.VALID_STEP, with_speed=False), step=step)

    def _observe(self, state: TrainState, valid: EvalResult, last: bool = False) -> None:
        """Show the observer (a search's pruner) the validation; raise `TrainingStopped` if it says
        stop, unless this is the `last` validation: training is over, stopping there saves nothing."""
        reason = self.observer(state.global_step, valid) if self.observer is not None else None
        if reason is not None and not last:
            raise TrainingStopped(reason, state.global_step, state.train_tokens)

    def _after_validation(self, valid: EvalResult, state: TrainState, result: FitResult) -> bool:
        """Best checkpoint, plateau decay, early stopping. True when training should stop."""
        cfg = self.cfg
        state.valid_losses.append(valid.loss)
        if state.best_valid_loss is None or valid.loss < state.best_valid_loss - cfg.min_delta:
            state.best_valid_loss = valid.loss
            result.best_valid = valid
            checkpoints.save_model(self.best, self.model)
            state.stale_epochs = state.early_stop_count = 0
            return False
        state.stale_epochs += 1
        state.early_stop_count += 1
        if cfg.lr_schedule == "plateau" and state.stale_epochs > cfg.lr_decay_patience:
            state.learning_rate /= cfg.lr_decay_factor
            self.optimizer.learning_rate.assign(state.learning_rate)
            state.stale_epochs = 0
        if cfg.early_stopping_patience is not None and state.early_stop_count >= cfg.early_stopping_patience:
            result.stopped_early = True
            state.stop_reason = "early_stopping"
            self.tracker.set_tags({names.STOPPED_EARLY_AT_EPOCH: str(state.epoch)})
            return True
        return False

    def _save(self, state: TrainState, stream_states) -> None:
        state.run_id = self.tracker.run_id
        state.averaged_updates = self.average.count
        checkpoints.save(self.last, state, self.model, self.optimizer, stream_states, self.average.arrays())

    def _best_so_far(self) -> EvalResult:
        """After a resume: the best checkpoint's validation result, recomputed (not re-logged)."""
        current = self.model.get_weights()
        self.model.load_weights(checkpoints.whole(self.best, WEIGHTS_FILE) / WEIGHTS_FILE)
        best = self.evaluate(self.model, self.data.valid)
        self.model.set_weights(current)
        return best
