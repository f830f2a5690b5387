"""Reading corpus text: UTF-8 only, with errors the user can act on.

A leading byte-order mark is dropped and CRLF line ends become LF, so the same corpus saved on
Windows or Unix gives the same tokens. Invalid UTF-8 is refused by default (silently replacing
bytes would change the text being benchmarked); `dataset.encoding_errors=replace` opts in to U+FFFD.
Binary data is refused too, unless `dataset.allow_binary=true`: a file with a NUL byte (what git
and grep call binary: no text file holds one), or one where control characters (C0 but tab,
newline, vertical tab, form feed and carriage return) are more than 1 % of the characters (an
executable's or a terminal log's escape codes). A few stray control characters in real text (a BEL
inside a quotation of a 9 MB corpus) are read as text, with one warning that counts them and names
the first one's line.

`line_measures` measures a split's text as read, line by line: the units (characters, words,
UTF-8 bytes) that figures are divided by, whatever the tokenizer.
"""

from __future__ import annotations

import codecs
import logging
import re
from pathlib import Path

import numpy as np

from lmbench.errors import ConfigError, DataError

log = logging.getLogger(__name__)
ENCODING_ERRORS = ("strict", "replace")
CONTROL = re.compile("[\x00-\x08\x0e-\x1f]")  # control characters text seldom holds
BINARY_SHARE = 0.01  # of the characters: above it, control characters make a file binary


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
    if not allow_binary:
        check_control_characters(text, path)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text or text.isspace():
        raise DataError(f"{path} is empty or contains only whitespace; a corpus file needs text")
    return text


def check_control_characters(text: str, path: str | Path) -> None:
    """DataError if `text` is binary data (see the module doc); a warning if it merely holds a few
    control characters."""
    found = CONTROL.search(text)
    if found is None:
        return
    nul = text.find("\x00")
    count = len(CONTROL.findall(text, found.start()))
    if nul < 0 and count <= BINARY_SHARE * len(text):
        log.warning(
            "%s holds %d control character%s (the first, %#04x, on line %d); read as text", path, count,
            "" if count == 1 else "s", ord(found.group()), text.count("\n", 0, found.start()) + 1,
        )
        return
    at = nul if nul >= 0 else found.start()
    why = "a NUL byte" if nul >= 0 else f"{count:,} control characters in {len(text):,}"
    raise DataError(
        f"{path} is binary data, not text ({why}): character {at} (line {text.count(chr(10), 0, at) + 1}) is "
        f"the control byte {ord(text[at]):#04x}. Name a text file, or set dataset.allow_binary=true to read "
        "such bytes as ordinary characters."
    )


def read_text(path: str | Path, *, errors: str = "strict", allow_binary: bool = False) -> str:
    """The text of a UTF-8 file (BOM stripped, CRLF read as LF); DataError if invalid, binary or
    empty."""
    check_encoding_errors(errors)
    return decode_text(Path(path).read_bytes(), path, errors=errors, allow_binary=allow_binary)


WORD_PIECE = 1 << 20  # characters of a line whose words are counted at once
_WORD_START = re.compile(r"\S\s+\S")


def count_words(line: str) -> int:
    """`len(line.split())`, without a string per word of a very long line (a corpus on one line: 8M
    words, 600 MB of strings): counted a piece at a time, each cut at the start of a word."""
    if len(line) <= 2 * WORD_PIECE:
        return len(line.split())
    total, start = 0, 0
    while True:
        found = _WORD_START.search(line, start + WORD_PIECE)
        if found is None:
            return total + len(line[start:].split())
        cut = found.end() - 1
        total += len(line[start:cut].split())
        start = cut


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
    words = np.fromiter(map(count_words, lines), dtype=np.int64, count=n) + 1
    if text.isascii():
        utf8 = chars.copy()
    else:
        utf8 = np.fromiter((len(line.encode("utf-8")) for line in lines), dtype=np.int64, count=n) + 1
    if n and not text.endswith("\n"):  # the last line has no newline to count
        chars[-1] -= 1
        utf8[-1] -= 1
    return chars, words, utf8
