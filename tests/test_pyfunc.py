"""Every family is logged as an MLflow pyfunc model that scores text exactly as the run did."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest
from helpers import TINY, compose_tiny, only_run

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
    # The model's signature says what it takes; a one-column DataFrame of texts works as well.
    assert loaded.metadata.signature.inputs.to_dict() == [{"type": "string", "required": True}]
    frame = loaded.predict(pd.DataFrame({"text": [test_text]}))
    assert frame.iloc[0]["ppl"] == pytest.approx(row["ppl"], rel=1e-12)

    # The native bundle loads by run id too, with the run's tokenizer and vocabulary.
    bundle = load_bundle(r.info.run_id, tracking_uri=cfg.tracking.uri, cache_dir=tmp_path / "cache")
    assert bundle.family == r.data.tags["lmbench.family"]
    assert bundle.score_text(test_text).ppl == pytest.approx(row["ppl"], rel=1e-9)


def test_logging_a_model_prints_no_mlflow_warning(tmp_path, caplog):
    """Neither MLflow's 'Add type hints' UserWarning nor its 'Failed to infer model signature' log
    line, which came with every logged model."""
    import warnings

    cfg = compose_tiny(tmp_path, "ngram", *FAMILIES["ngram"])
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("INFO", logger="mlflow"):
        warnings.simplefilter("always")
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert not [str(w.message) for w in caught if "mlflow" in w.filename and issubclass(w.category, UserWarning)]
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("mlflow") and r.levelname != "INFO"]
    assert not [
        r.getMessage() for r in caplog.records if "type hint" in r.getMessage() or "signature" in r.getMessage()
    ]


def test_the_model_file_defines_its_class_without_mlflow_warnings():
    """MLflow executes the model's code file when it logs and loads a model (models from code); its
    class used to make MLflow warn, with raw ANSI codes, once per logged model that `predict` has no
    type hints."""
    import runpy
    import warnings

    import lmbench.artifacts.pyfunc as pyfunc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runpy.run_path(pyfunc.__file__, run_name="executed_by_mlflow")
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []


def test_pyfunc_of_a_bpe_run_brings_its_trained_tokenizer(tmp_path, monkeypatch):
    """A run with tokenizer=bpe: its MLflow model holds tokenizer.json, rebuilds that very tokenizer
    (never trained again) and scores the test text to the run's logged figures."""
    from helpers import logged_bundle_files

    from lmbench.data.learned import MODEL_FILE, LearnedTokenizer

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


def test_logging_a_model_keeps_its_signature_and_example_without_saying_it_runs_predict(tmp_path):
    """MLflow's "Running the predict function to generate output based on input example" came with
    every logged model (its example has no text: nothing is loaded or run); the logged model still
    has its signature with the generation params and its input example, and loads and predicts."""
    import logging

    from lmbench.artifacts.pyfunc import GENERATION_PARAMS

    heard = []
    listener = logging.Handler()
    listener.emit = heard.append
    logger = logging.getLogger("mlflow.models.signature")
    logger.addHandler(listener)
    try:
        cfg = compose_tiny(tmp_path, "ngram", *FAMILIES["ngram"])
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    finally:
        logger.removeHandler(listener)
    assert not [r.getMessage() for r in heard if "predict function" in r.getMessage()]
    _, r = only_run(cfg.tracking.uri)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    loaded = mlflow.pyfunc.load_model(f"runs:/{r.info.run_id}/model")
    params = loaded.metadata.signature.params
    assert {p.name: p.default for p in params.params} == GENERATION_PARAMS
    assert loaded.metadata.signature.inputs.to_dict() == [{"type": "string", "required": True}]
    assert loaded.input_example == []  # no text: MLflow's run of it loads nothing
    assert loaded.predict(["a cat saw a dog\n"]).iloc[0]["tokens"] == ["a", "cat", "saw", "a", "dog", "<eos>"]
