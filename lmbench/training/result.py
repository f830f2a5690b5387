"""What fitting a model gives back, whichever loop fitted it; and how a validation observer stops it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lmbench.scoring import EvalResult


@dataclass
class FitResult:
    steps: int = 0
    epochs: int = 0
    train_seconds: float = 0.0
    train_tokens: int = 0
    best_valid: EvalResult | None = None
    history: list[EvalResult] = field(default_factory=list)
    stopped_early: bool = False
    steps_per_epoch: int = 0  # a network's windows per epoch (0: a counting model)
    # What ended training: max_epochs | max_steps | max_tokens | max_time | early_stopping (a
    # network), or one_pass (a counting model)
    stop_reason: str = ""

    @property
    def tokens_per_sec(self) -> float:
        return self.train_tokens / max(self.train_seconds, 1e-9)

    def how_long(self) -> str:
        """What was trained, in words: "counted", "2 epochs (1,326 steps)", "30% of epoch 1 (400 steps)"."""
        if not self.steps and self.stop_reason == "max_steps":
            return "not trained (trainer.max_steps=0)"
        if not self.steps or not self.steps_per_epoch:
            return "counted"
        full, rest = divmod(self.steps, self.steps_per_epoch)
        epochs = f"{full} epoch{'s' if full != 1 else ''}" if full else ""
        part = f"{rest / self.steps_per_epoch:.0%} of epoch {full + 1}" if rest else ""
        return f"{' + '.join(p for p in (epochs, part) if p)} ({self.steps:,} steps)"


# Called with (global step, the validation just scored) after every validation of a network (each
# periodic one of trainer.validate_every_n_steps and each epoch's): None to go on, or the reason to
# stop training there. A hyperparameter search's pruner is one (lmbench.search); the trainer knows
# only this signature.
ValidationObserver = Callable[[int, EvalResult], "str | None"]


class Idle(Exception):  # not an error: this process has nothing to do
    """A worker other than the chief, for a counting model: the chief counts alone
    (training/distributed.py); `run` ends it with status 0."""


class TrainingStopped(Exception):
    """A validation observer stopped training: not an error, the run ends KILLED with `reason`,
    keeping what it logged."""

    def __init__(self, reason: str, step: int, train_tokens: int):
        super().__init__(reason)
        self.reason, self.step, self.train_tokens = reason, step, train_tokens
