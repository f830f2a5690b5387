"""What a model's per-token log-probabilities mean: loss, perplexity, bits per character, OOV.

Every figure lmbench reports comes from here. loss = nats / tokens (mean nats per token);
ppl = exp(loss); bpc = nats / ln 2 / characters of the raw text, so that a word-level and a
character-level model can be ranked on one axis; the OOV rate is the share of tokens the
vocabulary lacks (scored as its unknown token, which flatters a perplexity).

`evaluate(model, split)` is the one evaluator for every family: it sums -log p over a split, each
token scored exactly once, and checks that the model kept the contract (one finite log-probability
per token).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from lmbench.data.types import Split
from lmbench.errors import TrainingDiverged
from lmbench.models.base import LanguageModel
from lmbench.names import BPC, LOSS, PPL, TOKENS, TOKENS_PER_SEC, split_metric
from lmbench.progress import progress_bar


def perplexity(loss: float) -> float:
    """exp(loss), inf rather than OverflowError for a loss past float range (a diverging model)."""
    return math.exp(loss) if loss < 709.0 else math.inf


class Figures:
    """loss, ppl and bpc of a sum of nats over a number of tokens and characters (`_counts`)."""

    def _counts(self) -> tuple[float, int, int]:
        """(nats, tokens, characters)"""
        raise NotImplementedError

    @property
    def loss(self) -> float:
        nats, tokens, _ = self._counts()
        return nats / tokens if tokens else math.nan

    @property
    def ppl(self) -> float:
        return perplexity(self.loss) if self._counts()[1] else math.nan

    @property
    def bpc(self) -> float:
        nats, _, chars = self._counts()
        return nats / math.log(2) / chars if chars else math.nan


@dataclass(frozen=True)
class Totals(Figures):
    """Sums over one or more texts; `a + b` is the figures of both together."""

    nats: float = 0.0
    tokens: int = 0
    chars: int = 0
    oov: int = 0  # tokens the vocabulary lacks

    def _counts(self) -> tuple[float, int, int]:
        return self.nats, self.tokens, self.chars

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.nats + other.nats, self.tokens + other.tokens, self.chars + other.chars, self.oov + other.oov
        )

    @property
    def oov_rate(self) -> float:
        return self.oov / self.tokens if self.tokens else 0.0

    def figures(self) -> dict[str, float]:
        return {"loss": self.loss, "ppl": self.ppl, "bpc": self.bpc, "tokens": self.tokens, "oov_rate": self.oov_rate}


@dataclass(frozen=True)
class EvalResult(Figures):
    """One split scored by `evaluate`."""

    split: str
    nats: float
    tokens: int
    chars: int
    seconds: float

    def _counts(self) -> tuple[float, int, int]:
        return self.nats, self.tokens, self.chars

    def metrics(self, prefix: str | None = None, *, with_speed: bool = True) -> dict[str, float]:
        """`<prefix>/loss`, `/ppl`, `/bpc` (prefix: the split's name), and unless not `with_speed`,
        `/tokens` and `/tokens_per_sec`."""
        p = prefix or self.split
        out = {split_metric(p, LOSS): self.loss, split_metric(p, PPL): self.ppl, split_metric(p, BPC): self.bpc}
        if with_speed:
            out[split_metric(p, TOKENS)] = self.tokens
            out[split_metric(p, TOKENS_PER_SEC)] = self.tokens / max(self.seconds, 1e-9)
        return out


@dataclass
class TextScore(Figures):
    """Log-probabilities of every token of a text, under a bundle's model."""

    tokens: list[str]
    log_probs: np.ndarray  # nats, one per token
    n_oov: int  # tokens not in the vocabulary (scored as the unknown token)
    n_chars: int

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def nats(self) -> float:
        return -float(np.sum(self.log_probs, dtype=np.float64))

    def _counts(self) -> tuple[float, int, int]:
        return self.nats, self.n_tokens, self.n_chars

    @property
    def oov_rate(self) -> float:
        return self.n_oov / self.n_tokens if self.n_tokens else 0.0

    def totals(self) -> Totals:
        return Totals(self.nats, self.n_tokens, self.n_chars, self.n_oov)


def evaluate(model: LanguageModel, split: Split, *, batch_size: int = 10, show_progress: bool = True) -> EvalResult:
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
