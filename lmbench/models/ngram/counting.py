"""Passes 1 and 2 of the estimator (KenLM's `count` and `adjust`): n-gram tables from a token stream.

Tables. Order k's n-grams live in one sorted int64 array of keys, a trie level:

    key(w_1..w_k) = row of w_1..w_{k-1} in order k-1's table * V + w_k        (k >= 2)

and order 1 is dense (row = word id, all V words present, unseen ones with count 0). Packing a row
number instead of the whole n-gram in base V keeps keys inside int64 at any order (10000**5 already
overflows uint64), and finding an n-gram is one `np.searchsorted` per order. Rows, counts and
suffixes are int32 below 2**31 tokens (`index_dtype`); keys stay int64.

Cost at scale (51M tokens, |V| = 250k, KN-5: `benchmarks/ngram_scale.py`): counting is four sorts
of up to 51M windows (`count_order`: one in-place `np.sort` of packed uint64 per bucket), about 85 %
of the estimator's time. Its peak memory is the token stream, two window-row arrays (int32), the
tables built so far and one bucket: buckets hold about `SORT_CHUNK` windows each by the prefixes'
occurrence counts, and an order's arrays are written in place into one allocation per array that
is shrunk at the end (no lists of parts to concatenate).

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
    # Prefix rows a bucket may span: its keys, relative to its first row, take 64 - pos_bits bits.
    most = ((1 << (64 - pos_bits)) - 1) // vocab_size
    if most < 1:
        raise ValueError(f"{len(seq)} tokens and a vocabulary of {vocab_size} need keys wider than 64 bits")
    last_word, suffix_rows = seq[k - 1 :], prev_rows[1:]
    table = _allocate(n_counted, index)  # at most one type per counted window; shrunk below
    n_types = 0
    for base, positions in _buckets(prefix, counted, n_prev, most):
        bucket_keys, positions = _sorted_windows(prefix, last_word, positions, base, vocab_size, pos_bits)
        new_type = np.empty(len(bucket_keys), dtype=bool)
        new_type[0] = True
        np.not_equal(bucket_keys[1:], bucket_keys[:-1], out=new_type[1:])
        heads = np.flatnonzero(new_type)
        del new_type
        types = slice(n_types, n_types + len(heads))
        np.add(bucket_keys[heads], base * vocab_size, out=table.keys[types])
        del bucket_keys
        table.counts[types] = np.diff(heads, append=len(positions))
        if rows is not None:
            rows[positions] = np.repeat(np.arange(types.start, types.stop, dtype=index), table.counts[types])
        first = positions[heads]  # one occurrence per type: all share suffix and first word
        table.suffix[types] = suffix_rows[first]
        np.equal(seq[first], eos_id, out=table.first_is_eos[types])
        n_types = types.stop
        del positions, heads, first
    for array in (table.keys, table.counts, table.suffix, table.first_is_eos):
        array.resize(n_types, refcheck=False)  # in place: the tail was never written
    if counted[0]:  # the window at position 0
        table.at_stream_start = int(np.searchsorted(table.keys, int(prefix[0]) * vocab_size + int(seq[k - 1])))
    return table, rows


def _allocate(n: int, index: np.dtype) -> OrderCounts:
    """An order's arrays for up to `n` n-grams. np.empty maps pages only when they are written, so
    the part of the bound that the order does not reach costs no memory, and `ndarray.resize`
    gives it back without copying what was written (realloc shrinks in place)."""
    return OrderCounts(np.empty(n, dtype=np.int64), np.empty(n, dtype=index), np.empty(n, dtype=index),
                       np.empty(n, dtype=bool), -1)


def _sorted_windows(prefix, last_word, positions, base: int, vocab_size: int, pos_bits: int):
    """(keys - base * V, positions) of one bucket's windows, ordered by key, then position: each
    window packed into one uint64 (its key relative to the bucket above `pos_bits` bits of position)
    and sorted in place."""
    packed = prefix[positions].astype(np.uint64)
    packed -= np.uint64(base)
    packed *= np.uint64(vocab_size)
    np.add(packed, last_word[positions], out=packed, casting="unsafe")
    packed <<= np.uint64(pos_bits)
    packed |= positions.view(np.uint64)
    del positions
    packed.sort()
    positions = (packed & np.uint64((1 << pos_bits) - 1)).view(np.int64)
    packed >>= np.uint64(pos_bits)
    return packed.view(np.int64), positions


def _buckets(prefix: np.ndarray, counted: np.ndarray, n_prev: int, most: int):
    """(first prefix row, increasing positions) of each non-empty bucket: the counted windows whose
    prefix row is in one range of at most `most` consecutive rows, about SORT_CHUNK windows each
    (more where a single prefix has more occurrences). Ranges follow the prefixes' occurrence
    counts, not their number: word ids are frequency-sorted, so equal ranges of order 2's prefixes
    would put nearly every window in the first bucket."""
    occurrences = np.zeros(n_prev, dtype=np.int64)
    for start in range(0, len(prefix), SORT_CHUNK):
        part = prefix[start : start + SORT_CHUNK]
        occurrences += np.bincount(part[counted[start : start + SORT_CHUNK]], minlength=n_prev)
    cumulative = np.cumsum(occurrences, out=occurrences)
    by_count = np.searchsorted(cumulative, np.arange(1, cumulative[-1] // SORT_CHUNK + 1) * SORT_CHUNK, side="right")
    bounds = np.unique(np.concatenate([by_count, np.arange(0, n_prev, most), [n_prev]]))
    del occurrences, cumulative, by_count
    n_buckets = len(bounds) - 1
    if n_buckets == 1:
        yield 0, np.flatnonzero(counted)
        return
    # Bucket of every prefix row, plus n_buckets at index -1 (a window whose prefix is not stored);
    # one byte (or two) per window: a scan per bucket is cheaper than any sort by bucket.
    small = np.min_scalar_type(n_buckets)
    bucket_of_row = np.append(np.repeat(np.arange(n_buckets, dtype=small), np.diff(bounds)), small.type(n_buckets))
    bucket_of = bucket_of_row[prefix]
    del bucket_of_row
    bucket_of[~counted] = n_buckets
    for bucket in range(n_buckets):
        positions = np.flatnonzero(bucket_of == bucket)
        if len(positions):
            yield int(bounds[bucket]), positions


def _empty_order(index: np.dtype) -> OrderCounts:
    empty = np.zeros(0, dtype=index)
    return OrderCounts(np.zeros(0, dtype=np.int64), empty, empty, np.zeros(0, dtype=bool), -1)


def adjusted_counts(tables: list[OrderCounts], eos_id: int, reset: bool) -> list[np.ndarray]:
    """Kneser-Ney's adjusted counts (Chen & Goodman; KenLM's `adjust_counts`), one array per order,
    in the tables' count dtype (no count of distinct left extensions exceeds the number of tokens).

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
            adjusted.append(table.counts)  # the table's own array, not a copy
            continue
        distinct_left = np.bincount(tables[k].suffix, minlength=len(table.keys)).astype(table.counts.dtype)
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
