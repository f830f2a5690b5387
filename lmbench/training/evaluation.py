"""One evaluator for every family: sum -log p over a split, each token scored exactly once.

loss = nats / tokens; ppl = exp(loss); bpc = nats / ln 2 / characters of the split's raw text, so
that a word-level and a character-level model can be ranked on one axis.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from lmbench.data.types import Split
from lmbench.errors import TrainingDiverged
from lmbench.training.progress import progress_bar


def perplexity(loss: float) -> float:
    """exp(loss), inf rather than OverflowError for a loss past float range (a diverging model)."""
    return math.exp(loss) if loss < 709.0 else math.inf


@dataclass(frozen=True)
class EvalResult:
    split: str
    nats: float
    tokens: int
    chars: int
    seconds: float

    @property
    def loss(self) -> float:
        return self.nats / self.tokens

    @property
    def ppl(self) -> float:
        return perplexity(self.loss)

    @property
    def bpc(self) -> float:
        return self.nats / math.log(2) / self.chars

    def metrics(self, prefix: str | None = None) -> dict[str, float]:
        p = prefix or self.split
        return {
            f"{p}/loss": self.loss,
            f"{p}/ppl": self.ppl,
            f"{p}/bpc": self.bpc,
            f"{p}/tokens": self.tokens,
            f"{p}/tokens_per_sec": self.tokens / max(self.seconds, 1e-9),
        }


def evaluate(model, split: Split, *, batch_size: int = 10, show_progress: bool = True) -> EvalResult:
    """Score every token of `split` with `model` (any family) and sum the nats."""
    start = time.perf_counter()
    with progress_bar(total=len(split), desc=f"eval {split.name}", unit="tok", enabled=show_progress) as bar:
        seen = {"tokens": 0, "nats": 0.0}

        def update(n_tokens: int, nats: float | None = None) -> None:
            bar.update(n_tokens)
            if nats is not None:
                seen["tokens"] += n_tokens
                seen["nats"] += nats
                loss = seen["nats"] / max(seen["tokens"], 1)
                bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{perplexity(loss):.1f}", refresh=False)

        logp = model.score(split.ids, batch_size=batch_size, progress=update)
    seconds = time.perf_counter() - start
    if logp.shape != split.ids.shape:
        raise RuntimeError(
            f"{type(model).__name__}.score returned {logp.shape[0]} log-probabilities for "
            f"{len(split)} tokens of {split.name}: the contract is one per token"
        )
    nats = -float(np.sum(logp, dtype=np.float64))
    if not math.isfinite(nats):
        bad = int(np.flatnonzero(~np.isfinite(logp))[0])
        raise TrainingDiverged(
            f"{split.name}: the model gave a non-finite log-probability at token {bad} "
            "(probability 0 or NaN); its perplexity is undefined",
            step=-1,
        )
    return EvalResult(split.name, nats, len(split), split.n_chars, seconds)
