"""The data part's products: what every model family trains on and is scored on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmbench.data.vocab import Vocabulary

SPLITS = ("train", "valid", "test")


def _no_lines() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Split:
    """One split as token ids.

    `ids` is a 1-D unsigned/int array: every line's tokens followed by the end-of-sentence id (when
    the tokenizer has one). `n_chars` is the number of characters of the split's raw text as read
    from disk (newlines included, before normalization); bits per character divides by it.
    `n_words` (whitespace-separated words plus one end of line per line) and `n_bytes` (UTF-8) count
    the same text in the units of word perplexity and bits per byte; `line_chars`, `line_words` and
    `line_bytes` give the three counts per raw line (`text.line_measures`), for statistics over
    lines. A Split made without them (0 and empty arrays) has no such figures.
    """

    name: str
    ids: np.ndarray
    n_chars: int
    n_words: int = 0
    n_bytes: int = 0
    line_chars: np.ndarray = field(default_factory=_no_lines)
    line_words: np.ndarray = field(default_factory=_no_lines)
    line_bytes: np.ndarray = field(default_factory=_no_lines)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class CorpusData:
    """A tokenized corpus: vocabulary plus the train/valid/test splits, ready for any model."""

    vocab: Vocabulary
    splits: dict[str, Split]
    cache_key: str = ""
    info: dict = field(default_factory=dict)
    # The tokenizer that made the ids: the one given, or the trained copy of a learned one (subword
    # kinds), which is what a bundle must keep to cut new text the same way.
    tokenizer: Any = None

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def valid(self) -> Split:
        return self.splits["valid"]

    @property
    def test(self) -> Split:
        return self.splits["test"]
