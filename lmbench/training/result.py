"""What fitting a model gives back, whichever loop fitted it."""

from __future__ import annotations

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

    @property
    def tokens_per_sec(self) -> float:
        return self.train_tokens / max(self.train_seconds, 1e-9)
