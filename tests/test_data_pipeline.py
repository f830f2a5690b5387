"""load_corpus on tiny corpora: splitting one file, n_chars, the token-id cache and its key."""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmbench.config import DatasetConfig
from lmbench.data.pipeline import load_corpus
from lmbench.data.tokenizers import CharTokenizer, WordTokenizer
from lmbench.data.vocab import Vocabulary
from lmbench.errors import ConfigError, DataError


def dataset(**fields) -> DatasetConfig:
    """A typed config node, as Hydra hands it to load_corpus."""
    return OmegaConf.structured(DatasetConfig(name="tiny", **fields))


def changed(cfg, **fields):
    return OmegaConf.merge(cfg, fields)


@pytest.fixture
def split_files(tmp_path):
    texts = {"train": "a b c\nb c\nç\n", "valid": "a b\n", "test": "c a\nd\n"}
    for split, text in texts.items():
        (tmp_path / f"{split}.txt").write_text(text, encoding="utf-8")
    cfg = dataset(**{s: str(tmp_path / f"{s}.txt") for s in texts})
    return cfg, texts


class CountingTokenizer(WordTokenizer):
    calls = 0

    def tokenize(self, text):
        type(self).calls += 1
        return super().tokenize(text)


def test_per_split_files_ids_vocab_and_n_chars(split_files, cache_dir):
    cfg, texts = split_files
    data = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    vocab = data.vocab
    # "d" occurs only in test, so the unknown token gets an id; vocabulary from train only.
    assert vocab.tokens == ["<eos>", "<unk>", "b", "c", "a", "ç"]
    assert vocab.decode(data.test.ids) == ["c", "a", "<eos>", "<unk>", "<eos>"]
    assert data.train.ids.dtype == np.uint16
    assert {s: data.splits[s].n_chars for s in texts} == {s: len(t) for s, t in texts.items()}
    assert data.train.n_chars == 12  # characters, not the 13 UTF-8 bytes
    assert data.info["tokens"] == {"train": 9, "valid": 3, "test": 5}
    assert data.info["files"]["valid"] == str(cfg.valid)


def test_one_file_cut_by_split_fractions(tmp_path, cache_dir):
    lines = [f"line {i}" for i in range(20)]
    path = tmp_path / "all.txt"
    path.write_text("\n".join(lines), encoding="utf-8")  # no final newline
    cfg = dataset(file=str(path), split_fractions=[0.8, 0.1, 0.1])
    data = load_corpus(cfg, CharTokenizer(eos_token="\n"), cache_dir=cache_dir)
    decoded = {s: "".join(data.vocab.decode(data.splits[s].ids)) for s in ("train", "valid", "test")}
    assert decoded["train"] == "\n".join(lines[:16]) + "\n"
    assert decoded["valid"] == "\n".join(lines[16:18]) + "\n"
    assert decoded["test"] == "\n".join(lines[18:]) + "\n"  # the tokenizer ends the last line
    assert sum(s.n_chars for s in data.splits.values()) == len(path.read_text())


@pytest.mark.parametrize(
    "fractions", [[0.5, 0.5], [1.2, -0.1, -0.1], [0.5, 0.3, 0.1], [0.98, 0.01, 0.01]]
)
def test_bad_split_fractions(tmp_path, cache_dir, fractions):
    path = tmp_path / "all.txt"
    path.write_text("".join(f"{i}\n" for i in range(20)))
    with pytest.raises(ConfigError, match="split_fractions"):
        load_corpus(dataset(file=str(path), split_fractions=fractions), WordTokenizer(), cache_dir=cache_dir)


def test_text_files_without_files_says_which_keys_to_set(compose_config, cache_dir):
    cfg = compose_config("dataset=text_files")
    with pytest.raises(ConfigError, match="dataset.train, dataset.valid and dataset.test") as info:
        load_corpus(cfg.dataset, instantiate(cfg.tokenizer), cache_dir=cache_dir)
    assert "dataset.file" in str(info.value)
    cfg = compose_config("dataset=text_files", "dataset.train=a.txt")
    with pytest.raises(ConfigError, match="dataset.valid, dataset.test"):
        load_corpus(cfg.dataset, instantiate(cfg.tokenizer), cache_dir=cache_dir)


