"""NGramLM on a small synthetic corpus: normalization, scoring, persistence, generation, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import EOS, HELD_OUT, TRAIN, V, fitted

import lmbench.models.ngram.model as ngram_model
from lmbench import names
from lmbench.errors import ConfigError, DataError
from lmbench.models.base import CountingModel
from lmbench.models.ngram import NGramLM
from lmbench.models.ngram.smoothing import SMOOTHINGS, DiscountFallbackWarning

ALL_SETTINGS = list(itertools.product(SMOOTHINGS, (1, 2, 3, 4), (True, False)))


def test_honours_the_model_contract():
    model = fitted("mkn", 3)
    assert isinstance(model, CountingModel)
    assert model.family == "ngram" and model.vocab_size == V


@pytest.mark.parametrize("smoothing,order,reset", ALL_SETTINGS)
def test_every_context_gives_a_distribution_summing_to_one(smoothing, order, reset):
    model = fitted(smoothing, order, reset)
    # Every history of the training stream (so every context seen in the data) and unseen ones.
    histories = [TRAIN[:t] for t in range(len(TRAIN) + 1)]
    histories += [np.array(h) for h in ([V - 1], [V - 1, V - 1, 3], [5, 5, 5, 5], [12, EOS, V - 1])]
    for history in histories:
        probs = model.prob_distribution(history)
        assert probs.shape == (V,) and np.all(probs > 0)
        assert abs(probs.sum() - 1.0) < 1e-9


@pytest.mark.parametrize("smoothing,order,reset", ALL_SETTINGS)
def test_score_agrees_with_prob_distribution(smoothing, order, reset):
    model = fitted(smoothing, order, reset)
    scores = model.score(HELD_OUT)
    assert scores.dtype == np.float64 and scores.shape == HELD_OUT.shape
    expected = [np.log(model.prob_distribution(HELD_OUT[:t])[HELD_OUT[t]]) for t in range(len(HELD_OUT))]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_scoring_in_chunks_changes_nothing(smoothing, monkeypatch):
    model = fitted(smoothing, 4)
    whole = model.score(HELD_OUT)
    seen = []
    monkeypatch.setattr(ngram_model, "SCORE_CHUNK", 5)  # chunks much shorter than a sentence
    np.testing.assert_array_equal(model.score(HELD_OUT, progress=seen.append), whole)
    assert sum(seen) == len(HELD_OUT) and len(seen) > 1


def test_reset_mode_scores_each_sentence_on_its_own():
    model = fitted("mkn", 4, reset=True)
    first, second = [3, 8, 8, EOS], [8, 3, EOS]
    together = model.score(np.array(first + second))
    np.testing.assert_array_equal(together[len(first):], model.score(np.array(second)))
    stream = fitted("mkn", 4, reset=False)
    assert not np.allclose(stream.score(np.array(first + second))[len(first):], stream.score(np.array(second)))


def test_unigram_model_matches_hand_computed_modified_kneser_ney():
    model = fitted("mkn", 1)
    counts = np.bincount(TRAIN, minlength=V).astype(float)
    n = np.bincount(np.minimum(counts, 5).astype(int), minlength=6)
    y = n[1] / (n[1] + 2 * n[2])
    d = {j: j - (j + 1) * y * n[j + 1] / n[j] for j in (1, 2, 3)}
    discount = np.select([counts == 0, counts == 1, counts == 2], [0, d[1], d[2]], d[3])
    expected = (counts - discount) / counts.sum() + discount.sum() / counts.sum() / V
    np.testing.assert_allclose(model.prob_distribution(np.array([5, 6])), expected, rtol=1e-13)


def test_empty_score_and_fit_statistics():
    model = fitted("mkn", 3)
    assert model.score(np.array([], dtype=np.int32)).shape == (0,)
    stats = model.fit(TRAIN)
    assert stats["ngrams/order1"] == V
    assert stats["ngrams/order2"] == len({(a, b) for a, b in zip(np.r_[EOS, TRAIN], TRAIN)})
    assert 0 < stats[names.ngram_discount(2, "D1")] < 1
    assert "num_params" not in stats and names.PARAMS not in stats  # the summary's model/params, as every family's
    # num_params = every stored probability + back-off weights of contexts with continuations.
    assert model.num_params() > sum(stats[f"ngrams/order{k}"] for k in (1, 2, 3))


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_save_load_round_trip_gives_identical_scores(smoothing, tmp_path):
    model = fitted(smoothing, 3, reset=smoothing != "wb")
    model.save(tmp_path / "lm")
    loaded = NGramLM.load(tmp_path / "lm")
    assert loaded.config() == model.config() and loaded.num_params() == model.num_params()
    np.testing.assert_array_equal(loaded.score(HELD_OUT), model.score(HELD_OUT))
    np.testing.assert_array_equal(
        loaded.generate(np.array([3]), 20, seed=7), model.generate(np.array([3]), 20, seed=7)
    )


def test_load_from_a_wrong_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="ngram.json is missing"):
        NGramLM.load(tmp_path)


def test_generation_is_repeatable_with_a_seed_and_respects_top_k():
    model = fitted("mkn", 3)
    prompt = np.array([3, 8])
    a = model.generate(prompt, 60, seed=123)
    assert a.shape == (60,) and a.min() >= 0 and a.max() < V
    np.testing.assert_array_equal(a, model.generate(prompt, 60, seed=123))
    assert not np.array_equal(a, model.generate(prompt, 60, seed=124))
    # top_k=1 is greedy decoding; with top_k=3 every token is among the 3 likeliest at its step.
    greedy = model.generate(prompt, 10, top_k=1, seed=1)
    history = list(prompt)
    for token in greedy:
        assert token == np.argmax(model.prob_distribution(np.array(history)))
        history.append(token)
    sampled = model.generate(prompt, 60, top_k=3, temperature=2.0, seed=5)
    history = list(prompt)
    for token in sampled:
        probs = model.prob_distribution(np.array(history))
        assert probs[token] >= np.sort(probs)[-3]  # ">=": ties with the 3rd likeliest may be drawn
        history.append(token)
    assert len(set(sampled.tolist())) > 1
    assert model.generate(np.array([], dtype=np.int64), 5, seed=0).shape == (5,)


def test_generation_arguments_are_checked():
    model = fitted("kn", 2)
    with pytest.raises(ConfigError, match="temperature"):
        model.generate(np.array([3]), 5, temperature=-1.0)  # 0 is greedy decoding (tests/test_generation.py)
    with pytest.raises(ConfigError, match="top_k"):
        model.generate(np.array([3]), 5, top_k=0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"order": 0}, "order must be an integer >= 1"),
        ({"smoothing": "kneser-ney"}, "valid: mkn, kn, wb, absolute, addk"),
        ({"smoothing": "kn", "discount": 0.0}, r"discount must be in \(0, 1\)"),
        ({"smoothing": "absolute", "discount": 1.0}, r"discount must be in \(0, 1\)"),
        ({"smoothing": "kn", "discount": -0.5}, r"discount must be in \(0, 1\)"),
        ({"smoothing": "mkn", "discount": 0.5}, "mkn estimates its three discounts"),
        ({"smoothing": "addk", "k": 0.0}, "k must be > 0"),
        ({"eos_id": V}, "eos_id=40 is not an id"),
    ],
)
def test_bad_config_is_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        NGramLM(**{"vocab_size": V, "eos_id": EOS, **kwargs})


@pytest.mark.parametrize(
    "ids,message",
    [
        (np.array([], dtype=np.int32), "empty training split"),
        (np.array([3, V, EOS]), "token id 40 at position 1 is outside the vocabulary"),
        (np.array([3, -1, EOS]), "token id -1 at position 1 is outside"),
        (np.array([3.0, 4.0]), "must be integers"),
        (np.array([[3, 4]]), "must be a 1-D array"),
    ],
)
def test_bad_training_ids_are_a_data_error(ids, message):
    with pytest.raises(DataError, match=message):
        NGramLM(V, EOS, order=2).fit(ids)


def test_order_larger_than_every_sentence_is_an_error_only_if_no_top_order_ngram_exists():
    short = np.array([3, EOS, 4, 5, EOS, EOS], dtype=np.int32)  # longest: "<s> 4 5 </s>"
    assert NGramLM(V, EOS, order=4, smoothing="wb").fit(short)["ngrams/order4"] == 1
    with pytest.raises(DataError, match="use model.order <= 4"):
        NGramLM(V, EOS, order=5, smoothing="wb").fit(short)
    # A stream has no sentences: only its total length matters.
    assert NGramLM(V, EOS, order=6, smoothing="wb", reset_at_eos=False).fit(short)["ngrams/order6"] == 2


def test_scoring_bad_ids_is_a_data_error_and_unfitted_use_is_a_bug():
    with pytest.raises(DataError, match="outside the vocabulary"):
        fitted("wb", 2).score(np.array([V + 3]))
    with pytest.raises(RuntimeError, match="not fitted"):
        NGramLM(V, EOS).score(np.array([3]))


def test_discount_fallback_is_announced():
    with pytest.warns(DiscountFallbackWarning, match="order 4"):
        NGramLM(V, EOS, order=4).fit(TRAIN)


def test_adjusted_counts_by_hand():
    """KN counts of two tiny corpora, worked out on paper (keys sort as row(prefix) * V + word)."""
    from lmbench.models.ngram.counting import adjusted_counts, count_ngrams

    # Sentences "1 2 </s>" and "1 </s>": bigrams <s>1 (x2), 1</s>, 12, 2</s>; trigrams <s>1</s>, <s>12, 12</s>.
    seq = np.array([EOS, 1, 2, EOS, 1, EOS])
    tables = count_ngrams(seq, 3, V, EOS, reset=True)
    assert tables[1].keys.tolist() == [0 * V + 1, 1 * V + 0, 1 * V + 2, 2 * V + 0]
    assert tables[1].counts.tolist() == [2, 1, 1, 1]
    unigrams, bigrams, trigrams = adjusted_counts(tables, EOS, reset=True)
    assert unigrams[:4].tolist() == [2, 1, 1, 0]  # </s> follows 1 and 2; 1 follows <s>; 2 follows 1
    assert bigrams.tolist() == [2, 1, 1, 1]  # "<s> 1" keeps its raw count 2, the others left-extended once
    assert trigrams.tolist() == [1, 1, 1]
    # One stream "<eos> 1 2 1 3": "<eos> 1" has no left neighbour but the unseen past before the stream.
    tables = count_ngrams(np.array([EOS, 1, 2, 1, 3]), 3, V, EOS, reset=False)
    assert tables[1].keys.tolist() == [0 * V + 1, 1 * V + 2, 1 * V + 3, 2 * V + 1]
    assert adjusted_counts(tables, EOS, reset=False)[1].tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("reset", [True, False])
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_counting_in_buckets_and_estimating_in_chunks_changes_no_bit(smoothing, reset, monkeypatch):
    """At scale an order is counted in buckets of prefix rows and estimated in chunks of whole
    contexts; here both are tiny (one prefix row per bucket, chunks of 3 n-grams, so that contexts
    with more continuations than a chunk holds occur): every table and number stays the same."""
    import lmbench.models.ngram.counting as counting
    import lmbench.models.ngram.smoothing as smoothing_module

    whole = fitted(smoothing, 4, reset)
    monkeypatch.setattr(counting, "SORT_CHUNK", 1)
    monkeypatch.setattr(smoothing_module, "ESTIMATE_CHUNK", 3)
    assert counting.count_ngrams(np.append(EOS, TRAIN), 4, V, EOS, reset)[2].keys.size > 3 * 20
    chunked = fitted(smoothing, 4, reset)
    for a, b in zip(whole.keys + whole.log_probs + whole.log_backoffs,
                    chunked.keys + chunked.log_probs + chunked.log_backoffs, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (whole.n_backoffs, whole.stats) == (chunked.n_backoffs, chunked.stats)


def resident_kb(path) -> int:
    """This process's resident kB of the file mapped from `path` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if "-" in line.split(" ", 1)[0]:  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.filterwarnings("ignore::lmbench.models.ngram.smoothing.DiscountFallbackWarning")  # tiled: no count 1
def test_fitting_on_memory_mapped_ids_gives_back_their_pages_and_the_same_model(tmp_path):
    ids = np.tile(TRAIN.astype(np.int32), 20)  # a few pages
    np.save(tmp_path / "ids.npy", ids)
    mapped = np.load(tmp_path / "ids.npy", mmap_mode="r")
    assert mapped.sum() == ids.sum() and resident_kb(tmp_path / "ids.npy") > 0
    model = NGramLM(V, EOS, order=3)
    model.fit(mapped)
    assert resident_kb(tmp_path / "ids.npy") == 0
    reference = NGramLM(V, EOS, order=3)
    reference.fit(ids)
    np.testing.assert_array_equal(model.score(HELD_OUT), reference.score(HELD_OUT))
    np.testing.assert_array_equal(mapped, ids)  # still readable after its pages were dropped
    writable = np.load(tmp_path / "ids.npy", mmap_mode="c")  # copy-on-write: changes live in RAM
    writable[0] = 7
    ngram_model.release_pages(writable)
    assert writable[0] == 7  # not dropped: that would have lost the change
