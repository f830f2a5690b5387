"""A file that is binary data, not text (a NUL byte, or control characters above 1 % of it), is
refused with its name and offset, unless dataset.allow_binary=true; a few stray control characters
in real text are read as text, with one warning."""

from __future__ import annotations

import logging

import pytest
from helpers import compose_on

from lmbench.data.pipeline import load_corpus
from lmbench.data.text import decode_text, read_text
from lmbench.data.tokenizers import WordTokenizer
from lmbench.errors import DataError

CASES = [
    (b"the cat\x00sat\n", 7, 1, "0x00", "a NUL byte"),
    (b"ok\nok\n" * 5000 + b"\x07bell\x00\n", 30005, 10001, "0x00", "a NUL byte"),  # wherever it is
    (b"a b\nc d\n\x7fELF\x02\x01\x01\n", 12, 3, "0x02", "3 control characters in 16"),  # an executable's
    (b"\x1b[31mred\x1b[0m\n", 0, 1, "0x1b", "2 control characters in 13"),  # a terminal log's colour codes
]


@pytest.mark.parametrize("data,offset,line,byte,why", CASES, ids=["nul", "late-nul", "elf", "ansi"])
def test_binary_data_is_refused_with_the_file_offset_and_line(tmp_path, data, offset, line, byte, why):
    path = tmp_path / "corpus.txt"
    path.write_bytes(data)
    with pytest.raises(DataError, match=(
        rf"{path} is binary data, not text \({why}\): character {offset} \(line {line}\) is the control byte {byte}"
    )):
        read_text(path)
    assert "\x00" in read_text(path, allow_binary=True) or byte != "0x00"


def test_a_few_stray_control_characters_in_real_text_are_read_with_one_warning(tmp_path, caplog):
    """A quotation with a BEL in it, four times in a long English text, refused as binary before."""
    lines = [f"line {i} of an ordinary English text, with \"quoted\" words in it" for i in range(2000)]
    for i in (700, 900, 1500, 1999):
        lines[i] = lines[i].replace('"quoted', '"\x07quoted')
    path = tmp_path / "english.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="lmbench.data.text"):
        text = read_text(path)
    assert text.count("\x07") == 4
    [warning] = caplog.messages
    assert warning == f"{path} holds 4 control characters (the first, 0x07, on line 701); read as text"


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