def test_composed_text_files_config(compose_config, split_files, cache_dir):
    cfg, _ = split_files
    composed = compose_config(
        "dataset=text_files", *(f"dataset.{s}={getattr(cfg, s)}" for s in ("train", "valid", "test"))
    )
    data = load_corpus(composed.dataset, instantiate(composed.tokenizer), cache_dir=cache_dir)
    assert len(data.vocab) == 6 and len(data.train) == 9


def test_second_call_loads_from_cache_without_tokenizing(split_files, cache_dir):
    cfg, _ = split_files
    CountingTokenizer.calls = 0
    first = load_corpus(cfg, CountingTokenizer(), cache_dir=cache_dir)
    assert first.info["from_cache"] is False and CountingTokenizer.calls == 3
    second = load_corpus(cfg, CountingTokenizer(), cache_dir=cache_dir)
    assert second.info["from_cache"] is True and CountingTokenizer.calls == 3
    assert second.cache_key == first.cache_key and second.vocab == first.vocab
    for s in first.splits:
        np.testing.assert_array_equal(second.splits[s].ids, first.splits[s].ids)
        assert second.splits[s].ids.dtype == first.splits[s].ids.dtype
        assert second.splits[s].n_chars == first.splits[s].n_chars
    # Written atomically: only the finished key folder, no temporary folder left behind.
    assert [p.name for p in (cache_dir / "ids").iterdir()] == [first.cache_key]


def test_cache_key_follows_tokenizer_settings_and_file_content(split_files, cache_dir):
    cfg, _ = split_files
    base = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    lower = load_corpus(cfg, WordTokenizer(lowercase=True), cache_dir=cache_dir)
    assert lower.cache_key != base.cache_key and lower.info["from_cache"] is False
    other_unk = load_corpus(changed(cfg, unk_token="<UNK>"), WordTokenizer(), cache_dir=cache_dir)
    assert other_unk.cache_key != base.cache_key and "<UNK>" in other_unk.vocab.tokens

    with open(cfg.valid, "a", encoding="utf-8") as f:
        f.write("b b\n")
    edited = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    assert edited.cache_key != base.cache_key and edited.info["from_cache"] is False
    assert len(edited.valid) == len(base.valid) + 3


def test_same_content_elsewhere_hits_the_cache(split_files, tmp_path, cache_dir):
    cfg, texts = split_files
    first = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    moved = tmp_path / "moved"
    moved.mkdir()
    for s, text in texts.items():
        (moved / f"{s}.txt").write_text(text, encoding="utf-8")
    cfg2 = dataset(data_dir=str(moved), train="train.txt", valid="valid.txt", test="test.txt")
    second = load_corpus(cfg2, WordTokenizer(), cache_dir=cache_dir)
    assert second.info["from_cache"] is True and second.cache_key == first.cache_key


def test_unreadable_cache_is_rebuilt(split_files, cache_dir, caplog):
    cfg, _ = split_files
    first = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    (cache_dir / "ids" / first.cache_key / "train.npy").write_bytes(b"garbage")
    again = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    assert again.info["from_cache"] is False and "unreadable" in caplog.text
    np.testing.assert_array_equal(again.train.ids, first.train.ids)
    assert load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir).info["from_cache"] is True


def test_cached_ids_overwritten_in_place_out_of_the_vocabulary_are_rebuilt(split_files, cache_dir, caplog):
    """Same shape and dtype, so the cache passed its checks; training then failed in the embedding
    lookup ("indices[0,0] = 65535 is not in [0, 10)")."""
    cfg, _ = split_files
    first = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    cached = np.load(cache_dir / "ids" / first.cache_key / "valid.npy", mmap_mode="r+")
    cached[:3] = np.iinfo(cached.dtype).max
    cached.flush()
    del cached
    again = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    assert again.info["from_cache"] is False and "valid.npy holds ids outside the vocabulary" in caplog.text
    np.testing.assert_array_equal(again.valid.ids, first.valid.ids)
    assert load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir).info["from_cache"] is True


