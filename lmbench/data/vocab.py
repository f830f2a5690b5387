"""Vocabulary built from the training split only.

Order is deterministic: special tokens first (end-of-sentence, then unknown), then the remaining
tokens by descending training frequency, ties broken by the token string. The corpus's own unknown
token (`<unk>` in PTB and WikiText-2) is reused rather than adding a second one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lmbench.errors import ConfigError, DataError


class Vocabulary:
    def __init__(self, tokens: list[str], eos: str | None, unk: str):
        if len(set(tokens)) != len(tokens):
            raise DataError("vocabulary has duplicate tokens")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.eos = eos
        self.unk = unk
        if unk not in self.index:
            raise DataError(f"unknown token {unk!r} is not in the vocabulary")
        if eos is not None and eos not in self.index:
            raise DataError(f"end-of-sentence token {eos!r} is not in the vocabulary")

    @classmethod
    def build(
        cls,
        counts: Counter,
        *,
        eos: str | None,
        unk: str,
        max_size: int | None = None,
        min_freq: int = 1,
    ) -> "Vocabulary":
        """Build from token counts of the training split.

        `max_size` caps the whole vocabulary (special tokens included); `min_freq` drops rarer
        tokens. Dropped tokens map to `unk` when ids are made.
        """
        if min_freq < 1:
            raise ConfigError(f"tokenizer.min_freq must be >= 1, got {min_freq}")
        specials = [t for t in (eos, unk) if t is not None]
        if max_size is not None and max_size < len(specials) + 1:
            raise ConfigError(
                f"tokenizer.max_size={max_size} leaves no room beside the special tokens {specials}"
            )
        rest = [(t, c) for t, c in counts.items() if t not in specials and c >= min_freq]
        rest.sort(key=lambda tc: (-tc[1], tc[0]))
        tokens = specials + [t for t, _ in rest]
        if max_size is not None:
            tokens = tokens[:max_size]
        return cls(tokens, eos=eos, unk=unk)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def eos_id(self) -> int | None:
        return None if self.eos is None else self.index[self.eos]

    @property
    def unk_id(self) -> int:
        return self.index[self.unk]

    @property
    def dtype(self) -> np.dtype:
        """The most compact integer type that holds every id."""
        return np.dtype(np.uint16) if len(self) <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        get, unk = self.index.get, self.unk_id
        return np.fromiter((get(t, unk) for t in tokens), dtype=self.dtype)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def save(self, path: str | Path) -> None:
        data = {"eos": self.eos, "unk": self.unk, "tokens": self.tokens}
        Path(path).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["tokens"], eos=data["eos"], unk=data["unk"])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self.tokens == other.tokens
            and (self.eos, self.unk) == (other.eos, other.unk)
        )
