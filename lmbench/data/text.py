"""Reading corpus text: UTF-8 only, with errors the user can act on.

A leading byte-order mark is dropped and CRLF line ends become LF, so the same corpus saved on
Windows or Unix gives the same tokens. Invalid UTF-8 is refused by default (silently replacing
bytes would change the text being benchmarked); `dataset.encoding_errors=replace` opts in to U+FFFD.
A file with NUL or other control bytes (all of C0 but tab, newline, vertical tab, form feed and
carriage return) is binary data, not text, and refused too, unless `dataset.allow_binary=true`.

`line_measures` measures a split's text as read, line by line: the units (characters, words,
UTF-8 bytes) that figures are divided by, whatever the tokenizer.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import numpy as np

from lmbench.errors import ConfigError, DataError

ENCODING_ERRORS = ("strict", "replace")
BINARY = re.compile("[\x00-\x08\x0e-\x1f]")  # control characters no text file holds


def check_encoding_errors(errors: str) -> None:
    if errors not in ENCODING_ERRORS:
        raise ConfigError(
            f"dataset.encoding_errors must be one of {'|'.join(ENCODING_ERRORS)}, got {errors!r}"
        )


def decode_text(data: bytes, path: str | Path, *, errors: str = "strict", allow_binary: bool = False) -> str:
    """Decode the bytes of the file `path` (named in errors only) as `read_text` does."""
    check_encoding_errors(errors)
    offset = 0
    if data.startswith(codecs.BOM_UTF8):
        offset = len(codecs.BOM_UTF8)
        data = data[offset:]
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as ex:
        bad = offset + ex.start
        line = data.count(b"\n", 0, ex.start) + 1
        raise DataError(
            f"{path} is not valid UTF-8: byte {bad} (line {line}) is {data[ex.start]:#04x} "
            f"({ex.reason}). Convert the file to UTF-8, or set dataset.encoding_errors=replace "
            f"to accept invalid bytes as U+FFFD."
        ) from None
    if not allow_binary and (found := BINARY.search(text)):
        at = found.start()
        line = text.count("\n", 0, at) + 1
        raise DataError(
            f"{path} is binary data, not text: character {at} (line {line}) is the control byte "
            f"{ord(found.group()):#04x}. Name a text file, or set dataset.allow_binary=true to read such "
            "bytes as ordinary characters."
        )
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text or text.isspace():
        raise DataError(f"{path} is empty or contains only whitespace; a corpus file needs text")
    return text


def read_text(path: str | Path, *, errors: str = "strict", allow_binary: bool = False) -> str:
    """The text of a UTF-8 file (BOM stripped, CRLF read as LF); DataError if invalid, binary or
    empty."""
    check_encoding_errors(errors)
    return decode_text(Path(path).read_bytes(), path, errors=errors, allow_binary=allow_binary)


def line_measures(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Characters, words and UTF-8 bytes of each line of `text` (int64 arrays, one entry per line).

    Lines are cut as the tokenizers cut them: on "\\n", a final newline ending the last line rather
    than starting an empty one. A line's newline counts among its characters and bytes, so the arrays
    sum to the text's own counts; its words are `str.split()`'s (the word tokenizer's) plus one end of
    line, also for a last line without a newline, since every line gets an end-of-sentence token:
    so a word tokenizer with eos has exactly as many tokens as words, line by line.
    """
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    n = len(lines)
    chars = np.fromiter(map(len, lines), dtype=np.int64, count=n) + 1
    words = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=n) + 1
    if text.isascii():
        utf8 = chars.copy()
    else:
        utf8 = np.fromiter((len(line.encode("utf-8")) for line in lines), dtype=np.int64, count=n) + 1
    if n and not text.endswith("\n"):  # the last line has no newline to count
        chars[-1] -= 1
        utf8[-1] -= 1
    return chars, words, utf8