def test_split_empty_after_tokenization_is_named(split_files, cache_dir):
    cfg, _ = split_files
    with open(cfg.valid, "w", encoding="utf-8") as f:
        f.write("... !\n")
    tok = WordTokenizer(strip_punctuation=True, drop_blank_lines=True)
    with pytest.raises(DataError, match=r"the valid split \(.*valid.txt\) has no tokens"):
        load_corpus(cfg, tok, cache_dir=cache_dir)


def test_encoding_errors_option(tmp_path, split_files, cache_dir):
    cfg, _ = split_files
    with open(cfg.test, "ab") as f:
        f.write(b"x\xffy\n")
    with pytest.raises(DataError, match="test.txt is not valid UTF-8"):
        load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    data = load_corpus(changed(cfg, encoding_errors="replace"), WordTokenizer(), cache_dir=cache_dir)
    assert data.vocab.decode(data.test.ids)[-2:] == ["<unk>", "<eos>"]  # "x\ufffdy" is unseen


def test_configured_checksum_is_enforced_for_local_files(split_files, cache_dir):
    cfg, _ = split_files
    good = hashlib.sha256(open(cfg.train, "rb").read()).hexdigest()
    load_corpus(changed(cfg, sha256={cfg.train: good}), WordTokenizer(), cache_dir=cache_dir)
    with pytest.raises(DataError, match="not the standard file"):
        load_corpus(changed(cfg, sha256={cfg.train: "0" * 64}), WordTokenizer(), cache_dir=cache_dir)


def test_a_given_vocabulary_encodes_counts_oov_and_keys_the_cache(split_files, cache_dir):
    cfg, _ = split_files
    own = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    assert own.info["oov"] == {"train": 0, "valid": 0, "test": 1}  # "d" only in test
    given = Vocabulary(["<eos>", "<unk>", "a", "b"], eos="<eos>", unk="<unk>")
    data = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir, vocab=given)
    assert data.vocab == given and data.cache_key != own.cache_key
    assert data.vocab.decode(data.test.ids) == ["<unk>", "a", "<eos>", "<unk>", "<eos>"]
    assert data.info["oov"] == {"train": 3, "valid": 0, "test": 2}  # c, c, ç; c, d
    assert data.info["oov_rate"]["train"] == pytest.approx(3 / 9)
    again = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir, vocab=given)
    assert again.info["from_cache"] and again.info["oov"] == data.info["oov"]
    assert np.array_equal(again.train.ids, data.train.ids)

    without_unk = Vocabulary(["<eos>", "a", "b", "c", "ç"], eos="<eos>", unk="<unk>")
    with pytest.raises(DataError, match=r"the test split .* 1 token\(s\) .* no unknown token .*'d'"):
        load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir, vocab=without_unk)


def test_encoding_in_chunks_gives_the_ids_of_the_whole_text(split_files, cache_dir, tmp_path, monkeypatch):
    """Chunks of a few characters (cut at line ends) give the same vocabulary, ids and OOV counts."""
    import lmbench.data.pipeline as pipeline

    cfg, _ = split_files
    whole = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    monkeypatch.setattr(pipeline, "ENCODE_CHUNK", 2)
    chunked = load_corpus(cfg, WordTokenizer(), cache_dir=tmp_path / "other_cache")
    assert not chunked.info["from_cache"] and chunked.vocab == whole.vocab
    assert chunked.info["oov"] == whole.info["oov"] == {"train": 0, "valid": 0, "test": 1}
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(chunked.splits[split].ids, whole.splits[split].ids)
    assert list(pipeline._line_chunks("a b\nc\nd")) == [("a b\n", True), ("c\nd", True)]  # each >= 2 characters
    assert list(pipeline._line_chunks("")) == [("", True)]  # one empty line: one eos, as tokenize("") gives


