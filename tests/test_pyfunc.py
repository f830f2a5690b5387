"""Every family is logged as an MLflow pyfunc model that scores text exactly as the run did."""

from __future__ import annotations

import math

import mlflow
import pytest
from test_families import TINY, compose_tiny
from test_training import only_run

from lmbench.artifacts.bundle import load_bundle
from lmbench.training.run import run

FAMILIES = {
    "ngram": ("model.order=3",),
    "rnn": TINY["lmbench.models.recurrent.RecurrentLM"],
    "gru": TINY["lmbench.models.recurrent.RecurrentLM"],
    "lstm": TINY["lmbench.models.recurrent.RecurrentLM"],
    "transformer": TINY["lmbench.models.transformer.TransformerLM"],
}


@pytest.mark.parametrize("model", sorted(FAMILIES))
def test_pyfunc_round_trip_gives_the_logged_test_perplexity(tmp_path, model):
    cfg = compose_tiny(tmp_path, model, *FAMILIES[model])
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, r = only_run(cfg.tracking.uri)
    mlflow.set_tracking_uri(cfg.tracking.uri)

    loaded = mlflow.pyfunc.load_model(f"runs:/{r.info.run_id}/model")
    test_text = (tmp_path / "test.txt").read_text(encoding="utf-8")
    out = loaded.predict([test_text, "the cat sat on the mat\n"])
    assert len(out) == 2
    row = out.iloc[0]
    assert row["n_tokens"] == r.data.metrics["test/tokens"]
    assert row["ppl"] == pytest.approx(r.data.metrics["test/ppl"], rel=1e-6)
    assert row["bpc"] == pytest.approx(r.data.metrics["test/bpc"], rel=1e-6)
    assert row["n_oov"] == 0 and len(row["log_probs"]) == row["n_tokens"]
    assert math.exp(-sum(row["log_probs"]) / row["n_tokens"]) == pytest.approx(row["ppl"], rel=1e-9)
    assert out.iloc[1]["tokens"] == ["the", "cat", "sat", "on", "the", "mat", "<eos>"]

    # The native bundle loads by run id too, with the run's tokenizer and vocabulary.
    bundle = load_bundle(r.info.run_id, tracking_uri=cfg.tracking.uri, cache_dir=tmp_path / "cache")
    assert bundle.family == r.data.tags["lmbench.family"]
    assert bundle.score_text(test_text).ppl == pytest.approx(row["ppl"], rel=1e-9)


def test_pyfunc_of_a_bpe_run_brings_its_trained_tokenizer(tmp_path, monkeypatch):
    """A run with tokenizer=bpe: its MLflow model holds tokenizer.json, rebuilds that very tokenizer
    (never trained again) and scores the test text to the run's logged figures."""
    from lmbench.data.learned import MODEL_FILE, LearnedTokenizer
    from test_training import logged_bundle_files

    cfg = compose_tiny(tmp_path, "lstm", *FAMILIES["lstm"], "tokenizer=bpe", "tokenizer.vocab_size=30")
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, r = only_run(cfg.tracking.uri)
    assert r.data.tags["lmbench.tokenizer"] == "bpe-30"
    assert MODEL_FILE in logged_bundle_files(cfg.tracking.uri, r.info.run_id, tmp_path)
    trained = (tmp_path / "out" / MODEL_FILE).read_text(encoding="utf-8")  # in the run folder too
    assert (tmp_path / "out" / "model" / MODEL_FILE).read_text(encoding="utf-8") == trained

    monkeypatch.setattr(LearnedTokenizer, "fit", lambda *a: pytest.fail("the bundle's tokenizer was trained again"))
    mlflow.set_tracking_uri(cfg.tracking.uri)
    loaded = mlflow.pyfunc.load_model(f"runs:/{r.info.run_id}/model")
    test_text = (tmp_path / "test.txt").read_text(encoding="utf-8")
    out = loaded.predict([test_text, "the cat sat on the mat\n"])
    row = out.iloc[0]
    assert row["n_tokens"] == r.data.metrics["test/tokens"] > len(test_text.split())  # pieces, not words
    assert row["ppl"] == pytest.approx(r.data.metrics["test/ppl"], rel=1e-6)
    assert row["bpc"] == pytest.approx(r.data.metrics["test/bpc"], rel=1e-6)
    bundle = load_bundle(r.info.run_id, tracking_uri=cfg.tracking.uri, cache_dir=tmp_path / "cache")
    assert bundle.tokenizer._json == trained
    pieces = out.iloc[1]["tokens"]
    assert pieces == bundle.tokenizer.tokenize("the cat sat on the mat\n") and pieces[-1] == "<eos>"
    assert bundle.tokenizer.detokenize(pieces) == "the cat sat on the mat\n"
    assert bundle.score_text(test_text).ppl == pytest.approx(row["ppl"], rel=1e-9)
