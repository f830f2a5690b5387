"""What a model's per-token log-probabilities mean: loss, perplexity, bits per character, OOV.

Every figure lmbench reports comes from here. loss = nats / tokens (mean nats per token);
ppl = exp(loss); bpc = nats / ln 2 / characters of the raw text, so that a word-level and a
character-level model can be ranked on one axis; the OOV rate is the share of tokens the
vocabulary lacks (scored as its unknown token, which flatters a perplexity). In the units of the
raw text, whatever the tokenizer: word_ppl = exp(nats / words), words being the whitespace-separated
words plus one end of line per line (so it is ppl itself for a word tokenizer with eos), and
bits_per_byte = nats / ln 2 / UTF-8 bytes (lm-eval-harness's; bpc itself on ASCII text).

`evaluate(model, split)` is the one evaluator for every family: it sums -log p over a split, each
token scored exactly once, and checks that the model kept the contract (one finite log-probability
per token). It keeps the log-probabilities, which a run logs as `TokenScores` (`token_scores/
<split>.npz`: the format is written and read only here), for comparisons token by token and line by
line between runs that scored the same ids.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmbench.data.pipeline import vocab_digest
from lmbench.data.types import Split
from lmbench.data.vocab import Vocabulary
from lmbench.errors import DataError, TrainingDiverged
from lmbench.models.base import LanguageModel
from lmbench.names import BITS_PER_BYTE, BPC, LOSS, PPL, TOKENS, TOKENS_PER_SEC, WORD_PPL, split_metric
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
    words: int = 0  # of the raw text (Split.n_words); 0: not known, no word_ppl
    utf8_bytes: int = 0  # (Split.n_bytes); 0: not known, no bits_per_byte
    log_probs: np.ndarray | None = field(default=None, repr=False, compare=False)  # float32, per token

    def _counts(self) -> tuple[float, int, int]:
        return self.nats, self.tokens, self.chars

    @property
    def word_ppl(self) -> float:
        return perplexity(self.nats / self.words) if self.words else math.nan

    @property
    def bits_per_byte(self) -> float:
        return self.nats / math.log(2) / self.utf8_bytes if self.utf8_bytes else math.nan

    def metrics(self, prefix: str | None = None, *, with_speed: bool = True) -> dict[str, float]:
        """`<prefix>/loss`, `/ppl`, `/bpc`, `/word_ppl`, `/bits_per_byte` (prefix: the split's name;
        the last two where the split's words and bytes are known), and unless not `with_speed`,
        `/tokens` and `/tokens_per_sec`."""
        p = prefix or self.split
        out = {split_metric(p, LOSS): self.loss, split_metric(p, PPL): self.ppl, split_metric(p, BPC): self.bpc}
        if self.words:
            out[split_metric(p, WORD_PPL)] = self.word_ppl
        if self.utf8_bytes:
            out[split_metric(p, BITS_PER_BYTE)] = self.bits_per_byte
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
    return EvalResult(
        split.name, nats, len(split), split.n_chars, seconds, split.n_words, split.n_bytes,
        log_probs=logp.astype(np.float32),  # a copy, 4 bytes a token: what TokenScores keeps
    )



def ids_digest(ids: np.ndarray, vocab: Vocabulary | None = None) -> str:
    """sha256 hex of `ids` as little-endian int64 bytes followed by the vocabulary's digest (the
    token-id cache's `pipeline.vocab_digest`, as ASCII hex; nothing without a vocabulary): equal
    digests mean the same tokens, not only the same ids, whatever dtype the ids were kept in."""
    digest = hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    if vocab is not None:
        digest.update(vocab_digest(vocab).encode("ascii"))
    return digest.hexdigest()


def _line_ends(ids: np.ndarray, eos_id: int | None, n_lines: int) -> np.ndarray:
    """The exclusive end, in tokens, of each raw line (right after its end-of-sentence token); empty
    when the tokens do not follow the raw lines one to one: no end-of-sentence token
    (tokenizer.add_eos=false), blank lines given none (tokenizer.drop_blank_lines=true), or a line
    holding the end-of-sentence token as text."""
    ends = np.flatnonzero(ids == eos_id) + 1 if eos_id is not None else np.zeros(0, np.int64)
    if n_lines == 0 or len(ends) != n_lines or ends[-1] != len(ids):
        return np.zeros(0, np.int64)
    return ends.astype(np.int64)


@dataclass(frozen=True)
class TokenScores:
    """The per-token scores of one split as a run logs them: `token_scores/<split>.npz`, written by
    `save` with `numpy.savez` (uncompressed: float32 log-probabilities hardly compress), read by
    `load`. Arrays (int64 unless said):

        log_probs                 float32 [tokens], natural log, in the split's order
        line_ends                 [lines]: exclusive end, in tokens, of each raw line; EMPTY when the
                                  tokens do not follow the raw lines (see `by_line`)
        line_chars, line_words, line_bytes   [lines]: each raw line's counts (Split)
        ids_digest                0-d unicode: `ids_digest(ids, vocab)`
        n_chars, n_words, n_bytes 0-d: the split's totals

    Two runs scored the same tokens when their `ids_digest` are equal."""

    log_probs: np.ndarray
    line_ends: np.ndarray
    line_chars: np.ndarray
    line_words: np.ndarray
    line_bytes: np.ndarray
    ids_digest: str
    n_chars: int
    n_words: int
    n_bytes: int

    ARRAYS = ("log_probs", "line_ends", "line_chars", "line_words", "line_bytes")
    TOTALS = ("n_chars", "n_words", "n_bytes")

    @classmethod
    def of(cls, result: EvalResult, split: Split, vocab: Vocabulary | None) -> TokenScores:
        """The scores `evaluate` kept for `split` (`result`), with its ids' digest and lines."""
        if result.log_probs is None or len(result.log_probs) != len(split):
            raise ValueError(f"{split.name}: the result holds no log-probability per token of the split")
        ends = _line_ends(split.ids, vocab.eos_id if vocab is not None else None, len(split.line_chars))
        lines = (split.line_chars, split.line_words, split.line_bytes) if len(ends) else (ends, ends, ends)
        return cls(
            result.log_probs.astype(np.float32, copy=False), ends, *(np.asarray(a, np.int64) for a in lines),
            ids_digest(split.ids, vocab), split.n_chars, split.n_words, split.n_bytes,
        )

    @property
    def by_line(self) -> bool:
        """Whether the tokens follow the raw lines, so that lines can be paired between runs."""
        return len(self.line_ends) > 0

    def line_nats(self) -> np.ndarray:
        """-sum of log p over each line's tokens (float64 [lines]); by_line only."""
        if not self.by_line:
            raise ValueError("these scores have no line boundaries")
        starts = np.concatenate([[0], self.line_ends[:-1]])
        return -np.add.reduceat(self.log_probs.astype(np.float64), starts)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        totals = {name: np.array(getattr(self, name), dtype=np.int64) for name in self.TOTALS}
        arrays = {name: getattr(self, name) for name in self.ARRAYS}
        np.savez(path, **arrays, ids_digest=np.array(self.ids_digest), **totals)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TokenScores:
        """The scores in `path`; `DataError` if it is not such a file."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in cls.ARRAYS}
                totals = {name: int(f[name]) for name in cls.TOTALS}
                digest = str(f["ids_digest"][()])
        except (OSError, ValueError, KeyError, TypeError) as ex:
            raise DataError(f"{path} is not a token-scores file ({type(ex).__name__}: {ex})") from None
        scores = cls(**arrays, ids_digest=digest, **totals)
        problem = scores._inconsistency()
        if problem:
            raise DataError(f"{path} is not a consistent token-scores file: {problem}")
        return scores

    def _inconsistency(self) -> str | None:
        if self.log_probs.ndim != 1 or self.log_probs.dtype != np.float32:
            return f"log_probs is {self.log_probs.dtype} {self.log_probs.shape}, not float32 [tokens]"
        n = len(self.line_ends)
        if any(getattr(self, name).shape != (n,) for name in self.ARRAYS[1:]):
            return "the line arrays differ in length"
        if n and (self.line_ends[-1] != len(self.log_probs) or np.any(np.diff(self.line_ends) <= 0)):
            return "line_ends do not cut the tokens into lines"
        return None
