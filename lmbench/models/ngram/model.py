"""NGramLM: the count-based baseline every neural model is measured against.

Estimation is a pipeline of passes, each testable on its own (after KenLM's `lm/builder`):
count (`counting.count_ngrams`) -> adjust (`counting.adjusted_counts`, Kneser-Ney only) ->
discount + interpolate (`smoothing.estimate`). The result is stored in back-off form, as in an ARPA
file: for every stored k-gram its full log-probability, and for every stored context its log
back-off weight. Scoring a token is then "longest stored n-gram ending at it, plus the back-off
weights of the longer contexts", vectorized over all tokens with one `np.searchsorted` per order.

Scoring follows `lmbench.models.base`: the stream starts right after a sentence boundary (its first
token's context is a lone eos) and every token, eos included, is predicted once.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np

from lmbench.errors import ConfigError, DataError, reading_file
from lmbench.models.base import ModelBase, Progress
from lmbench.models.ngram.arpa import write_arpa
from lmbench.models.ngram.counting import adjusted_counts, count_ngrams, index_dtype, window_rows
from lmbench.models.ngram.smoothing import SMOOTHINGS, estimate

FORMAT_VERSION = 1
SCORE_CHUNK = 1 << 20  # tokens scored at once: bounds the per-order row arrays on huge splits


def release_pages(array: np.ndarray) -> None:
    """Drop this process's resident pages of a memory-mapped array (the cached token ids) once it
    has been copied: at 50M tokens that is 200 MB of RSS for the rest of the estimation. The file
    stays mapped; reading the array again maps its pages back in from the page cache."""
    if array.flags.writeable:  # a copy-on-write map may hold changes that dropping would lose
        return
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is not None and hasattr(base, "madvise"):
        base.madvise(mmap.MADV_DONTNEED)


class NGramLM(ModelBase):
    """N-gram language model over the ids 0..vocab_size-1 (eos and unk are ordinary ids).

    order: n-gram length (contexts of order-1 ids). smoothing: one of mkn, kn, wb, absolute, addk,
    defined exactly in `smoothing.py`. discount: fixed discount in (0, 1) for kn/absolute, None to
    estimate one per order. k: add-k's constant. reset_at_eos: score each sentence on its own from a
    `<s>` start (KenLM/SRILM, the published PTB figures), or one stream whose contexts cross eos.
    """

    family = "ngram"
    exports_arpa = True

    def __init__(
        self,
        vocab_size: int,
        eos_id: int,
        order: int = 5,
        smoothing: str = "mkn",
        discount: float | None = None,
        k: float = 1.0,
        reset_at_eos: bool = True,
    ):
        if not isinstance(order, int) or order < 1:
            raise ConfigError(f"model.order must be an integer >= 1, got {order!r}")
        if smoothing not in SMOOTHINGS:
            raise ConfigError(f"model.smoothing={smoothing!r} is unknown; valid: {', '.join(SMOOTHINGS)}")
        if discount is not None:
            if smoothing not in ("kn", "absolute"):
                raise ConfigError(
                    f"model.discount applies to smoothing kn or absolute, not {smoothing!r} "
                    "(mkn estimates its three discounts per order; set discount: null)"
                )
            if not 0.0 < discount < 1.0:
                raise ConfigError(f"model.discount must be in (0, 1) or null (estimated), got {discount}")
        if smoothing == "addk" and not k > 0:
            raise ConfigError(f"model.k must be > 0 for add-k smoothing, got {k}")
        if vocab_size < 2:
            raise ConfigError(f"vocab_size must be >= 2, got {vocab_size}")
        if not 0 <= eos_id < vocab_size:
            raise ConfigError(f"eos_id={eos_id} is not an id of a vocabulary of {vocab_size}")
        self.vocab_size, self.eos_id, self.order = int(vocab_size), int(eos_id), order
        self.smoothing, self.discount, self.k = smoothing, discount, float(k)
        self.reset_at_eos = bool(reset_at_eos)
        self.keys: list[np.ndarray] = []  # per order (order 1 dense: empty placeholder)
        self.log_probs: list[np.ndarray] = []  # per order, natural log
        self.log_backoffs: list[np.ndarray] = []  # per order 1..N-1
        self.n_backoffs = 0
        self.stats: dict[str, float] = {}

    def config(self) -> dict:
        return {
            "vocab_size": self.vocab_size, "eos_id": self.eos_id, "order": self.order,
            "smoothing": self.smoothing, "discount": self.discount, "k": self.k,
            "reset_at_eos": self.reset_at_eos,
        }

    # ---- estimation -------------------------------------------------------------------------

    def fit(self, ids: np.ndarray, *, progress: Progress | None = None) -> dict[str, float]:
        ids = self._check_ids(ids, dtype=None)
        if len(ids) == 0:
            raise DataError("cannot fit an n-gram model on an empty training split")
        seq = np.empty(len(ids) + 1, dtype=index_dtype(max(len(ids) + 1, self.vocab_size)))
        seq[0], seq[1:] = self.eos_id, ids
        release_pages(ids)
        tables = count_ngrams(seq, self.order, self.vocab_size, self.eos_id, self.reset_at_eos)
        if len(tables[-1].keys) == 0:
            raise DataError(self._too_short_message(seq))
        n_tokens = len(ids)
        del seq  # the later passes read the tables only
        if self.smoothing in ("mkn", "kn"):
            counts = adjusted_counts(tables, self.eos_id, self.reset_at_eos)
        else:
            counts = [t.counts for t in tables]
        est = estimate(tables, counts, self.smoothing, self.discount, self.k, self.vocab_size)
        self.keys = [np.zeros(0, dtype=np.int64)] + [t.keys for t in tables[1:]]
        self.log_probs, self.log_backoffs, self.n_backoffs = est.log_probs, est.log_backoffs, est.n_backoffs
        self.stats = dict(est.stats)  # its size is the run's summary's model/params, as every family's
        if progress is not None:
            progress(n_tokens)
        return dict(self.stats)

    def _too_short_message(self, seq: np.ndarray) -> str:
        if not self.reset_at_eos:
            return f"the training split has {len(seq) - 1} tokens, too few for order {self.order}"
        boundaries = np.flatnonzero(seq == self.eos_id)
        longest = int(np.diff(np.append(boundaries, len(seq) - 1)).max())  # tokens incl. </s>
        return (
            f"no sentence is long enough for a {self.order}-gram: the longest has {longest} "
            f"token(s) with its eos, i.e. at most {longest + 1}-grams with the start context; "
            f"use model.order <= {longest + 1}"
        )

    def num_params(self) -> int:
        """Stored probabilities plus back-off weights of contexts that have continuations."""
        return int(sum(len(p) for p in self.log_probs)) + self.n_backoffs

    # ---- scoring ----------------------------------------------------------------------------

    def score(
        self, ids: np.ndarray, *, batch_size: int | None = None, progress: Progress | None = None
    ) -> np.ndarray:
        # `batch_size` is ignored (counts need no batches); the common evaluator passes it to every family.
        self._check_fitted()
        ids = self._check_ids(ids)
        seq = np.concatenate(([self.eos_id], ids))
        out = np.empty(len(ids), dtype=np.float64)
        for start in range(1, len(seq), SCORE_CHUNK):
            stop = min(start + SCORE_CHUNK, len(seq))
            # History for a full context (order-1 words), plus one so that t-1 is always inside.
            lo = max(0, start - self.order)
            out[start - 1 : stop - 1] = self._score_positions(seq[lo:stop], start - lo, lo)
            if progress is not None:
                progress(stop - start)
        return out

    def _score_positions(self, seq: np.ndarray, first: int, offset: int) -> np.ndarray:
        """Log-probabilities of seq[first:] (seq[0] is at stream position `offset`)."""
        rows = window_rows(self.keys, seq, self.vocab_size)
        t = np.arange(first, len(seq))
        if self.smoothing == "addk":
            return self._score_addk(seq, rows, t, offset)
        result = np.zeros(len(t))
        pending = np.ones(len(t), dtype=bool)
        # From the longest n-gram down: the first stored one gives the probability; every longer
        # context that is stored but lacked the n-gram contributes its back-off weight.
        for k in range(self.order, 0, -1):
            start = t - k + 1
            inside = start >= 0
            ngram = np.full(len(t), -1, dtype=np.int64)
            ngram[inside] = rows[k - 1][start[inside]]
            hit = pending & (ngram >= 0)
            result[hit] += self.log_probs[k - 1][ngram[hit]]
            pending &= ~hit
            if k > 1:
                context = np.full(len(t), -1, dtype=np.int64)
                context[inside] = rows[k - 2][start[inside]]
                backs = pending & (context >= 0)
                result[backs] += self.log_backoffs[k - 2][context[backs]]
        return result

    def _score_addk(self, seq: np.ndarray, rows: list[np.ndarray], t: np.ndarray, offset: int) -> np.ndarray:
        """Add-k: the longest available context decides alone (no back-off to shorter ones)."""
        if self.reset_at_eos:
            # Context starts at the last eos before t (the start context); before any eos in this
            # chunk the context is at least order-1 long (the chunk carries that much history).
            marks = np.where(seq == self.eos_id, np.arange(len(seq)), -self.order)
            last_start = np.maximum.accumulate(marks)[t - 1]
            available = t - last_start
        else:
            available = t + offset
        length = np.minimum(available, self.order - 1)  # context length of each token
        result = np.full(len(t), -np.log(self.vocab_size))  # unseen context: uniform
        for j in np.unique(length):
            sel = np.flatnonzero(length == j)
            start = t[sel] - j
            ngram = rows[j][start]
            hit = ngram >= 0
            result[sel[hit]] = self.log_probs[j][ngram[hit]]
            if j > 0:
                context = rows[j - 1][start[~hit]]
                known = context >= 0
                result[sel[~hit][known]] = self.log_backoffs[j - 1][context[known]]
        return result

    def prob_distribution(self, context_ids: np.ndarray) -> np.ndarray:
        """p(w | context) for every id w: the context is preceded by a lone eos, as in `score`."""
        self._check_fitted()
        history = np.concatenate(([self.eos_id], self._check_ids(context_ids)))
        if self.reset_at_eos:
            history = history[np.flatnonzero(history == self.eos_id)[-1] :]
        history = history[len(history) - min(len(history), self.order - 1) :]
        n = len(history)
        rows = window_rows(self.keys, history, self.vocab_size) if n else []
        # rows[j-1][n-j] is the row of the last j history words (the context of length j).
        contexts = [rows[j - 1][n - j] for j in range(1, n + 1)]
        if self.smoothing == "addk":
            if n == 0:  # order 1
                return np.exp(self.log_probs[0])
            if contexts[n - 1] < 0:  # unseen context: add-k gives the uniform distribution
                return np.full(self.vocab_size, 1.0 / self.vocab_size)
            probs = np.full(self.vocab_size, np.exp(self.log_backoffs[n - 1][contexts[n - 1]]))
            self._overwrite_children(probs, n, contexts[n - 1])
            return probs
        probs = np.exp(self.log_probs[0])
        for j in range(1, n + 1):
            if contexts[j - 1] < 0:
                break  # a longer context contains this one as its suffix, so is not stored either
            probs *= np.exp(self.log_backoffs[j - 1][contexts[j - 1]])
            self._overwrite_children(probs, j, contexts[j - 1])
        return probs

    def _overwrite_children(self, probs: np.ndarray, j: int, row: int) -> None:
        """Set the probability of every word stored after context `row` of order j."""
        keys = self.keys[j]
        lo, hi = np.searchsorted(keys, [row * self.vocab_size, (row + 1) * self.vocab_size])
        probs[keys[lo:hi] % self.vocab_size] = np.exp(self.log_probs[j][lo:hi])

    # ---- generation -------------------------------------------------------------------------

    def stepper(self, prompt: np.ndarray) -> NGramStepper:
        """The model after reading a lone eos and `prompt` (see `base.Stepper`)."""
        self._check_fitted()
        return NGramStepper(self, self._check_ids(prompt))

    # ---- persistence ------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for k in range(1, self.order + 1):
            arrays[f"log_probs_{k}"] = self.log_probs[k - 1]
            if k >= 2:
                arrays[f"keys_{k}"] = self.keys[k - 1]
                arrays[f"log_backoffs_{k - 1}"] = self.log_backoffs[k - 2]
        np.savez(folder / "ngram.npz", **arrays)
        meta = {"format_version": FORMAT_VERSION, "config": self.config(),
                "n_backoffs": self.n_backoffs, "stats": self.stats}
        (folder / "ngram.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> NGramLM:
        folder = Path(folder)
        meta_path, arrays_path = folder / "ngram.json", folder / "ngram.npz"
        for path in (meta_path, arrays_path):
            if not path.is_file():
                raise DataError(f"{path} is missing: not a folder written by NGramLM.save")
        with reading_file(meta_path):  # cut short: DamagedFile, naming it
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            found = meta.get("format_version")
            raise DataError(f"{meta_path} has format {found}, expected {FORMAT_VERSION}")
        model = cls(**meta["config"])
        with reading_file(arrays_path), np.load(arrays_path) as arrays:
            model.log_probs = [arrays[f"log_probs_{k}"] for k in range(1, model.order + 1)]
            higher = [arrays[f"keys_{k}"] for k in range(2, model.order + 1)]
            model.keys = [np.zeros(0, dtype=np.int64)] + higher
            model.log_backoffs = [arrays[f"log_backoffs_{k}"] for k in range(1, model.order)]
        model.n_backoffs, model.stats = int(meta["n_backoffs"]), dict(meta["stats"])
        return model

    def to_arpa(self, path: str | Path, tokens: list[str]) -> None:
        """Write a back-off ARPA file (see `arpa.write_arpa`)."""
        self._check_fitted()
        write_arpa(self, path, tokens)

    # ---- checks -----------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not self.log_probs:
            raise RuntimeError("NGramLM is not fitted: call fit() or NGramLM.load() first")

    def _check_ids(self, ids: np.ndarray, dtype: type | None = np.int64) -> np.ndarray:
        """`ids` checked, as `dtype` (None: as given)."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise DataError(f"token ids must be a 1-D array, got shape {ids.shape}")
        if ids.size == 0:
            return ids.astype(dtype or np.int64)
        if not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"token ids must be integers, got dtype {ids.dtype}")
        bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
        if len(bad):
            raise DataError(
                f"token id {ids[bad[0]]} at position {bad[0]} is outside the vocabulary "
                f"[0, {self.vocab_size}) ({len(bad)} such id(s))"
            )
        return ids if dtype is None else ids.astype(dtype)


class NGramStepper:
    """Next-token log-probabilities from the last order-1 tokens read (see `base.Stepper`)."""

    def __init__(self, model: NGramLM, prompt: np.ndarray):
        self.model = model
        self.history = [int(t) for t in prompt[-model.order :]]

    def next_logits(self) -> np.ndarray:
        with np.errstate(divide="ignore"):  # a probability 0 is -inf, never drawn
            return np.log(self.model.prob_distribution(np.array(self.history, dtype=np.int64)))

    def append(self, token: int) -> None:
        self.history = (self.history + [int(token)])[-self.model.order :]
