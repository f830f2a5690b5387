"""ARPA export: a back-off reader (here) and KenLM (if installed) give our log10 probabilities back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import EOS, HELD_OUT, V, fitted

from lmbench.errors import ConfigError

TOKENS = ["<eos>"] + [f"w{i}" for i in range(1, V - 1)] + ["<unk>"]


def read_arpa(path: Path) -> tuple[dict[tuple[str, ...], tuple[float, float]], int]:
    """{n-gram: (log10 p, log10 back-off)} and the order, checking the header's counts."""
    entries: dict[tuple[str, ...], tuple[float, float]] = {}
    declared, section = {}, 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line == "\\data\\" or line == "\\end\\":
            continue
        if line.startswith("ngram "):
            k, n = line[len("ngram ") :].split("=")
            declared[int(k)] = int(n)
        elif line.endswith("-grams:"):
            section = int(line[1:].split("-")[0])
        else:
            fields = line.split("\t")
            words = tuple(fields[1].split(" "))
            assert len(words) == section
            entries[words] = (float(fields[0]), float(fields[2]) if len(fields) == 3 else 0.0)
    for k, n in declared.items():
        assert sum(1 for g in entries if len(g) == k) == n
    return entries, max(declared)


def arpa_log10_prob(entries, order: int, context: tuple[str, ...], word: str) -> float:
    """Standard back-off: the longest stored n-gram, plus back-off weights of longer contexts."""
    context = context[len(context) - min(len(context), order - 1) :]
    backoff = 0.0
    while (*context, word) not in entries:
        backoff += entries.get(context, (0.0, 0.0))[1]
        context = context[1:]
    return entries[(*context, word)][0] + backoff


def arpa_scores(entries, order: int, ids: np.ndarray, reset: bool) -> np.ndarray:
    names = [TOKENS[i] for i in ids]
    scores, context = [], ("<s>",) if reset else (TOKENS[EOS],)
    for token_id, name in zip(ids, names):
        word = "</s>" if reset and token_id == EOS else name
        scores.append(arpa_log10_prob(entries, order, context, word))
        context = ("<s>",) if reset and token_id == EOS else (*context, name)
    return np.array(scores)


@pytest.mark.parametrize("smoothing", ("mkn", "kn", "wb", "absolute"))
@pytest.mark.parametrize("order", (1, 2, 3, 4))
@pytest.mark.parametrize("reset", (True, False))
def test_arpa_round_trip_gives_the_same_log10_probs(smoothing, order, reset, tmp_path):
    model = fitted(smoothing, order, reset)
    model.to_arpa(tmp_path / "lm.arpa", TOKENS)
    entries, read_order = read_arpa(tmp_path / "lm.arpa")
    assert read_order == order
    expected = model.score(HELD_OUT) / math.log(10)
    np.testing.assert_allclose(arpa_scores(entries, order, HELD_OUT, reset), expected, rtol=0, atol=1e-4)
    if reset:
        assert entries[("<s>",)][0] == -99 and "<eos>" not in {w for g in entries for w in g}


@pytest.mark.parametrize("smoothing", ("mkn", "wb"))
@pytest.mark.parametrize("order", (2, 3, 4))  # KenLM's query code needs at least a bigram model
def test_kenlm_loads_the_arpa_with_the_same_probabilities(smoothing, order, tmp_path):
    kenlm = pytest.importorskip("kenlm", reason="the optional KenLM Python module is not installed")
    model = fitted(smoothing, order)
    model.to_arpa(tmp_path / "lm.arpa", TOKENS)
    reference = kenlm.Model(str(tmp_path / "lm.arpa"))
    sentences = np.split(HELD_OUT, np.flatnonzero(HELD_OUT == EOS)[:-1] + 1)
    texts = [" ".join(TOKENS[i] for i in sentence[:-1]) for sentence in sentences]
    theirs = [p for text in texts for p, _, _ in reference.full_scores(text, bos=True, eos=True)]
    np.testing.assert_allclose(theirs, model.score(HELD_OUT) / math.log(10), rtol=0, atol=1e-4)


def test_arpa_export_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ConfigError, match="add-k smoothing has no back-off form"):
        fitted("addk", 2).to_arpa(tmp_path / "lm.arpa", TOKENS)
    with pytest.raises(ConfigError, match="3 token names given for a vocabulary of 40"):
        fitted("mkn", 2).to_arpa(tmp_path / "lm.arpa", TOKENS[:3])
    with pytest.raises(ConfigError, match="reserves"):
        fitted("mkn", 2).to_arpa(tmp_path / "lm.arpa", TOKENS[:-1] + ["<s>"])
