"""Passes 1 and 2 of the estimator (KenLM's `count` and `adjust`): n-gram tables from a token stream.

Tables. Order k's n-grams live in one sorted int64 array of keys, a trie level:

    key(w_1..w_k) = row of w_1..w_{k-1} in order k-1's table * V + w_k        (k >= 2)

and order 1 is dense (row = word id, all V words present, unseen ones with count 0). Packing a row
number instead of the whole n-gram in base V keeps keys inside int64 at any order (10000**5 already
overflows uint64), and finding an n-gram is one `np.searchsorted` per order. Rows, counts and
suffixes are int32 below 2**31 tokens (`index_dtype`); keys stay int64.

Cost at scale (51M tokens, |V| = 250k, KN-5: `benchmarks/ngram_scale.py`): counting is four sorts
of up to 51M windows (`count_order`: one in-place `np.sort` of packed uint64 per bucket), about 80 %
of the estimator's time; its peak memory is the token stream, two window-row arrays (int32) and
one bucket of packed windows next to the tables built so far.

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

# Windows sorted at once (on average): bounds the sort's temporaries to a few hundred MB.
SORT_CHUNK = 1 << 23


@dataclass
class OrderCounts:
    """One order's table and what the later passes need to know about each of its n-grams."""

    keys: np.ndarray  # sorted int64 (order 1: arange(V))
    counts: np.ndarray  # raw occurrence counts (an index dtype, see `index_dtype`)
    suffix: np.ndarray  # row, in order k-1, of the n-gram minus its first word (order 1: zeros)
    first_is_eos: np.ndarray  # bool: the n-gram's first word is eos (reset mode: the start context)
    at_stream_start: int  # row of the window at position 0, -1 if there is none


def index_dtype(n: int) -> np.dtype:
    """The narrowest signed type for ids, rows and counts below `n` (-1 marks "no row")."""
    return np.dtype(np.int32) if n < np.iinfo(np.int32).max else np.dtype(np.int64)


def count_ngrams(seq: np.ndarray, order: int, vocab_size: int, eos_id: int, reset: bool) -> list[OrderCounts]:
    """Raw counts of every window of length 1..order of `seq` (integer ids, seq[0] == eos)."""
    n_words = len(seq)
    index = index_dtype(max(n_words, vocab_size))
    seq = np.asarray(seq).astype(index, copy=False)
    unigrams = OrderCounts(
        keys=np.arange(vocab_size, dtype=np.int64),
        counts=np.bincount(seq[1:], minlength=vocab_size).astype(index),
        suffix=np.zeros(vocab_size, dtype=index),
        first_is_eos=np.arange(vocab_size) == eos_id,
        at_stream_start=-1,  # position 0 is context only, not a unigram occurrence
    )
    tables = [unigrams]
    prev_rows = seq  # row of the window of length k-1 starting at each position (order 1: the word)
    for k in range(2, order + 1):
        n_windows = n_words - k + 1
        if n_windows <= 0:
            tables.append(_empty_order(index))
            continue
        counted = prev_rows[:n_windows] >= 0  # the window's first k-1 words are stored
        if reset and k >= 3:
            # The window's new interior position i+k-2 must not be a sentence boundary.
            counted &= seq[k - 2 : k - 2 + n_windows] != eos_id
        table, prev_rows = count_order(seq, prev_rows, counted, k, vocab_size, eos_id, len(tables[-1].keys),
                                       rows_wanted=k < order)
        tables.append(table)
    return tables


