"""The data part's products: what every model family trains on and is scored on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmbench.data.vocab import Vocabulary

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Split:
    """One split as token ids.

    `ids` is a 1-D unsigned/int array: every line's tokens followed by the end-of-sentence id (when
    the tokenizer has one). `n_chars` is the number of characters of the split's raw text as read
    from disk (newlines included, before normalization); bits per character divides by it.
    """

    name: str
    ids: np.ndarray
    n_chars: int

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
