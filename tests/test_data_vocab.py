"""Vocabulary: deterministic order, size caps, the unknown token only when needed, save/load."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lmbench.data.tokenizers import WordTokenizer
from lmbench.data.vocab import Vocabulary
from lmbench.errors import ConfigError, DataError

COUNTS = Counter({"the": 5, "b": 2, "a": 2, "z": 1, "<eos>": 3})


def test_order_specials_then_frequency_then_string():
    vocab = Vocabulary.build(COUNTS, eos="<eos>", unk="<unk>")
    assert vocab.tokens == ["<eos>", "the", "a", "b", "z"]
    assert vocab.eos_id == 0


def test_corpus_unk_is_reused_not_duplicated():
    counts = COUNTS + Counter({"<unk>": 9})
    vocab = Vocabulary.build(counts, eos="<eos>", unk="<unk>")
    assert vocab.tokens == ["<eos>", "<unk>", "the", "a", "b", "z"]
    assert vocab.unk_id == 1


def test_no_unk_when_nothing_needs_it():
    vocab = Vocabulary.build(COUNTS, eos="<eos>", unk="<unk>", heldout={"the", "a", "<eos>"})
    assert vocab.unk_id is None and "<unk>" not in vocab.tokens
    with pytest.raises(DataError, match="'q' is not in the vocabulary"):
        vocab.encode(["the", "q"])


@pytest.mark.parametrize("heldout", [{"the", "new"}, {"<unk>"}])
def test_unk_added_for_unseen_heldout_tokens(heldout):
    vocab = Vocabulary.build(COUNTS, eos="<eos>", unk="<unk>", heldout=heldout)
    assert vocab.tokens == ["<eos>", "<unk>", "the", "a", "b", "z"]
    assert vocab.encode(["new", "<unk>", "the"]).tolist() == [1, 1, 2]


def test_min_freq_drops_rare_tokens_to_unk():
    vocab = Vocabulary.build(COUNTS, eos="<eos>", unk="<unk>", min_freq=2)
    assert vocab.tokens == ["<eos>", "<unk>", "the", "a", "b"]
    assert vocab.encode(["z", "a"]).tolist() == [vocab.unk_id, 3]


def test_max_size_counts_specials_and_adds_unk():
    vocab = Vocabulary.build(COUNTS, eos="<eos>", unk="<unk>", max_size=4)
    assert vocab.tokens == ["<eos>", "<unk>", "the", "a"]
    # A cap the vocabulary already fits in changes nothing.
    assert Vocabulary.build(COUNTS, eos="<eos>", unk="<unk>", max_size=5).tokens == [
        "<eos>", "the", "a", "b", "z"
    ]


def test_tokenizer_caps_and_unk_token_reach_the_vocabulary():
    tok = WordTokenizer(max_size=3)
    vocab = tok.build_vocab(tok.tokenize("x x y z\n"), unk_token="<UNK>")
    assert vocab.tokens == ["<eos>", "<UNK>", "x"]


def test_impossible_settings_are_config_errors():
    with pytest.raises(ConfigError, match="max_size"):
        Vocabulary.build(COUNTS, eos="<eos>", unk="<unk>", max_size=2)
    with pytest.raises(ConfigError, match="differ"):
        Vocabulary.build(COUNTS, eos="<x>", unk="<x>")


def test_encode_decode_and_dtype():
    vocab = Vocabulary.build(COUNTS, eos="<eos>", unk="<unk>")
    ids = vocab.encode(iter(["a", "the", "<eos>"]))  # any iterable, not only lists
    assert ids.dtype == np.uint16 and ids.tolist() == [2, 1, 0]
    assert vocab.decode(ids) == ["a", "the", "<eos>"]
    big = Vocabulary.build(Counter({f"w{i}": 1 for i in range(70_000)}), eos="<eos>", unk="<unk>")
    assert big.dtype == np.int32


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build(COUNTS + Counter({"ü": 1}), eos="<eos>", unk="<unk>", min_freq=2)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.unk_id == vocab.unk_id
    no_unk = Vocabulary.build(COUNTS, eos="<eos>", unk="<unk>")
    no_unk.save(tmp_path / "v2.json")
    assert Vocabulary.load(tmp_path / "v2.json").unk_id is None