def count_order(
    seq: np.ndarray, prev_rows: np.ndarray, counted: np.ndarray, k: int, vocab_size: int, eos_id: int,
    n_prev: int, rows_wanted: bool,
) -> tuple[OrderCounts, np.ndarray | None]:
    """Order k's table from the windows seq[i : i+k] where `counted[i]`, and the row of every window
    (-1 where not counted; None unless `rows_wanted`: the next order builds on it). `prev_rows[i]` is
    the row of seq[i : i+k-1] in order k-1 (of `n_prev` n-grams), -1 if not stored.

    Sorting is the whole cost. Instead of `np.unique(..., return_inverse=True)` (a stable argsort and
    several copies of every array), each window becomes one uint64 holding its key in the high bits
    and its position in the low bits, and plain `np.sort` (in place, vectorized) orders those by
    key, then position. Windows are sorted in buckets of consecutive prefix rows (so of keys, in
    increasing order): keys and positions need more than 64 bits together at high orders, and
    buckets bound the temporaries to about `SORT_CHUNK` windows at a time.
    """
    index = seq.dtype
    n_windows = len(counted)
    prefix = prev_rows[:n_windows]
    rows = np.full(n_windows, -1, dtype=index) if rows_wanted else None
    n_counted = int(np.count_nonzero(counted))
    if n_counted == 0:
        return _empty_order(index), rows
    pos_bits = max(int(n_windows - 1).bit_length(), 1)
    # Prefix rows per bucket, a power of two: the keys of a bucket span 2**row_bits * V values.
    most = ((1 << (64 - pos_bits)) - 1) // vocab_size
    if most < 1:
        raise ValueError(f"{len(seq)} tokens and a vocabulary of {vocab_size} need keys wider than 64 bits")
    target = max(n_prev * SORT_CHUNK // n_counted, 1)  # about SORT_CHUNK windows per bucket
    row_bits = min(most.bit_length(), target.bit_length()) - 1
    last_word = seq[k - 1 :]
    keys, counts, first = [], [], []
    n_types = 0
    for base, positions in _buckets(prefix, counted, n_prev, row_bits):
        bucket_keys, positions = _sorted_windows(prefix, last_word, positions, base, vocab_size, pos_bits)
        new_type = np.empty(len(bucket_keys), dtype=bool)
        new_type[0] = True
        np.not_equal(bucket_keys[1:], bucket_keys[:-1], out=new_type[1:])
        heads = np.flatnonzero(new_type)
        del new_type
        keys.append(bucket_keys[heads] + base * vocab_size)
        counts.append(np.diff(heads, append=len(bucket_keys)).astype(index))
        if rows is not None:
            rows[positions] = np.repeat(np.arange(n_types, n_types + len(heads), dtype=index), counts[-1])
        first.append(positions[heads])  # one occurrence per type: all share suffix and first word
        n_types += len(heads)
        del positions, bucket_keys
    keys_all, first_all = np.concatenate(keys), np.concatenate(first)
    del keys, first
    at_stream_start = -1
    if counted[0]:  # the window at position 0
        at_stream_start = int(np.searchsorted(keys_all, int(prefix[0]) * vocab_size + int(seq[k - 1])))
    table = OrderCounts(keys_all, np.concatenate(counts), prev_rows[1:][first_all], seq[first_all] == eos_id,
                        at_stream_start)
    return table, rows


def _sorted_windows(prefix, last_word, positions, base: int, vocab_size: int, pos_bits: int):
    """(keys - base * V, positions) of one bucket's windows, ordered by key, then position: each
    window packed into one uint64 (its key relative to the bucket above `pos_bits` bits of position)
    and sorted in place."""
    packed = (prefix[positions] - base).astype(np.uint64)
    packed *= np.uint64(vocab_size)
    np.add(packed, last_word[positions], out=packed, casting="unsafe")
    packed <<= np.uint64(pos_bits)
    packed |= positions.view(np.uint64)
    del positions
    packed.sort()
    positions = (packed & np.uint64((1 << pos_bits) - 1)).view(np.int64)
    packed >>= np.uint64(pos_bits)
    return packed.view(np.int64), positions


def _buckets(prefix: np.ndarray, counted: np.ndarray, n_prev: int, row_bits: int):
    """(first prefix row, increasing positions) of each non-empty bucket: the counted windows whose
    prefix row is in [first, first + 2**row_bits)."""
    n_buckets = ((n_prev - 1) >> row_bits) + 1
    if n_buckets == 1:
        yield 0, np.flatnonzero(counted)
        return
    # One byte (or two) per window; a scan per bucket is cheaper than any sort by bucket.
    bucket_of = (prefix >> row_bits).astype(np.min_scalar_type(n_buckets))
    bucket_of[~counted] = n_buckets
    for bucket in range(n_buckets):
        positions = np.flatnonzero(bucket_of == bucket)
        if len(positions):
            yield bucket << row_bits, positions


def _empty_order(index: np.dtype) -> OrderCounts:
    empty = np.zeros(0, dtype=index)
    return OrderCounts(np.zeros(0, dtype=np.int64), empty, empty, np.zeros(0, dtype=bool), -1)


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
            distinct_left = np.where(table.first_is_eos, table.counts, distinct_left)
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
