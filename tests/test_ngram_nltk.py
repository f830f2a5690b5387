"""Per-token log-probabilities equal NLTK 3.10's `nltk.lm` to 1e-9, given the same n-grams and V.

NLTK is fed exactly our n-grams: each training sentence `<s> w1 .. wn </s>` with every window of
length 2..order and the unigrams w1 .. </s> (`<s>` is context only, never a unigram). NLTK's
vocabulary holds our V names (eos as `</s>`, the never-seen id as NLTK's unk label) so that
len(vocab) == V. Contexts are passed as our model sees them: at most order-1 words, starting at `<s>`.

Add-k is compared with NLTK's Laplace/Lidstone unchanged. For the interpolated smoothers NLTK's
estimator is subclassed to apply exactly the differences documented in
`lmbench/models/ngram/smoothing.py`, and nothing else; everything else (counting, recursion, the
formulas of orders >= 2) is NLTK's own code.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import HELD_OUT, TRAIN, V, fitted
from nltk.lm import Laplace, Lidstone, Vocabulary
from nltk.lm.counter import NgramCounter
from nltk.lm.models import AbsoluteDiscountingInterpolated, KneserNeyInterpolated, WittenBellInterpolated
from nltk.lm.smoothing import AbsoluteDiscounting, KneserNey, WittenBell

NAMES = ["</s>"] + [f"w{i}" for i in range(1, V - 1)] + ["<unk>"]  # id V-1 (never seen) is unk


def sentences(ids: np.ndarray, reset: bool) -> list[list[str]]:
    """Token names with the start context: one list per sentence, or one for the whole stream."""
    words = [NAMES[i] for i in ids]
    if not reset:
        return [["</s>"] + words]  # the stream is preceded by one eos, an ordinary word here
    out, current = [], ["<s>"]
    for word in words:
        current.append(word)
        if word == "</s>":
            out.append(current)
            current = ["<s>"]
    return out + ([current] if len(current) > 1 else [])


def nltk_counter(order: int, reset: bool) -> NgramCounter:
    ngrams = []
    for sent in sentences(TRAIN, reset):
        grams = [(w,) for w in sent[1:]]
        grams += [tuple(sent[i : i + k]) for k in range(2, order + 1) for i in range(len(sent) - k + 1)]
        ngrams.append(grams)
    return NgramCounter(ngrams)


def nltk_vocabulary() -> Vocabulary:
    vocab = Vocabulary(NAMES[:-1], unk_label=NAMES[-1])
    assert len(vocab) == V
    return vocab


def held_out_events(order: int, reset: bool) -> list[tuple[str, tuple[str, ...]]]:
    """(word, context) for every token of HELD_OUT, in order."""
    events = []
    for sent in sentences(HELD_OUT, reset):
        for i in range(1, len(sent)):
            events.append((sent[i], tuple(sent[max(0, i - order + 1) : i])))
    return events


def unigram_distinct_and_total(counts: dict) -> tuple[int, int]:
    return sum(1 for c in counts.values() if c > 0), sum(counts.values())


class WittenBellUniformFloor(WittenBell):
    """NLTK's WittenBell; unigram level interpolated with uniform 1/V (NLTK: plain frequency)."""

    def unigram_score(self, word):
        distinct, total = unigram_distinct_and_total(self.counts.unigrams)
        gamma = distinct / (distinct + total)
        return (1 - gamma) * self.counts.unigrams.freq(word) + gamma / len(self.vocab)


class AbsoluteDiscountingUniformFloor(AbsoluteDiscounting):
    """NLTK's AbsoluteDiscounting; unigram level discounted and interpolated with uniform 1/V."""

    def unigram_score(self, word):
        distinct, total = unigram_distinct_and_total(self.counts.unigrams)
        alpha = max(self.counts.unigrams[word] - self.discount, 0) / total
        return alpha + self.discount * distinct / total / len(self.vocab)


class KneserNeyAsKenLM(KneserNey):
    """NLTK's KneserNey with KenLM's choices where they differ: raw counts for n-grams starting with
    `<s>` (NLTK: continuation counts, which divide by zero with a single `<s>`) and at order 1 of a
    unigram model; unigram level discounted and interpolated with uniform 1/V."""

    def alpha_gamma(self, word, context):
        if context[0] != "<s>":
            return super().alpha_gamma(word, context)
        saved, self._order = self._order, len(context) + 1  # NLTK's raw-count (top order) branch
        try:
            return super().alpha_gamma(word, context)
        finally:
            self._order = saved

    def unigram_counts(self) -> dict:
        if self._order == 1:
            return dict(self.counts.unigrams)
        if not hasattr(self, "_unigram_counts"):
            self._unigram_counts = {w: self._continuation_counts(w)[0] for w in self.vocab}
        return self._unigram_counts

    def discount_of(self, order: int, count: int) -> float:
        return self.discount if count > 0 else 0.0

    def unigram_score(self, word):
        counts = self.unigram_counts()
        total = sum(counts.values())
        gamma = sum(self.discount_of(1, c) for c in counts.values()) / total
        count = counts.get(word, 0)
        return (count - self.discount_of(1, count)) / total + gamma / len(self.vocab)