def test_cached_ids_are_memory_mapped_and_batching_does_not_copy_them(tmp_path, cache_dir):
    """A cache hit maps the .npy files read-only instead of reading them; int32 ids (a vocabulary
    above 65,536 tokens) are laid out as BPTT streams without a copy."""
    from lmbench.data.batching import as_streams

    words = [f"w{i}" for i in range(70_000)]
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text(" ".join(words) + "\n", encoding="utf-8")
    cfg = dataset(**{s: str(tmp_path / f"{s}.txt") for s in ("train", "valid", "test")})
    cold = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    warm = load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    assert warm.info["from_cache"] and isinstance(warm.train.ids, np.memmap)
    assert not warm.train.ids.flags.writeable and warm.train.ids.dtype == np.int32
    np.testing.assert_array_equal(warm.train.ids, cold.train.ids)
    streams = as_streams(warm.train.ids, batch_size=4, bptt=35)
    assert np.shares_memory(streams, warm.train.ids) and streams.shape == (4, 70_001 // 4)


LONG_LINES = [
    "the cat  sat\ton the mat " * 40 + "end",  # one line, no line end
    "short line\n" + " ".join(f"w{i % 17}" for i in range(500)) + "\n\n  x y  \n" + "z " * 300 + "\n",
    "  ΟΔΟΣ ΟΔΟΣ.  " * 50 + "\n" + "ab" * 400,  # Greek final sigma when lowercased; a line without spaces
    "!!! ... ??? " * 60 + "\n" + "12,000 3.5 x " * 40,  # punctuation-only words, numbers
]


@pytest.mark.parametrize("make", [
    lambda: WordTokenizer(),
    lambda: WordTokenizer(lowercase=True, strip_punctuation=True, number_token="<num>"),
    lambda: WordTokenizer(drop_blank_lines=True, strip_punctuation=True),
    lambda: CharTokenizer(),
    lambda: CharTokenizer(lowercase=True, drop_blank_lines=True),
])
@pytest.mark.parametrize("text", LONG_LINES)
def test_a_very_long_line_is_cut_into_pieces_with_the_same_tokens(monkeypatch, make, text):
    """A corpus on one line was one encoding chunk, every token string of it held at once (a 50 MB
    line: +788 MB); now it is cut inside the line where the tokenizer says its tokens stay the same."""
    import lmbench.data.pipeline as pipeline

    tokenizer = make()
    whole = tokenizer.tokenize(text)
    monkeypatch.setattr(pipeline, "ENCODE_CHUNK", 16)
    pieces = list(pipeline._line_chunks(text, tokenizer))
    assert "".join(piece for piece, _ in pieces) == text
    cut_inside = sum(not ends for _, ends in pieces)
    assert cut_inside > 5 or (tokenizer.strip_punctuation and tokenizer.drop_blank_lines and cut_inside == 0)
    chunked = [t for piece, ends in pieces for t in tokenizer.tokenize(piece, ends)]
    assert chunked == whole
    provisional: defaultdict = defaultdict(itertools.count().__next__)
    ids = np.concatenate([tokenizer.provisional_ids(piece, provisional, ends) for piece, ends in pieces])
    assert [list(provisional)[i] for i in ids] == whole


def test_words_of_a_very_long_line_are_counted_in_pieces(monkeypatch):
    """`line_measures` counted a line's words with `len(line.split())`: a string per word of a
    corpus on one line (8M words: 600 MB)."""
    import lmbench.data.text as text

    monkeypatch.setattr(text, "WORD_PIECE", 8)
    for line in ("a  b c " * 50, "   x", "abc" * 100, " a" * 77 + "  ", "", "ΟΔΟΣ\u3000ab\u2028c " * 30):
        assert text.count_words(line) == len(line.split())


def test_a_tokenizer_of_the_users_without_line_ends_keeps_its_lines_whole(monkeypatch):
    import lmbench.data.pipeline as pipeline

    monkeypatch.setattr(pipeline, "ENCODE_CHUNK", 4)
    assert pipeline.cuts_lines(WordTokenizer()) and not pipeline.cuts_lines(CountingTokenizer())
    line = "a b c d e f g h i j k l m n o p"
    assert list(pipeline._line_chunks(line, CountingTokenizer())) == [(line, True)]
