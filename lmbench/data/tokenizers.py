"""Tokenizers: text to a flat list of token strings, with an end-of-sentence token after every line.

Hydra builds them from `conf/tokenizer/*.yaml` (`_target_` names the class, the other keys are the
constructor's arguments), so every option below is a plain constructor argument.

The text is cut into lines on "\\n" (a final newline does not start an extra empty line). Each line is
normalized, in this fixed order, by whichever options are on:

1. `lowercase`: `str.lower()`.
2. `strip_punctuation`: delete every character whose Unicode category is punctuation (P*). Symbols
   such as `<`, `>`, `$`, `+` are not punctuation and stay, so `<unk>` survives.
3. `number_token`: after the line is split into tokens, every token that is a whole number (`3`,
   `3.5`, `.5`, `1,000`, `-2`, `+7`) becomes this token. Splitting first is what makes "whole token"
   mean the same thing for every tokenizer (for characters it is each digit).
4. `drop_blank_lines`: a line that is empty or whitespace after steps 1-2 yields no tokens at all,
   not even the end-of-sentence token.

Then, when `add_eos`, `eos_token` follows the line's tokens. `eos_token` is in the vocabulary even
when `add_eos` is false, because models use it as the boundary before the first token.

The tokenizers here follow rules. Subword tokenizers (`subword.py`, on `learned.py`) are learned from
the train split first; the members they override (`needs_fit`, `fit`, `save_model`, `load_model`,
`check_vocab`) do nothing here, so the pipeline and the bundle treat both alike.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from lmbench.data.vocab import Vocabulary
from lmbench.errors import ConfigError

NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")


class _PunctuationTable(dict):
    """A `str.translate` table deleting Unicode punctuation, filled lazily per distinct character
    (deciding all 1.1M code points up front would cost a second)."""

    def __missing__(self, code: int) -> int | None:
        value = None if unicodedata.category(chr(code)).startswith("P") else code
        self[code] = value
        return value


_PUNCTUATION = _PunctuationTable()


def _is_number(token: str) -> bool:
    return any(c.isdigit() for c in token) and NUMBER.fullmatch(token) is not None


def _class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


class Tokenizer:
    """Shared normalization, end-of-sentence handling and vocabulary building.

    Subclasses only say how one normalized line becomes tokens (`_line_splitter`).
    """

    def __init__(
        self,
        eos_token: str = "<eos>",
        add_eos: bool = True,
        lowercase: bool = False,
        strip_punctuation: bool = False,
        number_token: str | None = None,
        drop_blank_lines: bool = False,
        max_size: int | None = None,
        min_freq: int = 1,
    ):
        if not isinstance(eos_token, str) or not eos_token:
            raise ConfigError(f"tokenizer.eos_token must be a non-empty string, got {eos_token!r}")
        if number_token is not None and (not isinstance(number_token, str) or not number_token):
            raise ConfigError(
                f"tokenizer.number_token must be a non-empty string or null, got {number_token!r}"
            )
        if max_size is not None and (not isinstance(max_size, int) or max_size < 3):
            raise ConfigError(
                f"tokenizer.max_size must be null or an integer >= 3 (end-of-sentence, unknown and "
                f"at least one word), got {max_size!r}"
            )
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ConfigError(f"tokenizer.min_freq must be an integer >= 1, got {min_freq!r}")
        self.eos_token = eos_token
        self.add_eos = bool(add_eos)
        self.lowercase = bool(lowercase)
        self.strip_punctuation = bool(strip_punctuation)
        self.number_token = number_token
        self.drop_blank_lines = bool(drop_blank_lines)
        self.max_size = max_size
        self.min_freq = min_freq

    def _line_splitter(self) -> Callable[[str], Iterable[str]]:
        raise NotImplementedError

    def _lines(self, text: str) -> list[str]:
        """The lines of `text` to tokenize, normalized (steps 1, 2 and 4 of the module docstring)."""
        # Lowercasing and punctuation never cross a newline, so doing them on the whole text at once
        # gives the same lines as doing them per line, several times faster.
        if self.lowercase:
            text = text.lower()
        if self.strip_punctuation:
            text = text.translate(_PUNCTUATION)
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        if self.drop_blank_lines:
            lines = [line for line in lines if line and not line.isspace()]
        return lines

    def tokenize(self, text: str, line_ends: bool = True) -> list[str]:
        """All tokens of `text`, line after line, each line followed by the end-of-sentence token;
        with `line_ends=False` the last line goes on in the next piece of text (cut by `line_cut`):
        no end-of-sentence token after it."""
        split = self._line_splitter()
        number, eos = self.number_token, self.eos_token
        out: list[str] = []
        extend, append = out.extend, out.append
        lines = self._lines(text)
        for i, line in enumerate(lines):
            tokens = split(line)
            if number is not None:
                tokens = [number if _is_number(t) else t for t in tokens]
            extend(tokens)
            if self.add_eos and (line_ends or i < len(lines) - 1):
                append(eos)
        return out

    def provisional_ids(self, text: str, provisional: Mapping[str, int], line_ends: bool = True) -> np.ndarray:
        """`tokenize(text, line_ends)` as int32 ids, each token looked up in `provisional` (the
        pipeline's `defaultdict` that numbers tokens in order of first appearance). A tokenizer that
        can do this without a Python string per token (the learned ones) overrides it; the ids must be
        the same."""
        # line_ends only when False: a subclass's `tokenize` may not take it (its lines are not cut)
        tokens = self.tokenize(text) if line_ends else self.tokenize(text, line_ends=False)
        return np.fromiter(map(provisional.__getitem__, tokens), dtype=np.int32)

    def line_cut(self, text: str, pos: int, endpos: int) -> int:
        """A place in text[pos:endpos] (inside one line) where the line may be cut into two pieces
        that, tokenized apart (the first with line_ends=False), give the line's tokens; -1 where
        there is none. Each piece must keep a non-space character (drop_blank_lines would drop a
        blank one). Here: never (a tokenizer may read a whole line at once, as NLTK's do)."""
        return -1

    def _may_blank_a_piece(self) -> bool:
        """Whether a piece with non-space characters may still be dropped as blank: when they are
        all punctuation, deleted by strip_punctuation, and drop_blank_lines drops what is left."""
        return self.strip_punctuation and self.drop_blank_lines

    def detokenize(self, tokens: Iterable[str]) -> str:
        """The text of each line's tokens (`_decode_line`), the end-of-sentence token read as a
        line end."""
        lines, line = [], []
        for token in tokens:
            if token == self.eos_token:
                lines.append(self._decode_line(line) + "\n")
                line = []
            else:
                line.append(token)
        return "".join(lines) + self._decode_line(line)

    def _decode_line(self, tokens: list[str]) -> str:
        """One line's tokens as text: joined by spaces."""
        return " ".join(tokens)

    def settings(self) -> dict[str, Any]:
        """Everything that decides the token ids; part of the token-id cache key."""
        settings: dict[str, Any] = {
            "class": _class_path(self),
            "eos_token": self.eos_token,
            "add_eos": self.add_eos,
            "lowercase": self.lowercase,
            "strip_punctuation": self.strip_punctuation,
            "number_token": self.number_token,
            "drop_blank_lines": self.drop_blank_lines,
            "max_size": self.max_size,
            "min_freq": self.min_freq,
        }
        if self.lowercase or self.strip_punctuation:
            # Case mappings and categories change between Unicode versions, i.e. Python versions.
            settings["unicode"] = unicodedata.unidata_version
        return settings

    # Learned tokenizers (lmbench/data/subword.py) override the five members below: they are
    # trained on the train split (`fit`) and keep what they learned in a file of their own.

    @property
    def label(self) -> str:
        """The run's `lmbench.tokenizer` tag: word, char, nltk (and e.g. bpe-8000 for subwords)."""
        return type(self).__name__.removesuffix("Tokenizer").lower()

    @property
    def needs_fit(self) -> bool:
        """True for a learned tokenizer that has not been trained yet; rule-based ones never do."""
        return False

    def fit(self, train_text: str, unk_token: str) -> Tokenizer:
        """A tokenizer ready to cut text, learned from `train_text` when it learns: itself here."""
        return self

    def save_model(self, folder: str | Path) -> Path | None:
        """Write what was learned into `folder` (a bundle, a cache entry, a run folder); the path
        written, or None when there is nothing to keep (rule-based tokenizers)."""
        return None

    def load_model(self, folder: str | Path) -> Tokenizer:
        """This tokenizer with what `save_model` wrote into `folder`: itself here."""
        return self

    def check_vocab(self, vocab: Vocabulary) -> None:
        """Raise `DataError` if `vocab` was not made by this tokenizer (learned ones can tell)."""

    def build_vocab(
        self, train_tokens: Iterable[str], *, unk_token: str = "<unk>", heldout: Iterable[str] = ()
    ) -> Vocabulary:
        """Vocabulary of the training tokens, capped by `max_size`/`min_freq`.

        `unk_token` is the dataset's (the corpus's own when it has one); `heldout` are the distinct
        tokens of the other splits, used only to decide whether the unknown token needs an id.
        """
        counts = train_tokens if isinstance(train_tokens, Counter) else Counter(train_tokens)
        return Vocabulary.build(
            counts,
            eos=self.eos_token,
            unk=unk_token,
            max_size=self.max_size,
            min_freq=self.min_freq,
            heldout=heldout,
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "class")
        return f"{type(self).__name__}({args})"


_TWO_NONSPACE = re.compile(r"\S\S")
_WORD_START = re.compile(r"\S\s+\S")


def word_start(text: str, pos: int, endpos: int) -> int:
    """The first start of a word in text[pos:endpos] that follows another word's end, or -1: where
    `str.split` splits (re's \\s is str.isspace), and lowercasing's one rule with context (Greek
    final sigma) does not look past whitespace."""
    found = _WORD_START.search(text, pos, endpos)
    return -1 if found is None else found.end() - 1


class WordTokenizer(Tokenizer):
    """Whitespace-separated words (`str.split()`), the classic PTB / WikiText set-up."""

    def line_cut(self, text: str, pos: int, endpos: int) -> int:
        return -1 if self._may_blank_a_piece() else word_start(text, pos, endpos)

    def _line_splitter(self) -> Callable[[str], Iterable[str]]:
        return str.split


class CharTokenizer(Tokenizer):
    """One token per character. With `eos_token="\\n"` the token stream is the text itself."""

    def line_cut(self, text: str, pos: int, endpos: int) -> int:
        """Between any two non-space characters; lowercased, at a word's start as words are (Greek
        final sigma depends on the letters around it)."""
        if self._may_blank_a_piece():
            return -1
        if self.lowercase:
            return word_start(text, pos, endpos)
        found = _TWO_NONSPACE.search(text, pos, endpos)
        return -1 if found is None else found.start() + 1

    def _line_splitter(self) -> Callable[[str], Iterable[str]]:
        return list

    def detokenize(self, tokens: Iterable[str]) -> str:
        eos = self.eos_token
        return "".join("\n" if t == eos else t for t in tokens)


class NltkTokenizer(Tokenizer):
    """Any NLTK tokenizer object with `.tokenize(str) -> list[str]`, applied line by line.

    The arguments are spelt out (not `**kwargs`) so that `check_target` can catch a misspelt key.
    """

    def __init__(
        self,
        tokenizer: Any,
        eos_token: str = "<eos>",
        add_eos: bool = True,
        lowercase: bool = False,
        strip_punctuation: bool = False,
        number_token: str | None = None,
        drop_blank_lines: bool = False,
        max_size: int | None = None,
        min_freq: int = 1,
    ):
        if not callable(getattr(tokenizer, "tokenize", None)):
            raise ConfigError(
                f"tokenizer.tokenizer must be an object with a tokenize(str) method, e.g. "
                f"{{_target_: nltk.tokenize.TreebankWordTokenizer}}; got {tokenizer!r}"
            )
        super().__init__(
            eos_token, add_eos, lowercase, strip_punctuation, number_token, drop_blank_lines,
            max_size, min_freq,
        )
        self.tokenizer = tokenizer

    def _line_splitter(self) -> Callable[[str], Iterable[str]]:
        return self.tokenizer.tokenize

    def settings(self) -> dict[str, Any]:
        # NLTK tokenizers keep their options as plain attributes (RegexpTokenizer: _pattern, _gaps,
        # _flags...). Compiled regexes and unset values are skipped: RegexpTokenizer compiles its
        # pattern lazily, which must not change the key between two calls.
        options = {
            k: int(v) if isinstance(v, int) and not isinstance(v, bool) else v  # re flags -> int
            for k, v in sorted(vars(self.tokenizer).items())
            if isinstance(v, (str, int, float))
        }
        return {
            **super().settings(),
            "nltk_tokenizer": _class_path(self.tokenizer),
            "pattern": getattr(self.tokenizer, "_pattern", None),
            "nltk_options": options,
            # From the package metadata: importing nltk in this module would cost every word and
            # character run a second.
            "nltk_version": version("nltk"),
        }