class ModifiedKneserNey(KneserNeyAsKenLM):
    """The above with Chen & Goodman's count-dependent discounts D1, D2, D3+ per order."""

    def __init__(self, vocabulary, counter, order, discounts: dict[int, tuple[float, float, float]]):
        super().__init__(vocabulary, counter, order)
        self.discounts = discounts

    def discount_of(self, order: int, count: int) -> float:
        return 0.0 if count == 0 else self.discounts[order][min(count, 3) - 1]

    def alpha_gamma(self, word, context):
        raw = len(context) + 1 == self._order or context[0] == "<s>"
        following = self.counts[context]
        counts = {w: following[w] if raw else self._continuation_counts(w, context)[0] for w in following}
        total = sum(counts.values())
        order = len(context) + 1
        gamma = sum(self.discount_of(order, c) for c in counts.values()) / total
        count = counts.get(word, 0)
        return (count - self.discount_of(order, count)) / total, gamma


def mkn_discounts(model, order: int) -> dict[int, tuple[float, float, float]]:
    names = ("D1", "D2", "D3plus")
    return {k: tuple(model.stats[f"discount/order{k}/{d}"] for d in names) for k in range(1, order + 1)}


def nltk_model(smoothing: str, order: int, reset: bool, ours):
    kwargs = {"vocabulary": nltk_vocabulary(), "counter": nltk_counter(order, reset)}
    if smoothing == "laplace":
        return Laplace(order, **kwargs)
    if smoothing == "lidstone":
        return Lidstone(0.3, order, **kwargs)
    if smoothing == "wb":
        lm = WittenBellInterpolated(order, **kwargs)
        lm.estimator = WittenBellUniformFloor(lm.vocab, lm.counts)
    elif smoothing == "absolute":
        lm = AbsoluteDiscountingInterpolated(order, discount=0.6, **kwargs)
        lm.estimator = AbsoluteDiscountingUniformFloor(lm.vocab, lm.counts, discount=0.6)
    elif smoothing == "kn":
        lm = KneserNeyInterpolated(order, discount=0.3, **kwargs)
        lm.estimator = KneserNeyAsKenLM(lm.vocab, lm.counts, order, discount=0.3)
    else:
        lm = KneserNeyInterpolated(order, **kwargs)
        lm.estimator = ModifiedKneserNey(lm.vocab, lm.counts, order, mkn_discounts(ours, order))
    return lm


OURS = {
    "laplace": ("addk", {"k": 1.0}),
    "lidstone": ("addk", {"k": 0.3}),
    "wb": ("wb", {}),
    "absolute": ("absolute", {"discount": 0.6}),
    "kn": ("kn", {"discount": 0.3}),
    "mkn": ("mkn", {}),
}
# KN's stream mode differs from NLTK by design (see counting.adjusted_counts), so it is compared in
# reset mode only; the raw-count smoothers in both.
CASES = [(s, o, True) for s in OURS for o in (1, 2, 3, 4)]
CASES += [(s, o, False) for s in ("laplace", "lidstone", "wb", "absolute") for o in (1, 2, 3, 4)]


@pytest.mark.parametrize("name,order,reset", CASES)
def test_log_probs_equal_nltk(name, order, reset):
    smoothing, kwargs = OURS[name]
    ours = fitted(smoothing, order, reset, **kwargs)
    theirs = nltk_model(name, order, reset, ours)
    expected = [np.log(theirs.unmasked_score(w, c)) for w, c in held_out_events(order, reset)]
    np.testing.assert_allclose(ours.score(HELD_OUT), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("order", (1, 2, 3, 4))
def test_estimated_discounts_follow_count_of_counts_of_nltk_counts(order):
    """D1, D2, D3+ from n1..n4 of the adjusted counts, computed here from NLTK's counter."""
    ours, kn = fitted("mkn", order), fitted("kn", order)
    counter = nltk_counter(order, True)
    estimator = KneserNey(nltk_vocabulary(), counter, order)
    for k in range(1, order + 1):
        if k == 1:
            grams = [((), w, c) for w, c in counter.unigrams.items()]
        else:
            grams = [(ctx, w, c) for ctx, following in counter[k].items() for w, c in following.items()]
        assert ours.stats[f"ngrams/order{k}"] == (V if k == 1 else len(grams))
        adjusted = [
            c if k == order or ctx[:1] == ("<s>",) else estimator._continuation_counts(w, ctx)[0]
            for ctx, w, c in grams
        ]
        n = [sum(1 for a in adjusted if a == j) for j in range(5)]
        discounts = [ours.stats[f"discount/order{k}/{d}"] for d in ("D1", "D2", "D3plus")]
        if 0 in n[1:4]:
            assert discounts == [0.5, 1.0, 1.5]  # KenLM's fallback
            continue
        y = n[1] / (n[1] + 2 * n[2])
        expected = [j - (j + 1) * y * n[j + 1] / n[j] for j in (1, 2, 3)]
        np.testing.assert_allclose(discounts, expected, rtol=1e-13)
        # The single KN discount is Y = n1 / (n1 + 2 n2), which equals D1.
        assert kn.stats[f"discount/order{k}"] == pytest.approx(y, rel=1e-13)
