"""A file that is binary data, not text, is refused with its name and offset, unless
dataset.allow_binary=true."""

from __future__ import annotations

import pytest
from helpers import compose_on

from lmbench.data.pipeline import load_corpus
from lmbench.data.text import decode_text, read_text
from lmbench.data.tokenizers import WordTokenizer
from lmbench.errors import DataError

CASES = [
    (b"the cat\x00sat\n", 7, 1, "0x00"),  # a NUL byte
    (b"a b\nc d\n\x7fELF\x02\x01\x01\n", 12, 3, "0x02"),  # an executable's header (DEL itself is printable)
    (b"\x1b[31mred\x1b[0m\n", 0, 1, "0x1b"),  # a terminal log's colour codes
    (b"ok\nok\n" * 50 + b"\x07bell\n", 300, 101, "0x07"),
]


@pytest.mark.parametrize("data,offset,line,byte", CASES, ids=["nul", "elf", "ansi", "bell"])
def test_control_bytes_are_refused_with_the_file_offset_and_line(tmp_path, data, offset, line, byte):
    path = tmp_path / "corpus.txt"
    path.write_bytes(data)
    with pytest.raises(
        DataError,
        match=rf"{path} is binary data, not text: character {offset} \(line {line}\) is the control byte {byte}",
    ):
        read_text(path)
    assert "\x00" in read_text(path, allow_binary=True) or byte != "0x00"


def test_tabs_form_feeds_and_crlf_are_text():
    assert decode_text(b"a\tb\x0bc\x0cd\r\ne\n", "x") == "a\tb\x0bc\x0cd\ne\n"


def test_a_corpus_with_a_nul_byte_stops_loading_unless_allowed(tmp_path):
    paths = {}
    for split in ("train", "valid", "test"):
        paths[split] = tmp_path / f"{split}.txt"
        paths[split].write_bytes(b"a b c\nb c a\n" + (b"c\x00a\n" if split == "valid" else b""))
    cfg = compose_on(tmp_path, paths)
    with pytest.raises(DataError, match=r"valid.txt is binary data.*dataset.allow_binary=true"):
        load_corpus(cfg.dataset, WordTokenizer(), cache_dir=tmp_path / "cache")
    cfg = compose_on(tmp_path, paths, "dataset.allow_binary=true")
    valid = load_corpus(cfg.dataset, WordTokenizer(), cache_dir=tmp_path / "cache").valid
    assert len(valid) == 10  # a b c, b c a, and the one word c\0a, each line ending in <eos>
