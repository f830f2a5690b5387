"""Subword tokenizers, trained on the train split (`learned.LearnedTokenizer` says how):
`conf/tokenizer/{bpe,unigram,wordpiece,byte_bpe}.yaml`.

- `BpeTokenizer`, `UnigramTokenizer`: SentencePiece-style pieces that carry the space before them
  (`▁the`, `re`), so decoding is lossless, whitespace included. No space is invented at the start of
  a line: a line's first word is spelt without `▁` unless the line starts with a space (as PTB's and
  WikiText's lines do). A character never seen in train becomes the unknown token.
- `WordPieceTokenizer`: BERT's scheme on whitespace-separated words (`the`, `##re`); a word it
  cannot spell becomes the unknown token whole; decoding joins words by one space (whitespace is
  normalized, as the word tokenizer does).
- `ByteBpeTokenizer`: GPT-2's byte-level BPE over the UTF-8 bytes of the text (all 256 bytes are in
  its alphabet), so every text is encodable: no unknown token at all, unless the corpus itself writes
  one (then it stays one token, as the corpus's word). Decoding is lossless.

The constructors spell their arguments out (no `**kwargs`) so that `check_target` catches a
misspelt key. `vocab_size` is the size of the trained model, special tokens included; training that
cannot reach it exactly (too small for the alphabet, or more pieces than the text has) is a
`DataError` that says which sizes work. `min_freq`: a merge must occur this often in train
(the Unigram trainer has no such option).
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmbench.data.learned import LearnedTokenizer

SPACE = "▁"  # U+2581, SentencePiece's visible space


def _metaspace(tokenizer: Any) -> Any:
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never")
    tokenizer.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="never")
    return tokenizer


class BpeTokenizer(LearnedTokenizer):
    """Byte-pair encoding over characters (Sennrich et al. 2016), SentencePiece-style spaces."""

    kind = "bpe"

    def _new_model(self, unk_token: str | None) -> Any:
        return _metaspace(Tokenizer(models.BPE(unk_token=unk_token)))

    def _trainer(self, specials: list[str], vocab_size: int) -> Any:
        return trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=self.min_freq, special_tokens=specials, show_progress=False,
        )


class UnigramTokenizer(LearnedTokenizer):
    """The unigram language model of SentencePiece (Kudo 2018), SentencePiece-style spaces."""

    kind = "unigram"

    def __init__(
        self,
        vocab_size: int,
        eos_token: str = "<eos>",
        lowercase: bool = False,
        strip_punctuation: bool = False,
        drop_blank_lines: bool = False,
    ):
        super().__init__(vocab_size, 1, eos_token, lowercase, strip_punctuation, drop_blank_lines)

    def _new_model(self, unk_token: str | None) -> Any:
        return _metaspace(Tokenizer(models.Unigram()))

    def _trainer(self, specials: list[str], vocab_size: int) -> Any:
        return trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token=specials[1], show_progress=False,
        )

    def _train(self, segments: list[str], specials: list[str], unk_token: str, vocab_size: int | None = None) -> Any:
        """The library's EM drops pieces no segmentation uses, and may end well short of the size
        asked for (PTB train: 5,620 pieces for any size from 6,000 to 9,000, yet 10,000 for 10,000).
        Then it is asked for more and the best-scored pieces are kept, every single character and
        the special tokens included (the cut its own final step makes); short every time, the train
        split has no more (a `DataError` from `fit`)."""
        target, best = self.vocab_size, None
        for _ in range(4):
            hf = super()._train(segments, specials, unk_token, target)
            if hf.get_vocab_size() >= self.vocab_size:
                return _best_pieces(hf, self.vocab_size, len(specials))
            if best is not None and hf.get_vocab_size() <= best.get_vocab_size():
                break
            best, target = hf, target * 3 // 2
        return best


def _best_pieces(hf: Any, size: int, n_specials: int) -> Any:
    """A Unigram tokenizer cut to `size` entries: its special tokens, every single character, then
    the pieces of highest score (the library lists them by score)."""
    from tokenizers import Tokenizer

    data = json.loads(hf.to_str())
    vocab = data["model"]["vocab"]
    if len(vocab) == size:
        return hf
    keep = set(range(n_specials)) | {i for i, (piece, _) in enumerate(vocab) if len(piece) == 1}
    for i in range(n_specials, len(vocab)):
        if len(keep) >= size:
            break
        keep.add(i)
    data["model"]["vocab"] = [vocab[i] for i in sorted(keep)]  # the special tokens keep ids 0..n-1
    return Tokenizer.from_str(json.dumps(data))


class WordPieceTokenizer(LearnedTokenizer):
    """BERT's WordPiece on whitespace-separated words; continuation pieces start with `##`."""

    kind = "wordpiece"

    def _new_model(self, unk_token: str | None) -> Any:
        tokenizer = Tokenizer(models.WordPiece(unk_token=unk_token))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # cleanup would glue "a ." to "a."
        return tokenizer

    def _trainer(self, specials: list[str], vocab_size: int) -> Any:
        return trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=self.min_freq, special_tokens=specials, show_progress=False,
        )

    def _decode_line(self, tokens: list[str]) -> str:
        # Every token is a word or a piece of one; the decoder puts the spaces between words back.
        return self._model().decoder.decode(tokens) if tokens else ""


class ByteBpeTokenizer(LearnedTokenizer):
    """GPT-2's byte-level BPE: no unknown token, any text round-trips."""

    kind = "byte_bpe"
    min_vocab_size = 257  # the 256 bytes and the end-of-sentence token
    needs_unk = False

    def _minimum_reason(self) -> str:
        return "the 256 bytes and the end-of-sentence token"

    def _new_model(self, unk_token: str | None) -> Any:
        tokenizer = Tokenizer(models.BPE())
        # No space is added before a line's first word, so that decoding gives the text back.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tokenizer.decoder = decoders.ByteLevel()
        return tokenizer

    def _trainer(self, specials: list[str], vocab_size: int) -> Any:
        return trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=self.min_freq, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
