"""Reading corpus text: BOM, CRLF, empty files and invalid UTF-8."""

from __future__ import annotations

import codecs

import pytest

from lmbench.data.text import read_text
from lmbench.errors import ConfigError, DataError


def test_bom_and_crlf_are_normalized(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(codecs.BOM_UTF8 + "héllo\r\nworld\r\n".encode())
    assert read_text(path) == "héllo\nworld\n"


@pytest.mark.parametrize("content", [b"", b" \n\t\r\n"])
def test_empty_or_blank_file_is_refused(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty.txt is empty"):
        read_text(path)


def test_invalid_utf8_names_file_byte_offset_and_the_fix(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(codecs.BOM_UTF8 + b"ok\nab\xffcd\n")
    with pytest.raises(DataError) as info:
        read_text(path)
    message = str(info.value)
    assert str(path) in message
    assert "byte 8 (line 2)" in message  # offset in the file, BOM included
    assert "dataset.encoding_errors=replace" in message


def test_replace_accepts_invalid_bytes(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ab\xffcd\n")
    assert read_text(path, errors="replace") == "ab\ufffdcd\n"


def test_other_error_policies_are_config_errors(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x\n")
    with pytest.raises(ConfigError, match=r"strict\|replace"):
        read_text(path, errors="ignore")
