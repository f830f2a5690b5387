"""The tokenizer of a pretrained checkpoint (`model=pretrained`): its folder's `tokenizer.json`, read by
Hugging Face `tokenizers` and used as it is (never trained): `conf/tokenizer/pretrained.yaml`.

A recipe until `load_model(folder)` reads the file (from the checkpoint folder when a run starts,
from the bundle when a trained run is loaded again: `save_model` writes the same file there). The
vocabulary is the tokenizer's pieces in its own id order, so lmbench's ids are the checkpoint's
embedding rows; `check_vocab` holds a vocabulary to exactly that.

Each line is encoded whole (a Llama tokenizer prepends its space marker to every text it encodes,
so the units the learned kinds encode one by one would not give the line's pieces), and the line
end is the end-of-sentence token of the lmbench convention. `eos_token` null picks it from the
tokenizer: the one piece that "\\n" encodes to where there is one (GPT-2's `Ċ`: the text is then
cut as the checkpoint saw running text), else the first of the usual end-of-text tokens it has
(`</s>` for Llama's SentencePiece tokenizers). The corpus's `<unk>` is plain text unless the
tokenizer has such a token.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HfTokenizer

from lmbench.data.learned import MODEL_FILE, LearnedTokenizer
from lmbench.data.vocab import Vocabulary
from lmbench.errors import DataError

END_OF_TEXT = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|im_end|>")


class PretrainedTokenizer(LearnedTokenizer):
    """A checkpoint's own tokenizer.json; `eos_token` null: chosen from it (see the module docstring)."""

    kind = "pretrained"
    needs_unk = False

    def __init__(
        self,
        eos_token: str | None = None,
        lowercase: bool = False,
        strip_punctuation: bool = False,
        drop_blank_lines: bool = False,
    ):
        super().__init__(self.min_vocab_size, 1, eos_token or "<eos>", lowercase, strip_punctuation, drop_blank_lines)
        self.chosen_eos = eos_token

    @property
    def label(self) -> str:
        return f"pretrained-{self.vocab_size}"

    def fit(self, train_text: str, unk_token: str) -> LearnedTokenizer:
        raise DataError(
            "the pretrained tokenizer is not learned from the corpus: it is the tokenizer.json of model.path "
            "(model=pretrained), read before the corpus"
        )

    def load_model(self, folder: str | Path) -> PretrainedTokenizer:
        path = Path(folder) / MODEL_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as ex:
            raise DataError(
                f"{folder} has no readable {MODEL_FILE} ({type(ex).__name__}: {ex}): a pretrained checkpoint's "
                "tokenizer comes with it, and lmbench cuts the text with it; download the whole folder"
            ) from None
        return self._with_model(text, str(path))

    def _with_model(self, model_json: str, where: str = MODEL_FILE) -> PretrainedTokenizer:
        try:
            hf = HfTokenizer.from_str(model_json)
        except Exception as ex:
            raise DataError(f"{where} is damaged and cannot be read by Hugging Face tokenizers: {ex}") from None
        pieces = [hf.id_to_token(i) for i in range(hf.get_vocab_size())]
        if None in pieces:
            raise DataError(f"{where} leaves ids without a piece; lmbench needs the ids 0..{len(pieces) - 1} all used")
        trained = copy.copy(self)
        trained.eos_token = self.chosen_eos or _line_end(hf, where)
        if trained.eos_token not in pieces:
            raise DataError(f"tokenizer.eos_token={trained.eos_token!r} is not a piece of {where}")
        unk = _model_field(model_json, "unk_token") or ""
        trained._hf, trained._json, trained._pieces, trained._known = hf, model_json, pieces, frozenset(pieces)
        trained._unk = unk if unk in trained._known else None
        trained._unk_id = -1 if trained._unk is None else pieces.index(unk)
        trained._unit_memo, trained.vocab_size = {}, len(pieces)
        return trained

    def _text_units(self, lines: list[str], line_ends: bool) -> list[str]:
        units = [unit for line in lines for unit in (line, "\n")]
        return units if line_ends else units[:-1]

    def line_cut(self, text: str, pos: int, endpos: int) -> int:
        return -1  # a line is encoded whole

    def build_vocab(self, train_tokens: Any, *, unk_token: str = "<unk>", heldout: Any = ()) -> Vocabulary:
        self._model()
        return Vocabulary(self._pieces, eos=self.eos_token, unk=self._unk or unk_token)

    def check_vocab(self, vocab: Vocabulary) -> None:
        self._model()
        if vocab.tokens != self._pieces or vocab.eos != self.eos_token:
            raise DataError(
                f"the vocabulary ({len(vocab)} tokens) is not the pretrained tokenizer's {len(self._pieces)} pieces "
                f"in their order; the {MODEL_FILE} and vocab.json of one run belong together"
            )


def _line_end(hf: Any, where: str) -> str:
    ids = hf.encode("\n", add_special_tokens=False).ids
    if len(ids) == 1:
        return hf.id_to_token(ids[0])
    for token in END_OF_TEXT:
        if hf.token_to_id(token) is not None:
            return token
    raise DataError(
        f"{where} encodes a line end as {len(ids)} pieces and has none of the end-of-text tokens "
        f"{', '.join(END_OF_TEXT)}: set tokenizer.eos_token to the piece that should end every line"
    )


def _model_field(model_json: str, key: str) -> Any:
    model = json.loads(model_json).get("model") or {}
    return model.get(key)
