"""Vocabulary built from the training split only.

Order is deterministic: special tokens first (end-of-sentence, then unknown), then the remaining
tokens by descending training frequency, ties broken by the token string. The corpus's own unknown
token (`<unk>` in PTB and WikiText-2) is reused rather than adding a second one.

The unknown token gets an id only when some token needs it: the corpus contains it, `min_freq` or
`max_size` dropped a training token, or a held-out token never occurs in training. Otherwise it would
be a class no id ever carries, yet every model would still spend probability on it (an n-gram's
uniform floor, a softmax output), and the standard character vocabulary of Tiny Shakespeare would be
66 instead of 65. Without an unknown id, `encode` refuses an unseen token instead of mapping it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from itertools import repeat
from pathlib import Path

import numpy as np

from lmbench.errors import ConfigError, DataError, reading_file


class Vocabulary:
    def __init__(self, tokens: list[str], eos: str | None, unk: str):
        if len(set(tokens)) != len(tokens):
            raise DataError("vocabulary has duplicate tokens")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.eos = eos
        self.unk = unk  # the unknown token's spelling, whether or not it has an id
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
        heldout: Iterable[str] = (),
    ) -> Vocabulary:
        """Build from token counts of the training split.

        `max_size` caps the whole vocabulary (special tokens included); `min_freq` drops rarer
        tokens. Dropped tokens map to `unk` when ids are made. `heldout` holds the distinct tokens of
        the other splits: they never enter the vocabulary, they only tell whether `unk` is needed.
        """
        if min_freq < 1:
            raise ConfigError(f"tokenizer.min_freq must be >= 1, got {min_freq}")
        if eos is not None and eos == unk:
            raise ConfigError(f"the end-of-sentence and unknown tokens must differ; both are {eos!r}")
        specials = [eos] if eos is not None else []
        if max_size is not None and max_size < len(specials) + 2:
            raise ConfigError(
                f"tokenizer.max_size={max_size} leaves no room beside the special tokens "
                f"{specials + [unk]}"
            )
        candidates = [(t, c) for t, c in counts.items() if t != eos and t != unk]
        rest = [(t, c) for t, c in candidates if c >= min_freq]
        known = {t for t, _ in rest}.union(specials)
        need_unk = (
            counts.get(unk, 0) > 0
            or len(rest) < len(candidates)
            or any(t not in known for t in heldout)  # the corpus's unk in valid/test counts too
        )
        rest.sort(key=lambda tc: (-tc[1], tc[0]))
        if max_size is not None and len(specials) + need_unk + len(rest) > max_size:
            need_unk = True
            rest = rest[: max_size - len(specials) - 1]
        tokens = specials + ([unk] if need_unk else []) + [t for t, _ in rest]
        return cls(tokens, eos=eos, unk=unk)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def eos_id(self) -> int | None:
        return None if self.eos is None else self.index[self.eos]

    @property
    def unk_id(self) -> int | None:
        """None when no token needed it (see the module docstring)."""
        return self.index.get(self.unk)

    @property
    def dtype(self) -> np.dtype:
        """The most compact integer type that holds every id."""
        return np.dtype(np.uint16) if len(self) <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        # map() over the bound dict methods runs in C: about 3x faster than a generator expression.
        count = len(tokens) if hasattr(tokens, "__len__") else -1
        unk_id = self.unk_id
        if unk_id is not None:
            return np.fromiter(map(self.index.get, tokens, repeat(unk_id)), self.dtype, count)
        try:
            return np.fromiter(map(self.index.__getitem__, tokens), self.dtype, count)
        except KeyError as ex:
            raise DataError(
                f"token {ex.args[0]!r} is not in the vocabulary, which has no unknown token because "
                f"the corpus needed none when it was built"
            ) from None

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def save(self, path: str | Path) -> None:
        data = {"eos": self.eos, "unk": self.unk, "tokens": self.tokens}
        Path(path).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        with reading_file(path):  # missing or cut short: DamagedFile, naming it
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["tokens"], eos=data["eos"], unk=data["unk"])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self.tokens == other.tokens
            and (self.eos, self.unk) == (other.eos, other.unk)
        )

    def __repr__(self) -> str:
        has_unk = self.unk_id is not None
        return f"Vocabulary(size={len(self)}, eos={self.eos!r}, unk={self.unk!r}, has_unk={has_unk})"


def describe_difference(theirs, ours) -> str:
    """How the vocabulary `theirs` differs from `ours`, in a few words."""
    extra = [t for t in theirs.tokens if t not in ours.index]
    missing = [t for t in ours.tokens if t not in theirs.index]

    def some(tokens: list[str]) -> str:
        return ", ".join(repr(t) for t in tokens[:5]) + (", ..." if len(tokens) > 5 else "")

    parts = [f"it has {len(theirs)} tokens, this run's has {len(ours)}"]
    if extra:
        parts.append(f"{len(extra)} of its tokens are not in this run's ({some(extra)})")
    if missing:
        parts.append(f"{len(missing)} of this run's are not in its ({some(missing)})")
    if not extra and not missing:
        if (theirs.eos, theirs.unk) != (ours.eos, ours.unk):
            parts.append(
                f"its end-of-sentence/unknown tokens are {theirs.eos!r}/{theirs.unk!r}, "
                f"this run's {ours.eos!r}/{ours.unk!r}"
            )
        else:
            first = next(i for i, (a, b) in enumerate(zip(theirs.tokens, ours.tokens)) if a != b)
            parts.append(
                f"the same tokens with other ids (id {first} is {theirs.tokens[first]!r} in it, "
                f"{ours.tokens[first]!r} here)"
            )
    return "; ".join(parts)
