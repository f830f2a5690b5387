"""The tokenizer of `model=pretrained` (data/pretrained.py): the checkpoint's tokenizer.json used as
it is, its pieces the vocabulary in id order, so that lmbench's ids of a text are the ids Hugging
Face `tokenizers` gives the same text; the line end is the piece "\\n" encodes to."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_tokenizer

from lmbench.data.pretrained import PretrainedTokenizer
from lmbench.errors import DataError

TEXT = " the cat sat on the mat\n a dog saw <unk> in N places\n\nthe end  of  it\n"


@pytest.fixture
def folder(tmp_path):
    tiny_tokenizer(300).save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_ids_are_the_checkpoint_tokenizers_and_text_round_trips(folder):
    from tokenizers import Tokenizer

    tok = PretrainedTokenizer().load_model(folder)
    hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab = tok.build_vocab({}, unk_token="<unk>")
    assert vocab.tokens == [hf.id_to_token(i) for i in range(300)] and tok.eos_token == "Ċ"
    ids = vocab.encode(tok.tokenize(TEXT))
    np.testing.assert_array_equal(ids, hf.encode(TEXT, add_special_tokens=False).ids)
    assert vocab.eos_id == hf.token_to_id("Ċ") and vocab.unk_id is None  # byte-level: nothing is unknown
    assert tok.detokenize(vocab.decode(ids)) == TEXT
    tok.check_vocab(vocab)
    assert tok.label == "pretrained-300" and PretrainedTokenizer().needs_fit and not tok.needs_fit


def test_a_missing_or_damaged_tokenizer_json_is_one_data_error(folder, tmp_path):
    with pytest.raises(DataError, match="has no readable tokenizer.json"):
        PretrainedTokenizer().load_model(tmp_path / "nowhere")
    (folder / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(DataError, match="is damaged and cannot be read"):
        PretrainedTokenizer().load_model(folder)
