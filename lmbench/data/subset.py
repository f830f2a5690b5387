"""Training on less of the train split: `dataset.train_fraction` and `dataset.max_train_tokens`.

The subset is the train split's first lines -- the first `train_fraction` of them (rounded down,
at least one), then no more tokens than `max_train_tokens`, cut at the last line end that fits --
so that a smaller size is always a prefix of a larger one and a run is deterministic. Only the
train split is cut, and after the vocabulary was built from the whole of it: every size keeps the
same vocabulary and so scores the same valid and test ids, which keeps runs of different sizes
comparable token by token (the paired comparisons of the report). A network's output layer still
spans words that its subset never shows; an n-gram gives them the unigram distribution's share.

Line ends are found in the ids as the end-of-line token (every tokenizer that adds one). When the
ids have none (a tokenizer with `add_eos: false`), a fraction of lines becomes the same fraction of
tokens, cut anywhere, and the run's log says so.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from lmbench.data.types import CorpusData, Split

log = logging.getLogger(__name__)


def train_subset(data: CorpusData, fraction: float = 1.0, max_tokens: int | None = None) -> CorpusData:
    """`data` with its train split cut to its first `fraction` of lines and at most `max_tokens`
    tokens (a line end the cut); `data` itself when nothing is cut."""
    train = data.train
    ends = _line_ends(train, data.vocab.eos_id)
    n_tokens = len(train)
    if ends is not None:
        n_lines = len(ends)
        if fraction < 1.0:
            n_lines = max(1, int(n_lines * fraction))
        if max_tokens is not None and ends[n_lines - 1] > max_tokens:
            n_lines = max(1, int(np.searchsorted(ends, max_tokens, side="right")))
        n_tokens = int(ends[n_lines - 1])
        if max_tokens is not None:
            n_tokens = min(n_tokens, max_tokens)  # a first line longer than the budget is cut
    else:
        n_lines = None
        if fraction < 1.0:
            n_tokens = max(1, int(n_tokens * fraction))
            log.warning("the train ids have no line ends: train_fraction=%s cuts %d tokens", fraction, n_tokens)
        if max_tokens is not None:
            n_tokens = min(n_tokens, max_tokens)
    if n_tokens >= len(train):
        return data
    same_lines = ends is not None and len(ends) == len(train.line_chars)  # else blank lines have no end id
    subset = _cut(train, n_tokens, n_lines if same_lines else None)
    info = {**data.info, "train_tokens_full": len(train), "train_fraction_of_tokens": n_tokens / len(train)}
    return replace(data, splits={**data.splits, "train": subset}, info=info)


def _line_ends(split: Split, eos_id: int | None) -> np.ndarray | None:
    """The position after each line's last token (its end-of-line id); None when the ids have none.
    (A tokenizer may give a blank raw line no end id: lines are then the lines of tokens.)"""
    if eos_id is None:
        return None
    ends = np.flatnonzero(split.ids == eos_id) + 1
    return ends if len(ends) else None


def _cut(split: Split, n_tokens: int, n_lines: int | None) -> Split:
    """The first `n_tokens` ids of `split`; its text measures over its first `n_lines` raw lines
    (none when the raw lines are not known: a train split's measures serve no figure)."""
    if n_lines is None or not len(split.line_chars):
        return Split(split.name, split.ids[:n_tokens], n_chars=0)
    chars, words, utf8 = split.line_chars[:n_lines], split.line_words[:n_lines], split.line_bytes[:n_lines]
    return Split(
        split.name, split.ids[:n_tokens], int(chars.sum()), int(words.sum()), int(utf8.sum()), chars, words, utf8
    )
