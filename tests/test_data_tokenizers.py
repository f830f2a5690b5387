"""Tokenizers: built from the real conf/tokenizer YAMLs, every normalization option, eos handling."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from nltk.tokenize import TreebankWordTokenizer

from lmbench.config import check_target
from lmbench.data.tokenizers import CharTokenizer, NltkTokenizer, WordTokenizer
from lmbench.errors import ConfigError

TEXT = "The cat, the hat.\n  Two  words \n\nLast line\n"


@pytest.fixture
def tokenizer_from_conf(compose_config):
    def _build(*overrides: str):
        cfg = compose_config(*overrides)
        check_target(cfg.tokenizer, "tokenizer")
        return instantiate(cfg.tokenizer)

    return _build


def test_word_yaml_splits_on_whitespace_with_eos_per_line(tokenizer_from_conf):
    tok = tokenizer_from_conf("tokenizer=word")
    assert isinstance(tok, WordTokenizer)
    assert tok.tokenize(TEXT) == [
        "The", "cat,", "the", "hat.", "<eos>", "Two", "words", "<eos>", "<eos>", "Last", "line", "<eos>",
    ]
    # Without a final newline the last line is still one line (and gets its eos).
    assert tok.tokenize(TEXT.rstrip("\n")) == tok.tokenize(TEXT)


def test_char_yaml_stream_is_the_text(tokenizer_from_conf):
    tok = tokenizer_from_conf("tokenizer=char")
    assert isinstance(tok, CharTokenizer)
    assert tok.tokenize(TEXT) == list(TEXT)
    assert tok.detokenize(tok.tokenize(TEXT)) == TEXT
    assert tok.tokenize("ab") == ["a", "b", "\n"]


def test_nltk_yaml_wraps_treebank(tokenizer_from_conf):
    tok = tokenizer_from_conf("tokenizer=nltk")
    assert isinstance(tok, NltkTokenizer)
    assert isinstance(tok.tokenizer, TreebankWordTokenizer)
    assert tok.tokenize("Don't stop.\nGo!\n") == ["Do", "n't", "stop", ".", "<eos>", "Go", "!", "<eos>"]
    assert tok.settings()["nltk_tokenizer"] == "nltk.tokenize.treebank.TreebankWordTokenizer"


def test_nltk_regexp_pattern_is_part_of_settings(tokenizer_from_conf):
    tok = tokenizer_from_conf(
        "tokenizer=nltk",
        "tokenizer.tokenizer._target_=nltk.tokenize.RegexpTokenizer",
        r'+tokenizer.tokenizer.pattern="\w+|[^\w\s]+"',  # as conf/tokenizer/nltk.yaml shows
    )
    before = tok.settings()
    assert tok.tokenize("ab, cd!?\n") == ["ab", ",", "cd", "!?", "<eos>"]
    assert before["pattern"] == r"\w+|[^\w\s]+"
    # RegexpTokenizer compiles lazily on first use; that must not change the cache key.
    assert tok.settings() == before


def test_misspelt_tokenizer_key_is_caught(compose_config):
    cfg = compose_config("tokenizer=nltk", "+tokenizer.lowercse=true")
    with pytest.raises(ConfigError, match="Did you mean tokenizer.lowercase"):
        check_target(cfg.tokenizer, "tokenizer")


def test_nltk_needs_a_tokenize_method():
    with pytest.raises(ConfigError, match="tokenize"):
        NltkTokenizer(object())


def test_lowercase():
    assert WordTokenizer(lowercase=True).tokenize("The CAT\n") == ["the", "cat", "<eos>"]


def test_strip_punctuation_removes_unicode_punctuation_only():
    tok = WordTokenizer(strip_punctuation=True)
    line = "« Hello, world! » — it's <unk> $5 … a-b\n"
    assert tok.tokenize(line) == ["Hello", "world", "its", "<unk>", "$5", "ab", "<eos>"]


def test_number_token_replaces_whole_numbers_only():
    tok = WordTokenizer(number_token="N")
    text = "3 3.5 1,000 -2 +7 .5 x3 3rd 12,34 1.2.3 3. - 2024\n"
    assert tok.tokenize(text) == [
        "N", "N", "N", "N", "N", "N", "x3", "3rd", "12,34", "1.2.3", "3.", "-", "N", "<eos>",
    ]


def test_normalization_order_punctuation_before_numbers():
    # "1,000!" is a number only once punctuation (both "," and "!") is gone: "1000".
    assert WordTokenizer(number_token="N").tokenize("1,000!\n") == ["1,000!", "<eos>"]
    tok = WordTokenizer(strip_punctuation=True, number_token="N", lowercase=True)
    assert tok.tokenize("Price: 1,000!\n") == ["price", "N", "<eos>"]


def test_drop_blank_lines_after_normalization():
    text = "a\n \n\n...\nb\n"
    assert WordTokenizer().tokenize(text) == ["a", "<eos>", "<eos>", "<eos>", "...", "<eos>", "b", "<eos>"]
    tok = WordTokenizer(drop_blank_lines=True, strip_punctuation=True)
    assert tok.tokenize(text) == ["a", "<eos>", "b", "<eos>"]


def test_add_eos_false_still_keeps_eos_in_vocabulary():
    tok = WordTokenizer(add_eos=False)
    tokens = tok.tokenize("a b\nc\n")
    assert tokens == ["a", "b", "c"]
    vocab = tok.build_vocab(tokens)
    assert vocab.eos_id == 0 and vocab.tokens[0] == "<eos>"


@pytest.mark.parametrize("eos", ["", None, 5])
def test_eos_token_must_be_a_non_empty_string(eos):
    with pytest.raises(ConfigError, match="eos_token"):
        WordTokenizer(eos_token=eos)


@pytest.mark.parametrize("kwargs", [{"min_freq": 0}, {"max_size": 2}, {"number_token": ""}])
def test_bad_options_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        WordTokenizer(**kwargs)


def test_word_detokenize_round_trip():
    tok = WordTokenizer()
    text = "a  b\tc\n\nd\n"
    assert tok.detokenize(tok.tokenize(text)) == "a b c\n\nd\n"
    assert tok.tokenize(tok.detokenize(tok.tokenize(text))) == tok.tokenize(text)


def test_char_detokenize_with_another_eos():
    tok = CharTokenizer(eos_token="<eos>")
    tokens = tok.tokenize("ab\nc\n")
    assert tokens == ["a", "b", "<eos>", "c", "<eos>"]
    assert tok.detokenize(tokens) == "ab\nc\n"


@pytest.mark.parametrize(
    "change",
    [
        {"eos_token": "</s>"},
        {"add_eos": False},
        {"lowercase": True},
        {"strip_punctuation": True},
        {"number_token": "N"},
        {"drop_blank_lines": True},
        {"max_size": 100},
        {"min_freq": 2},
    ],
)
def test_every_option_changes_settings(change):
    assert WordTokenizer(**change).settings() != WordTokenizer().settings()


def test_settings_name_the_class():
    assert WordTokenizer().settings() != CharTokenizer().settings()
    assert CharTokenizer().settings()["class"] == "lmbench.data.tokenizers.CharTokenizer"
