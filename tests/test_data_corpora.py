"""The standard corpora through the real configs give the published vocabulary sizes and counts.

They need the files in $LMBENCH_DATA_DIR (see its README) and are skipped otherwise: a test run must
not download 17 MB.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from lmbench.data.pipeline import load_corpus

pytestmark = pytest.mark.corpus


def corpus_dir(subdir: str, *names: str) -> Path:
    root = os.environ.get("LMBENCH_DATA_DIR")
    if not root:
        pytest.skip("LMBENCH_DATA_DIR is not set; it must hold the standard corpora")
    folder = Path(root) / subdir
    absent = [n for n in names if not (folder / n).is_file()]
    if absent:
        pytest.skip(f"{', '.join(absent)} not in {folder}")
    return folder


@pytest.mark.parametrize(
    "dataset, subdir, names, vocab_size, tokens",
    [
        ("ptb", "ptb", ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), 10_000,
         {"train": 929_589, "valid": 73_760, "test": 82_430}),
        ("wikitext2", "wikitext-2", ("train.txt", "valid.txt", "test.txt"), 33_278,
         {"train": 2_088_628, "valid": 217_646, "test": 245_569}),
    ],
)
def test_word_level_corpora(compose_config, cache_dir, dataset, subdir, names, vocab_size, tokens):
    folder = corpus_dir(subdir, *names)
    cfg = compose_config(f"dataset={dataset}", "tokenizer=word")
    data = load_corpus(cfg.dataset, instantiate(cfg.tokenizer), cache_dir=cache_dir)
    assert len(data.vocab) == vocab_size
    assert {s: len(split) for s, split in data.splits.items()} == tokens
    # The corpus's own <unk> is reused: eos, then <unk>, no second unknown token.
    assert data.vocab.tokens[:2] == ["<eos>", "<unk>"]
    assert data.train.ids.dtype == np.uint16
    for split, name in zip(("train", "valid", "test"), names):
        assert data.splits[split].n_chars == len((folder / name).read_text(encoding="utf-8"))


def test_tiny_shakespeare_characters(compose_config, cache_dir):
    folder = corpus_dir("tinyshakespeare", "input.txt")
    cfg = compose_config("dataset=tinyshakespeare", "tokenizer=char")
    data = load_corpus(cfg.dataset, instantiate(cfg.tokenizer), cache_dir=cache_dir)
    text = (folder / "input.txt").read_text(encoding="utf-8")
    # Every valid/test character occurs in train, so no unknown token: the usual 65.
    assert len(data.vocab) == 65 and data.vocab.unk_id is None
    assert sum(len(s) for s in data.splits.values()) == len(text) == 1_115_394
    assert sum(s.n_chars for s in data.splits.values()) == len(text)
    eos = data.vocab.eos_id
    lines = {name: int(np.count_nonzero(split.ids == eos)) for name, split in data.splits.items()}
    assert lines == {"train": 36_000, "valid": 2_000, "test": 2_000}
    # The character stream is the text itself.
    decoded = "".join(data.vocab.decode(np.concatenate([s.ids for s in data.splits.values()])))
    assert decoded == text


def test_standard_corpus_ignores_a_same_named_file_in_the_working_directory(tmp_path, monkeypatch):
    """dataset=wikitext2 run from a folder holding the user's own train.txt still reads the corpus."""
    from types import SimpleNamespace

    from lmbench.data.corpora import locate_corpus

    corpus = tmp_path / "data" / "wt"
    corpus.mkdir(parents=True)
    for name in ("train.txt", "valid.txt", "test.txt"):
        (corpus / name).write_text("corpus\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.txt").write_text("someone else's file\n")
    monkeypatch.chdir(work)
    cfg = SimpleNamespace(
        name="wt", subdir="wt", train="train.txt", valid="valid.txt", test="test.txt", file=None,
        split_fractions=[0.9, 0.05, 0.05], url=None, sha256={}, data_dir=str(tmp_path / "data"),
    )
    files = locate_corpus(cfg, tmp_path / "cache")
    assert files.paths["train"] == (corpus / "train.txt").resolve()


@pytest.mark.parametrize("kind", ["a named pipe (FIFO)", "a character device", "a folder"])
def test_a_corpus_path_that_exists_but_is_no_file_says_what_it_is(tmp_path, monkeypatch, kind):
    """It used to say "Cannot find <path>" and advise putting the file where it already was."""
    from types import SimpleNamespace

    from lmbench.data.corpora import locate_corpus
    from lmbench.errors import DataError

    for name in ("valid.txt", "test.txt"):
        (tmp_path / name).write_text("text\n")
    odd = {"a named pipe (FIFO)": tmp_path / "train.txt", "a character device": Path(os.devnull),
           "a folder": tmp_path / "train.txt"}[kind]
    if kind == "a named pipe (FIFO)":
        os.mkfifo(odd)
    elif kind == "a folder":
        odd.mkdir()
    monkeypatch.chdir(tmp_path)
    for train in (str(odd), odd.name if odd.parent == tmp_path else None):  # absolute, and found in the cwd
        if train is None:
            continue
        cfg = SimpleNamespace(name="mine", subdir=None, train=train, valid="valid.txt", test="test.txt", file=None,
                              split_fractions=None, url=None, sha256={}, data_dir=None)
        with pytest.raises(DataError) as caught:
            locate_corpus(cfg, tmp_path / "cache")
        assert str(caught.value).startswith(f"{train} (a file of the 'mine' corpus) is {kind}, not a")
        assert "Cannot find" not in str(caught.value)
