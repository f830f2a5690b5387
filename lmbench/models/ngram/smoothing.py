"""Passes 3 and 4 of the estimator (KenLM's `discount` and `interpolate`): counts -> probabilities.

Notation: for order k, x(c w) is the count of the k-gram `c w` (raw, or Kneser-Ney adjusted), S(c)
= sum_w x(c w), and p_{k-1}(w | c') the full probability one order down (c' = c minus its first
word; order 0 is uniform 1/V over the V ids of the vocabulary, which include eos and unk but not
the start context). Every interpolated smoothing has the form

    p_k(w | c) = alpha(c w) + gamma(c) * p_{k-1}(w | c')     if c has continuations (S(c) > 0)
    p_k(w | c) = p_{k-1}(w | c')                              otherwise

  mkn       x = adjusted counts; alpha = (x - D_k(x)) / S(c);
            gamma = (D1 N1(c) + D2 N2(c) + D3+ N3+(c)) / S(c), Nj(c) = #w with x(c w) = j (3+: >= 3);
            D_k(x) = D1, D2, D3+ for x = 1, 2, >= 3, from order k's count-of-counts n1..n4 of x:
            Y = n1 / (n1 + 2 n2), Dj = j - (j+1) Y n_{j+1} / n_j   (Chen & Goodman eq. 26; KenLM).
  kn        as mkn with one discount D_k for every count: given, or Y of order k.
  absolute  as kn on raw counts (no adjustment); D given, or Y of order k's raw counts.
  wb        raw counts; gamma = N1+(c) / (N1+(c) + S(c)); alpha = (1 - gamma) x / S(c).
  addk      no interpolation: p(w | c) = (x(c w) + k) / (S(c) + k V) on raw counts, c being the
            longest context available (order-1 words, fewer at a sentence start).

Differences from NLTK 3.10 `nltk.lm`. tests/test_ngram_nltk.py matches NLTK per token to 1e-9: add-k
unchanged, the others with NLTK's estimator patched by exactly the unigram-level and KN-count
differences below. Where NLTK and the textbook differ, mkn and kn follow Chen & Goodman / KenLM:
that is the definition behind the published baselines this model is compared against (KenLM's PTB
perplexities), and NLTK's choices give -inf to unseen words or fail with a single `<s>`.
  * Unigram level: NLTK's WittenBell, AbsoluteDiscounting and KneserNey `unigram_score` is an
    undiscounted relative frequency (continuation counts for KN) that gives 0 to an unseen word
    (log-prob -inf, perplexity infinite). Here every order is interpolated down to uniform 1/V with
    the same formula as the other orders (Chen & Goodman; KenLM's --interpolate_unigrams), so any
    word of the vocabulary has a finite log-probability. Orders >= 2 are NLTK's formulas unchanged.
  * KN counts: NLTK uses continuation counts whenever the context is shorter than order-1, and
    with a single `<s>` (our padding, and KenLM's) a context starting with `<s>` has no left
    extension, so NLTK divides by zero. Here those n-grams keep raw counts, as KenLM does. NLTK's
    KN order-1 model also uses continuation counts; here the highest order always has raw counts.
  * KN gamma: NLTK counts the distinct words seen after c in raw counts, here those with adjusted
    count > 0. Every stored n-gram has an adjusted count >= 1, so the two agree.
  * KN in stream mode: NLTK would give the n-grams at the very start of the stream a continuation
    count of 0; here they get one left extension (see `counting.adjusted_counts`).
  * KN discount: NLTK uses one fixed discount (default 0.1) at all orders; "kn" here estimates one
    per order unless `discount` is given, and "mkn" (not in NLTK) three per order.
  * Absolute discounting: NLTK's default discount is 0.75; here None means Y per order.
  * Vocabulary size V (add-k denominator, uniform order 0): our V ids, i.e. words + eos + unk,
    never the start context. NLTK's len(vocab) counts whatever `vocabulary_text` held (with its
    padding helpers that includes `<s>`, and a corpus `<unk>` is counted twice, once as a word and
    once as NLTK's unk label); the tests build NLTK's vocabulary so that its length is V.
  * Add-k context: NLTK's Lidstone uses whatever context it is given (a longer one finds no counts
    and gives 1/V); here the context is always the last order-1 words, or fewer after `<s>`.
  * Padding: NLTK's `padded_everygram_pipeline` pads with order-1 `<s>` and order-1 `</s>`, so `</s>`
    is predicted order-1 times and `<s>` is counted as a unigram. Here a sentence is
    `<s> w1 .. wn </s>`: one start context (never predicted, never a unigram), one `</s>` (the eos
    id), as in KenLM/SRILM and the published PTB figures.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from lmbench import names
from lmbench.models.ngram.counting import OrderCounts

SMOOTHINGS = ("mkn", "kn", "wb", "absolute", "addk")
# KenLM's --discount_fallback values, used when the count-of-counts of an order cannot give valid
# discounts (tiny or artificial data, e.g. no n-gram seen exactly twice).
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


class DiscountFallbackWarning(UserWarning):
    """Discounts could not be estimated from the counts; fixed fallback values were used."""


@dataclass
class Estimate:
    """Natural-log probabilities per order, and statistics worth logging."""

    log_probs: list[np.ndarray]  # order k: log p_k(w | c) of every stored k-gram
    log_backoffs: list[np.ndarray]  # order k < N: log gamma of every stored k-gram as a context
    n_backoffs: int  # contexts that have continuations (those whose backoff is stored on purpose)
    stats: dict[str, float] = field(default_factory=dict)


# N-grams of one order estimated at once: bounds the estimator's temporaries (about ten float64
# arrays of this length) whatever the size of the order.
ESTIMATE_CHUNK = 1 << 21


def estimate(
    tables: list[OrderCounts],
    counts: list[np.ndarray],
    smoothing: str,
    discount: float | None,
    add_k: float,
    vocab_size: int,
) -> Estimate:
    """Probabilities and back-off weights of every order, lowest first (each needs the one below).

    Memory: an order is estimated in chunks of about `ESTIMATE_CHUNK` n-grams that hold whole
    contexts (an order's n-grams are sorted by context), so that every sum over a context's
    continuations is computed as a whole, in the same order as over the whole array: the same
    numbers as one pass, with temporaries of a chunk's size instead of an order's (at 50M tokens an
    order has ~13M n-grams, ~100 MB per float64 array). An order's probabilities become
    log-probabilities in place once the next order has read them.
    """
    order = len(tables)
    lower = np.array([1.0 / vocab_size])  # order 0: uniform over the vocabulary
    log_probs, log_backoffs, stats, n_backoffs = [], [], {}, 0
    for k in range(1, order + 1):
        table, x = tables[k - 1], counts[k - 1]
        n_contexts = 1 if k == 1 else len(tables[k - 2].keys)
        lookup = None if smoothing in ("wb", "addk") else _discounts(x, k, smoothing, discount, stats)
        probs, context_term = np.empty(len(x)), np.empty(n_contexts)
        for entries, contexts in _context_chunks(table.keys, k, n_contexts, vocab_size):
            parent = np.zeros(len(x), dtype=np.int64) if k == 1 else table.keys[entries] // vocab_size - contexts.start
            probs[entries], context_term[contexts], has_children = _estimate_chunk(
                x[entries], parent, lower[table.suffix[entries]], contexts.stop - contexts.start, smoothing, lookup,
                add_k, vocab_size)
            if k > 1:
                n_backoffs += int(has_children.sum())
        if k > 1:
            log_backoffs.append(np.log(context_term, out=context_term))
            np.log(lower, out=lower)  # order k-1, read for the last time above
        log_probs.append(probs)
        stats[names.ngram_count(k)] = float(len(probs))
        lower = probs
    np.log(lower, out=lower)
    return Estimate(log_probs, log_backoffs, n_backoffs, stats)


def _context_chunks(keys: np.ndarray, k: int, n_contexts: int, vocab_size: int):
    """(n-gram slice, context slice) pairs covering order k's n-grams and the n_contexts rows of
    order k-1, each n-gram in the chunk of its context (key // V), about ESTIMATE_CHUNK n-grams each."""
    if k == 1:
        yield slice(0, len(keys)), slice(0, 1)
        return
    c0, e0 = 0, 0
    while c0 < n_contexts:
        if e0 + ESTIMATE_CHUNK >= len(keys):
            c1, e1 = n_contexts, len(keys)
        else:
            c1 = max(int(keys[e0 + ESTIMATE_CHUNK]) // vocab_size, c0 + 1)
            e1 = int(np.searchsorted(keys, c1 * vocab_size))
        yield slice(e0, e1), slice(c0, c1)
        c0, e0 = c1, e1


def _estimate_chunk(counts, parent, lower, n_contexts: int, smoothing: str, lookup, add_k: float, vocab_size: int):
    """(p_k of each n-gram, the context term of each context, which contexts have continuations)
    for n-grams with raw or adjusted `counts`, context `parent` (0..n_contexts-1) and lower-order
    probability `lower` = p_{k-1}(w | c'); the context term is gamma (add-k: p of an unseen word)."""
    x = counts.astype(np.float64)
    total = np.bincount(parent, weights=x, minlength=n_contexts)
    has_children = total > 0
    if smoothing == "addk":
        # The "back-off" slot holds the probability of any word unseen after c (1/V for an unseen
        # context): add-k never consults a lower order.
        return (x + add_k) / (total[parent] + add_k * vocab_size), add_k / (total + add_k * vocab_size), has_children
    if smoothing == "wb":
        distinct = np.bincount(parent, weights=(x > 0), minlength=n_contexts)
        gamma = _safe_divide(distinct, distinct + total)
        probs = (1.0 - gamma[parent]) * _safe_divide(x, total[parent])  # alpha
    else:
        probs = lookup[np.minimum(counts, 3)]  # the discount of each count
        gamma = _safe_divide(np.bincount(parent, weights=probs, minlength=n_contexts), total)
        np.subtract(x, probs, out=probs)
        del x
        probs = _safe_divide(probs, total[parent], out=probs)  # alpha
    gamma = np.where(has_children, gamma, 1.0)  # no continuations: defer to order k-1
    lower_term = gamma[parent]
    lower_term *= lower
    probs += lower_term  # alpha + gamma * p_{k-1}
    return probs, gamma, has_children


def _safe_divide(num: np.ndarray, den: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """num / den, 0 where den == 0 (contexts without continuations; their gamma is replaced)."""
    if out is None:
        out = np.zeros_like(num, dtype=np.float64)
    else:
        out[den == 0] = 0.0
    return np.divide(num, den, out=out, where=den > 0)


def _discounts(x: np.ndarray, k: int, smoothing: str, discount: float | None, stats: dict[str, float]) -> np.ndarray:
    """The discount subtracted from a count of order k, looked up by min(count, 3) (0 for 0)."""
    if smoothing == "mkn":
        d1, d2, d3 = modified_kn_discounts(x, k)
        stats.update({names.ngram_discount(k, name): d for name, d in (("D1", d1), ("D2", d2), ("D3plus", d3))})
        return np.array([0.0, d1, d2, d3])
    d = single_discount(x, k) if discount is None else discount
    stats[names.ngram_discount(k)] = d
    return np.array([0.0, d, d, d])


def count_of_counts(x: np.ndarray) -> np.ndarray:
    """n[j] = number of n-grams with count j, for j = 0..4."""
    n = np.zeros(6, dtype=np.int64)
    for start in range(0, len(x), ESTIMATE_CHUNK):
        n += np.bincount(np.minimum(x[start : start + ESTIMATE_CHUNK], 5), minlength=6)
    return n[:5]


def modified_kn_discounts(x: np.ndarray, k: int) -> tuple[float, float, float]:
    """D1, D2, D3+ of Chen & Goodman (eq. 26), or KenLM's fallback when they are not valid."""
    n = count_of_counts(x)
    if n[1] > 0 and n[2] > 0 and n[3] > 0:
        y = n[1] / (n[1] + 2.0 * n[2])
        d = tuple(float(j - (j + 1) * y * n[j + 1] / n[j]) for j in (1, 2, 3))
        if all(0 < dj <= j for j, dj in zip((1, 2, 3), d)):
            return d
    warnings.warn(
        f"order {k}: count-of-counts n1..n4 = {n[1:].tolist()} give no valid modified Kneser-Ney "
        f"discounts (too little data); using KenLM's fallback {FALLBACK_DISCOUNTS}",
        DiscountFallbackWarning,
        stacklevel=4,
    )
    return FALLBACK_DISCOUNTS


def single_discount(x: np.ndarray, k: int) -> float:
    """D = n1 / (n1 + 2 n2) (Ney et al.), or KenLM's fallback D1 when it is not in (0, 1)."""
    n = count_of_counts(x)
    if n[1] > 0 and n[2] > 0:
        return float(n[1] / (n[1] + 2.0 * n[2]))
    warnings.warn(
        f"order {k}: no n-gram seen exactly {'once' if n[1] == 0 else 'twice'}, so the discount "
        f"cannot be estimated; using {FALLBACK_DISCOUNTS[0]}",
        DiscountFallbackWarning,
        stacklevel=4,
    )
    return FALLBACK_DISCOUNTS[0]
