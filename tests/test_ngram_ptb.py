"""Penn Treebank: the published KenLM figures (lmplz, <unk> an ordinary word, sentence-level).

KenLM's lmplz gives PTB test perplexity 141.19 (valid 148.01) at order 5 and 148.28 at order 3.
The brief asks for 1%; we match the published two decimals (the rounding is the only slack).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lmbench.data.vocab import Vocabulary
from lmbench.models.ngram import NGramLM

pytestmark = pytest.mark.corpus


def ptb_tokens(split: str) -> list[list[str]]:
    """Lines of whitespace tokens plus "<eos>", as lmbench's word tokenizer makes them."""
    data_dir = os.environ.get("LMBENCH_DATA_DIR")
    if not data_dir:
        pytest.skip("LMBENCH_DATA_DIR is not set, so the PTB files cannot be found")
    path = Path(data_dir) / "ptb" / f"ptb.{split}.txt"
    if not path.is_file():
        pytest.skip(f"{path} does not exist")
    return [line.split() + ["<eos>"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def ptb():
    lines = {split: ptb_tokens(split) for split in ("train", "valid", "test")}
    vocab = Vocabulary.build(Counter(t for line in lines["train"] for t in line), eos="<eos>", unk="<unk>")
    ids = {split: vocab.encode(t for line in text for t in line) for split, text in lines.items()}
    return vocab, ids, lines


def perplexity(model: NGramLM, ids: np.ndarray) -> float:
    return math.exp(-model.score(ids).mean())


def test_ptb_ids_are_the_usual_ones(ptb):
    vocab, ids, _ = ptb
    assert len(vocab) == 10_000
    assert [len(ids[s]) for s in ("train", "valid", "test")] == [929_589, 73_760, 82_430]


@pytest.mark.parametrize(
    "order,split,kenlm_ppl", [(5, "test", 141.19), (5, "valid", 148.01), (3, "test", 148.28)]
)
def test_modified_kneser_ney_matches_kenlm_perplexity(ptb, order, split, kenlm_ppl):
    vocab, ids, _ = ptb
    model = NGramLM(len(vocab), vocab.eos_id, order=order)
    model.fit(ids["train"])
    assert perplexity(model, ids[split]) == pytest.approx(kenlm_ppl, abs=0.005)


def test_kenlm_reads_the_ptb_arpa_with_the_same_probabilities(ptb, tmp_path):
    kenlm = pytest.importorskip("kenlm", reason="the optional KenLM Python module is not installed")
    vocab, ids, lines = ptb
    model = NGramLM(len(vocab), vocab.eos_id, order=5)
    model.fit(ids["train"])
    model.to_arpa(tmp_path / "ptb5.arpa", vocab.tokens)
    reference = kenlm.Model(str(tmp_path / "ptb5.arpa"))
    theirs = [p for line in lines["test"] for p, _, _ in reference.full_scores(" ".join(line[:-1]))]
    np.testing.assert_allclose(theirs, model.score(ids["test"]) / math.log(10), rtol=0, atol=1e-4)
