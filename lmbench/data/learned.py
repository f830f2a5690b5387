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
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HfTokenizer
from tokenizers import __version__ as hf_version

from lmbench.data.tokenizers import Tokenizer
from lmbench.data.vocab import Vocabulary
from lmbench.errors import ConfigError, DataError

MODEL_FILE = "tokenizer.json"


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

    def tokenize(self, text: str) -> list[str]:
        hf, pieces, unk, unk_id, eos = self._model(), self._pieces, self._unk, self._unk_id, self.eos_token
        lines = self._lines(text)
        out: list[str] = []
        extend, append = out.extend, out.append
        for line, encoding in zip(lines, hf.encode_batch(lines, add_special_tokens=False)):
            ids = encoding.ids
            tokens = list(map(pieces.__getitem__, ids))
            if unk is not None and ids.count(unk_id) > line.count(unk):
                # Unseen characters keep their own text: out-of-vocabulary tokens, named as such.
                for k, (i, (a, b)) in enumerate(zip(ids, encoding.offsets)):
                    if i == unk_id and line[a:b] != unk:
                        tokens[k] = line[a:b]
            extend(tokens)
            append(eos)
        return out

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
