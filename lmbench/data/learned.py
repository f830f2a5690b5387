"""The machinery of tokenizers learned from the train split (`LearnedTokenizer`); the kinds
themselves (BPE, Unigram, WordPiece, byte-level BPE) are in `subword.py`.

They are Hugging Face `tokenizers` models (Rust: trains offline in seconds, one JSON file), behind
the same `Tokenizer` contract as words and characters: the text is normalized and cut into lines as
`Tokenizer._lines` does, each line becomes pieces, and the end-of-sentence token follows every line.

A tokenizer built from `conf/tokenizer/<kind>.yaml` is a *recipe* (`needs_fit`): `load_corpus`
trains it on the train split's text only (`fit`, which returns a trained copy) before any split is
tokenized, caches the trained model beside the ids (`tokenizer.json`) and hands it out as
`CorpusData.tokenizer`; the run saves it in its folder and in its bundle, and `load_model` rebuilds
that exact tokenizer without training again.

Special tokens are never split: `eos_token` always, and the dataset's unknown token (`<unk>`, which
PTB and WikiText write literally) where the model needs it or the train text has it. They are cut
out of the training text (so no piece is learned from `<`, `unk`, `>`) and matched whole when text
is encoded.

The lmbench vocabulary holds exactly the trained model's pieces, ordered as every vocabulary is
(end-of-sentence, unknown when some token needs it, then by training frequency); tokens are the
pieces' strings, except that characters the model maps to its unknown token keep their own text
(so they are counted and named as out-of-vocabulary, as unseen words are).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import __version__ as hf_version

from lmbench.data.tokenizers import Tokenizer
from lmbench.data.vocab import Vocabulary
from lmbench.errors import ConfigError, DataError

MODEL_FILE = "tokenizer.json"
# A unit of text for encoding: a line's first word, a run of spaces with the word after it (or a
# line's trailing spaces), or a line end. Other whitespace (tabs) stays inside a unit's word.
_UNIT = re.compile(r"[^ \n]+| +[^ \n]*|\n")
_UNIT_CUT = re.compile(r"[^ \n] +[^ \n]")  # where a long line may be cut (`line_cut`)
_UNIT_MEMO_SIZE = 1 << 20  # distinct units whose tokens a trained tokenizer remembers


class LearnedTokenizer(Tokenizer):
    """The shared part; subclasses build the Hugging Face model, pre-tokenizer, decoder and trainer."""

    kind = ""  # the conf/tokenizer name
    min_vocab_size = 3  # end-of-sentence, unknown and one piece
    needs_unk = True  # the model maps unseen characters to the unknown token (byte-level: none)

    def __init__(
        self,
        vocab_size: int,
        min_freq: int = 1,
        eos_token: str = "<eos>",
        lowercase: bool = False,
        strip_punctuation: bool = False,
        drop_blank_lines: bool = False,
    ):
        super().__init__(
            eos_token=eos_token, lowercase=lowercase, strip_punctuation=strip_punctuation,
            drop_blank_lines=drop_blank_lines, min_freq=min_freq,
        )
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < self.min_vocab_size:
            raise ConfigError(
                f"tokenizer.vocab_size must be an integer >= {self.min_vocab_size} for {self.kind} "
                f"({self._minimum_reason()}), got {vocab_size!r}"
            )
        self.vocab_size = vocab_size
        self._hf: Any = None  # the trained tokenizers.Tokenizer, None for a recipe
        self._json = ""
        self._pieces: list[str] = []  # Hugging Face id -> piece
        self._known: frozenset[str] = frozenset()  # the pieces
        self._unk: str | None = None  # the model's unknown piece, if it has one
        self._unk_id = -1
        self._unit_memo: dict[str, tuple[str, ...]] = {}  # unit -> its tokens (see `_units`)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_unit_memo": {}}  # a cache, not part of the tokenizer

    def _minimum_reason(self) -> str:
        return "the end-of-sentence and unknown tokens and at least one piece"

    # -- what subclasses supply ------------------------------------------------------------------

    def _new_model(self, unk_token: str | None) -> Any:
        """An untrained `tokenizers.Tokenizer`: model, pre-tokenizer and decoder."""
        raise NotImplementedError

    def _trainer(self, specials: list[str], vocab_size: int) -> Any:
        raise NotImplementedError

    # -- learning --------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.kind}-{self.vocab_size}"

    @property
    def needs_fit(self) -> bool:
        return self._hf is None

    def fit(self, train_text: str, unk_token: str) -> LearnedTokenizer:
        """A trained copy, learned from the lines of `train_text` with the special tokens cut out."""
        if unk_token == self.eos_token:
            raise ConfigError(f"the end-of-sentence and unknown tokens must differ; both are {unk_token!r}")
        lines = self._lines(train_text)
        corpus_has_unk = any(unk_token in line for line in lines)
        specials = [self.eos_token] + ([unk_token] if self.needs_unk or corpus_has_unk else [])
        special = re.compile("|".join(map(re.escape, specials)))
        segments = [s for line in lines for s in special.split(line) if s]
        if not any(not s.isspace() for s in segments):
            raise DataError(
                f"the train split has no text to learn {self.kind} pieces from (after normalization "
                f"by {self!r}); give it some text, or change the normalization options"
            )
        hf = self._train(segments, specials, unk_token)
        self._check_size(hf.get_vocab_size(), specials)
        return self._with_model(hf.to_str())

    def _train(self, segments: list[str], specials: list[str], unk_token: str, vocab_size: int | None = None) -> Any:
        """A trained `tokenizers.Tokenizer` (of `vocab_size` entries at most, default the config's)."""
        hf = self._new_model(unk_token if self.needs_unk else None)
        try:
            trainer = self._trainer(specials, vocab_size or self.vocab_size)
            hf.train_from_iterator(segments, trainer, length=len(segments))
        except Exception as ex:  # the library's own refusal, e.g. Unigram's "not large enough"
            raise DataError(
                f"tokenizer.vocab_size={self.vocab_size} does not fit the train split: {self.kind} "
                f"training says \"{ex}\". Its text has {len(set(''.join(segments)))} distinct characters "
                f"and {len(specials)} special token(s) ({', '.join(specials)}); choose a larger vocab_size"
            ) from None
        return hf

    def _check_size(self, size: int, specials: list[str]) -> None:
        if size > self.vocab_size:
            raise DataError(
                f"tokenizer.vocab_size={self.vocab_size} is too small for {self.kind} on this train "
                f"split: its special tokens ({', '.join(specials)}) and the alphabet it must keep "
                f"(every character of train{', as bytes' if not self.needs_unk else ''}) already take "
                f"{size} entries; set tokenizer.vocab_size >= {size}"
            )
        if size < self.vocab_size:
            freq = f" with tokenizer.min_freq={self.min_freq}" if self.min_freq > 1 else ""
            raise DataError(
                f"tokenizer.vocab_size={self.vocab_size} is larger than this train split allows: "
                f"{self.kind} training{freq} ran out of pieces to learn at {size} entries; set "
                f"tokenizer.vocab_size <= {size}, or train on more text"
            )

    def _with_model(self, model_json: str) -> LearnedTokenizer:
        try:
            hf = HfTokenizer.from_str(model_json)
        except Exception as ex:
            raise DataError(f"the {self.kind} tokenizer model cannot be read: {ex}") from None
        pieces = [hf.id_to_token(i) for i in range(hf.get_vocab_size())]
        specials = {t.content for t in hf.get_added_tokens_decoder().values()}
        if None in pieces or self.eos_token not in specials or len(specials - {self.eos_token}) > 1:
            raise DataError(
                f"the {self.kind} tokenizer model does not look like one lmbench trained: it needs "
                f"contiguous ids and the special tokens {self.eos_token!r} (and at most an unknown one), "
                f"it has {sorted(specials)}"
            )
        trained = copy.copy(self)
        trained._hf, trained._json, trained._pieces, trained._known = hf, model_json, pieces, frozenset(pieces)
        trained._unk = next(iter(specials - {self.eos_token}), None)
        trained._unk_id = -1 if trained._unk is None else pieces.index(trained._unk)
        trained._unit_memo = {}
        return trained

    def _model(self) -> Any:
        if self._hf is None:
            raise DataError(
                f"the {self.kind} tokenizer has not been trained; load_corpus trains it on the train "
                "split, and a bundle brings its trained model (tokenizer.json)"
            )
        return self._hf

    # -- the trained model as a file -------------------------------------------------------------

    def save_model(self, folder: str | Path) -> Path:
        path = Path(folder) / MODEL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self._model()  # trained, or a DataError
        path.write_text(self._json, encoding="utf-8")
        return path

    def load_model(self, folder: str | Path) -> LearnedTokenizer:
        path = Path(folder) / MODEL_FILE
        if not path.is_file():
            raise DataError(
                f"{folder} has no {MODEL_FILE}: a {self.kind} tokenizer is learned from the training "
                "text, and its trained model must come with the ids or the model it made"
            )
        return self._with_model(path.read_text(encoding="utf-8"))

    def settings(self) -> dict[str, Any]:
        """The recipe (a trained copy adds its model's digest), part of the token-id cache key. The
        recipe with the train text's digest decides the trained model: the key covers both."""
        settings = {k: v for k, v in super().settings().items() if k not in ("number_token", "max_size")}
        settings.update(vocab_size=self.vocab_size, tokenizers=hf_version)  # no number token, no cap
        if self._hf is not None:
            settings["model_sha256"] = hashlib.sha256(self._json.encode("utf-8")).hexdigest()
        return settings

    # -- text to tokens and back -----------------------------------------------------------------

    def tokenize(self, text: str, line_ends: bool = True) -> list[str]:
        tokens, which = self._units(text, line_ends)
        return list(itertools.chain.from_iterable(map(tokens.__getitem__, which)))

    def provisional_ids(self, text: str, provisional: Mapping[str, int], line_ends: bool = True) -> np.ndarray:
        """As `tokenize`, without a string per token: each distinct unit's ids once, then one gather."""
        tokens, which = self._units(text, line_ends)
        flat = np.fromiter(
            map(provisional.__getitem__, itertools.chain.from_iterable(tokens)), dtype=np.int32
        )
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        starts = np.cumsum(lengths) - lengths  # where each distinct unit's ids begin in `flat`
        run = lengths[which]  # the length of every unit of the text, in order
        out_starts = np.cumsum(run) - run
        return flat[np.repeat(starts[which] - out_starts, run) + np.arange(int(run.sum()))]

    def line_cut(self, text: str, pos: int, endpos: int) -> int:
        """Before a run of spaces that follows a non-space character: a unit (`_UNIT`) starts there,
        and the units are encoded one by one."""
        if self._may_blank_a_piece():
            return -1
        found = _UNIT_CUT.search(text, pos, endpos)
        return -1 if found is None else found.start() + 1

    def _units(self, text: str, line_ends: bool = True) -> tuple[list[tuple[str, ...]], np.ndarray]:
        """The text cut into units (see `_UNIT`): the tokens of each distinct unit, in order of first
        appearance, and which distinct unit each unit of the text is (int64).

        Every kind here pre-tokenizes so that a piece never spans a space and a following non-space
        (Metaspace starts a piece at each space, WhitespaceSplit drops spaces, the byte-level regex
        attaches at most one space to the word after it), and special tokens hold no space: the
        pieces of a line are the pieces of its units, one after another. So each distinct unit is
        encoded once (a WikiText-2 train split has 2.1M units, 33k distinct) and a line end is the
        end-of-sentence token. tests/test_data_subword.py checks this against line-by-line encoding.
        """
        lines = self._lines(text)
        if not lines:
            return [], np.zeros(0, dtype=np.int64)
        number: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        units = self._text_units(lines, line_ends)
        which = np.fromiter(map(number.__getitem__, units), dtype=np.int64, count=len(units))
        memo = self._unit_memo
        if len(memo) > _UNIT_MEMO_SIZE:
            memo.clear()
        new = [u for u in number if u not in memo]
        for unit, encoding in zip(new, self._model().encode_batch(new, add_special_tokens=False)):
            memo[unit] = self._unit_tokens(unit, encoding)
        return [memo[u] for u in number], which

    def _text_units(self, lines: list[str], line_ends: bool) -> list[str]:
        """The units `_units` encodes one by one (see `_UNIT`), line ends among them."""
        return _UNIT.findall("\n".join(lines) + ("\n" if line_ends else ""))

    def _unit_tokens(self, unit: str, encoding: Any) -> tuple[str, ...]:
        if unit == "\n":
            return (self.eos_token,)
        ids, unk, unk_id = encoding.ids, self._unk, self._unk_id
        tokens = list(map(self._pieces.__getitem__, ids))
        if unk is not None and ids.count(unk_id) > unit.count(unk):
            # Unseen characters keep their own text: out-of-vocabulary tokens, named as such.
            for k, (i, (a, b)) in enumerate(zip(ids, encoding.offsets)):
                if i == unk_id and unit[a:b] != unk:
                    tokens[k] = unit[a:b]
        return tuple(tokens)

    def _decode_line(self, tokens: list[str]) -> str:
        """Runs of ordinary pieces go through the decoder; special tokens and out-of-vocabulary text
        stand as they are (the byte-level decoder would misread them)."""
        decoder, known = self._model().decoder, self._known
        out, run = [], []
        for token in tokens:
            if token == self._unk or token not in known:
                out.append(decoder.decode(run) if run else "")
                out.append(token)
                run = []
            else:
                run.append(token)
        out.append(decoder.decode(run) if run else "")
        return "".join(out)

    # -- the vocabulary --------------------------------------------------------------------------

    def build_vocab(
        self, train_tokens: Iterable[str], *, unk_token: str = "<unk>", heldout: Iterable[str] = ()
    ) -> Vocabulary:
        """Every piece of the trained model: end-of-sentence first, the unknown token when some token
        needs it, then by training frequency (pieces training never produced last)."""
        self._model()
        counts = train_tokens if isinstance(train_tokens, Counter) else Counter(train_tokens)
        known, unk = self._known, self._unk
        need_unk = unk is not None and (
            counts.get(unk, 0) > 0 or any(t not in known for t in counts) or any(t not in known for t in heldout)
        )
        rest = sorted((p for p in self._pieces if p not in (self.eos_token, unk)), key=lambda p: (-counts.get(p, 0), p))
        tokens = [self.eos_token] + ([unk] if need_unk else []) + rest
        return Vocabulary(tokens, eos=self.eos_token, unk=unk if unk is not None else unk_token)

    def check_vocab(self, vocab: Vocabulary) -> None:
        self._model()
        foreign = [t for t in vocab.tokens if t not in self._known]
        lacking = [p for p in self._pieces if p not in vocab.index and p != self._unk]
        if not foreign and not lacking and vocab.eos == self.eos_token:
            return
        problems = []
        if foreign:
            problems.append(f"{len(foreign)} of its tokens are no piece of the model ({_some(foreign)})")
        if lacking:
            problems.append(f"{len(lacking)} pieces are missing from it ({_some(lacking)})")
        if vocab.eos != self.eos_token:
            problems.append(f"its end-of-sentence token is {vocab.eos!r}, the tokenizer's {self.eos_token!r}")
        raise DataError(
            f"the vocabulary ({len(vocab)} tokens) was not made by this {self.kind} tokenizer's trained "
            f"model ({len(self._pieces)} pieces): {'; '.join(problems)}. The {MODEL_FILE} and vocab.json "
            "of one run belong together"
        )


def _some(tokens: list[str]) -> str:
    return ", ".join(map(repr, tokens[:5])) + (", ..." if len(tokens) > 5 else "")
