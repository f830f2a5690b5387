"""Passes 1 and 2 of the estimator (KenLM's `count` and `adjust`): n-gram tables from a token stream.

Tables. Order k's n-grams live in one sorted int64 array of keys, a trie level:

    key(w_1..w_k) = row of w_1..w_{k-1} in order k-1's table * V + w_k        (k >= 2)

and order 1 is dense (row = word id, all V words present, unseen ones with count 0). Packing a row
number instead of the whole n-gram in base V keeps keys inside int64 at any order (10000**5 already
overflows uint64), and finding an n-gram is one `np.searchsorted` per order. Memory is a few arrays
of the number of distinct n-grams.

Windows. The stream is `seq = [eos] + ids`: the leading eos is the start context and is never
predicted, so unigram occurrences are positions 1.. . A k-gram occurrence is the window
seq[i : i+k].
  * reset_at_eos=True (sentences): a window may hold an eos only first (the `<s>` role: every eos
    also starts the next sentence) or last (the `</s>` role, predicted). So the key of an eos-first
    k-gram (k >= 2) always means `<s> ...`, and no window crosses a sentence boundary.
  * reset_at_eos=False (one stream): every window counts; eos is an ordinary word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OrderCounts:
    """One order's table and what the later passes need to know about each of its n-grams."""

    keys: np.ndarray  # sorted int64 (order 1: arange(V))
    counts: np.ndarray  # raw occurrence counts, int64
    suffix: np.ndarray  # row, in order k-1, of the n-gram minus its first word (order 1: zeros)
    first_word: np.ndarray  # first word id of each n-gram
    at_stream_start: int  # row of the window at position 0, -1 if there is none


def count_ngrams(seq: np.ndarray, order: int, vocab_size: int, eos_id: int, reset: bool) -> list[OrderCounts]:
    """Raw counts of every window of length 1..order of `seq` (int64, seq[0] == eos)."""
    n_words = len(seq)
    unigrams = OrderCounts(
        keys=np.arange(vocab_size, dtype=np.int64),
        counts=np.bincount(seq[1:], minlength=vocab_size).astype(np.int64),
        suffix=np.zeros(vocab_size, dtype=np.int64),
        first_word=np.arange(vocab_size, dtype=np.int64),
        at_stream_start=-1,  # position 0 is context only, not a unigram occurrence
    )
    tables = [unigrams]
    prev_rows = seq  # row of the window of length k-1 starting at each position (order 1: the word)
    for k in range(2, order + 1):
        n_windows = n_words - k + 1
        if n_windows <= 0:
            tables.append(_empty_order())
            continue
        valid = prev_rows[:n_windows] >= 0
        if reset and k >= 3:
            # The window's new interior position i+k-2 must not be a sentence boundary.
            valid &= seq[k - 2 : k - 2 + n_windows] != eos_id
        starts = np.flatnonzero(valid)
        window_keys = prev_rows[starts] * vocab_size + seq[starts + k - 1]
        keys, inverse, counts = np.unique(window_keys, return_inverse=True, return_counts=True)
        rows = np.full(n_windows, -1, dtype=np.int64)
        rows[starts] = inverse
        # Every occurrence of a type has the same suffix and first word; scatter any of them.
        suffix = np.empty(len(keys), dtype=np.int64)
        suffix[inverse] = prev_rows[starts + 1]
        first_word = np.empty(len(keys), dtype=np.int64)
        first_word[inverse] = seq[starts]
        tables.append(OrderCounts(keys, counts.astype(np.int64), suffix, first_word, int(rows[0])))
        prev_rows = rows
    return tables


def _empty_order() -> OrderCounts:
    empty = np.zeros(0, dtype=np.int64)
    return OrderCounts(empty, empty, empty, empty, -1)


def adjusted_counts(tables: list[OrderCounts], eos_id: int, reset: bool) -> list[np.ndarray]:
    """Kneser-Ney's adjusted counts (Chen & Goodman; KenLM's `adjust_counts`), one array per order.

    The highest order keeps raw counts. A lower-order n-gram's count is its number of distinct
    left extensions, i.e. of distinct (k+1)-gram types it is the suffix of, except:
      * reset mode: n-grams that start with the start context `<s>` can have no left extension, so
        they keep their raw counts (as KenLM does; otherwise sentence-initial contexts would be lost);
      * stream mode: the n-grams at the very start of the stream get one extra left extension (the
        unseen past before the stream), so that no stored n-gram ends with a zero count.
    """
    order = len(tables)
    adjusted = []
    for k in range(1, order + 1):
        table = tables[k - 1]
        if k == order:
            adjusted.append(table.counts.copy())
            continue
        distinct_left = np.bincount(tables[k].suffix, minlength=len(table.keys)).astype(np.int64)
        if k >= 2 and reset:
            distinct_left = np.where(table.first_word == eos_id, table.counts, distinct_left)
        elif k >= 2 and table.at_stream_start >= 0:
            distinct_left[table.at_stream_start] += 1
        adjusted.append(distinct_left)
    return adjusted


def window_rows(keys: list[np.ndarray], seq: np.ndarray, vocab_size: int) -> list[np.ndarray]:
    """rows[k-1][i] = row of the window seq[i : i+k] in order k's table, or -1 if it is not stored.

    `keys[k-1]` is order k's sorted key array (keys[0] unused: order 1 is dense). Every array has
    len(seq) entries; windows running past the end are -1. Windows that cross a sentence boundary
    in reset mode are never stored, so they come out as -1 without special handling.
    """
    n_words = len(seq)
    rows = [seq.astype(np.int64, copy=True)]
    for k in range(2, len(keys) + 1):
        cur = np.full(n_words, -1, dtype=np.int64)
        n_windows = n_words - k + 1
        table = keys[k - 1]
        if n_windows > 0 and len(table):
            starts = np.flatnonzero(rows[-1][:n_windows] >= 0)
            query = rows[-1][starts] * vocab_size + seq[starts + k - 1]
            found = np.searchsorted(table, query)
            found_clipped = np.minimum(found, len(table) - 1)
            hit = table[found_clipped] == query
            cur[starts[hit]] = found_clipped[hit]
        rows.append(cur)
    return rows
