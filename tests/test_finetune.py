"""trainer.init_from: a neural run starts from a logged model's weights and trains on another corpus.

Corpora written here: A is large and spans the whole grammar and word list; B is small and uses a
subset of A's words in the same sentence shapes, with its own, narrower distribution. A model
trained on A and fine-tuned on B for S steps must beat the same architecture trained from scratch
on B for the same S steps (same optimizer, same seed).

Fairness of the comparison: every word of B is a word of A, so both models score B's valid text as
the same tokens (no OOV, asserted), and their perplexities are per the same token count; the
scratch model even has the advantage of a vocabulary of B's words only, while the fine-tuned one
spreads probability over A's larger one. Bits per character (vocabulary-independent) are compared
too.

Measured (1x32 LSTM, 15 Adam steps on B, seeds 1 and 2): valid ppl fine-tuned 2.66 / 2.77 vs
scratch 12.12 / 12.88 (bpc 0.43 / 0.45 vs 1.10 / 1.13); the source before fine-tuning: 3.55 / 3.54.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_on
from mlflow import MlflowClient

from lmbench.artifacts import finetune
from lmbench.artifacts.bundle import load_bundle
from lmbench.artifacts.format import ModelNotFound
from lmbench.data.pipeline import load_corpus
from lmbench.data.tokenizers import WordTokenizer
from lmbench.data.vocab import Vocabulary
from lmbench.errors import ConfigError, DataError
from lmbench.training.run import run

ANIMALS = ["cat", "dog", "fox", "hen", "cow", "pig", "rat", "owl"]
VERBS = ["sat", "slept", "stood", "hid"]
PLACES = ["mat", "log", "box", "rug", "bed", "hat"]
PREPS = ["on", "by", "under", "near"]

B_ANIMALS, B_VERBS, B_PLACES = ANIMALS[:3], VERBS[:2], PLACES[:3]


def sentence(rng, animals, verbs, places) -> str:
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    det = lambda: pick(["the", "a"])  # noqa: E731
    if rng.random() < 0.7:
        return f"{det()} {pick(animals)} {pick(verbs)} {pick(PREPS)} {det()} {pick(places)}"
    return f"{det()} {pick(animals)} saw {det()} {pick(animals)}"


def write_split_files(folder: Path, lines: dict[str, list[str]]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, text in lines.items():
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text("\n".join(text) + "\n", encoding="utf-8")
    return paths


def corpus_a(folder: Path) -> dict[str, Path]:
    """Every word and both sentence shapes; "zebra" in valid only gives the vocabulary an <unk>."""
    rng = np.random.default_rng(0)
    make = lambda n: [sentence(rng, ANIMALS, VERBS, PLACES) for _ in range(n)]  # noqa: E731
    return write_split_files(folder, {"train": make(2500), "valid": make(40) + ["the zebra sat"], "test": make(40)})


def corpus_b(folder: Path, seed: int = 1) -> dict[str, Path]:
    """Small, a subset of A's words."""
    rng = np.random.default_rng(seed)
    make = lambda n: [sentence(rng, B_ANIMALS, B_VERBS, B_PLACES) for _ in range(n)]  # noqa: E731
    return write_split_files(folder, {"train": make(80), "valid": make(60), "test": make(60)})


TINY_LSTM = ("model=lstm", "model.hidden_size=32", "model.embedding_dim=32", "model.num_layers=1")


def compose_run(
    tmp: Path, paths: dict[str, Path], *overrides: str, model=TINY_LSTM, experiment="ft", uri: str | None = None
):
    """A run on `paths`, tracked in `uri` (default: `tmp`/mlflow.db)."""
    return compose_on(
        tmp, paths, "trainer.eval_batch_size=4", f"tracking.uri={uri or 'sqlite:///' + str(tmp / 'mlflow.db')}",
        f"tracking.experiment={experiment}", "tracking.log_every_n_steps=5", *overrides, model=model,
    )


def the_run(uri: str, experiment: str):
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An LSTM trained on A (run folder, MLflow store, run id)."""
    tmp = tmp_path_factory.mktemp("source")
    cfg = compose_run(
        tmp, corpus_a(tmp / "a"), "trainer.batch_size=16", "trainer.bptt=16", "trainer.max_epochs=2",
        experiment="source",
    )
    summary = run(cfg, output_dir=tmp / "out", launch_dir=tmp)
    _, r = the_run(cfg.tracking.uri, "source")
    return {"tmp": tmp, "folder": tmp / "out", "uri": cfg.tracking.uri, "run_id": r.info.run_id, "summary": summary}


def test_fine_tuned_beats_scratch_on_the_small_corpus(source, tmp_path):
    steps = 15
    for seed in (1, 2):
        paths = corpus_b(tmp_path / f"b{seed}", seed=seed)
        common = ("trainer.max_epochs=5", f"trainer.max_steps={steps}", f"seed={seed}", "tracking=none")
        tuned = run(
            compose_run(tmp_path, paths, *common, f"trainer.init_from={source['folder']}"),
            output_dir=tmp_path / f"tuned{seed}", launch_dir=tmp_path,
        )
        scratch = run(
            compose_run(tmp_path, paths, *common), output_dir=tmp_path / f"scratch{seed}", launch_dir=tmp_path
        )
        print(
            f"seed {seed}, {steps} steps on B: valid ppl fine-tuned {tuned['best_valid/ppl']:.3f} vs "
            f"scratch {scratch['best_valid/ppl']:.3f}; bpc {tuned['best_valid/bpc']:.4f} vs "
            f"{scratch['best_valid/bpc']:.4f} (source on A: valid ppl {source['summary']['best_valid/ppl']:.3f})"
        )
        # Fine-tuning adapted the source to B, beyond what it knew from A.
        zero_shot = load_bundle(source["folder"]).score_text(paths["valid"].read_text()).ppl
        print(f"  source model on B's valid text before fine-tuning: ppl {zero_shot:.3f}")
        assert tuned["best_valid/ppl"] < zero_shot
        # Same tokens scored on both sides (no OOV in either vocabulary, same tokenizer), so the
        # perplexities are comparable as they are; the scratch vocabulary is the smaller one.
        words = set(paths["valid"].read_text().split())
        tuned_vocab = Vocabulary.load(tmp_path / f"tuned{seed}" / "vocab.json")
        scratch_vocab = Vocabulary.load(tmp_path / f"scratch{seed}" / "vocab.json")
        assert words <= set(tuned_vocab.tokens) and words <= set(scratch_vocab.tokens)
        assert len(scratch_vocab) < len(tuned_vocab)
        assert tuned["best_valid/ppl"] < 0.5 * scratch["best_valid/ppl"]  # measured: about 0.22x
        assert tuned["best_valid/bpc"] < scratch["best_valid/bpc"] - 0.3  # measured: 0.65 less


def corpus_c(folder: Path) -> dict[str, Path]:
    """A's words, plus "yak" (train) and "zebra" (valid), never seen in A's train, and "The",
    which only a lowercasing tokenizer would know."""
    return write_split_files(
        folder,
        {
            "train": ["the cat sat on the mat"] * 30 + ["the yak sat on The mat"] * 10,  # 280 tokens, 20 OOV
            "valid": ["a dog hid under a box"] * 10 + ["a zebra hid under a box"] * 2,  # 84 tokens, 2 OOV
            "test": ["a hen slept by the rug"] * 12,  # 84 tokens, none OOV
        },
    )


def test_lineage_tags_params_and_the_source_architecture(source, tmp_path, capsys):
    paths = corpus_c(tmp_path / "c")
    cfg = compose_run(
        tmp_path,
        paths,
        f"trainer.init_from={source['run_id']}",
        "trainer.max_steps=3",
        "model.hidden_size=64",
        "model.embedding_dim=64",
        uri=source["uri"],
        experiment="lineage",
    )
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    out = capsys.readouterr().out
    assert "Note: trainer.init_from ignores the composed model/tokenizer config" in out
    assert "model.hidden_size=64 (source: 32)" in out

    _, r = the_run(source["uri"], "lineage")
    assert r.info.status == "FINISHED"
    assert r.data.tags["lmbench.init_from"] == source["run_id"]
    assert r.data.tags["lmbench.source_run_id"] == source["run_id"]
    assert r.data.params["trainer.init_from"] == source["run_id"]
    # The architecture recorded is the one trained: the source's, not the composed 64.
    assert r.data.params["model.hidden_size"] == "32"
    assert "hidden_size: 32" in (tmp_path / "out" / "config.yaml").read_text()
    meta = load_bundle(tmp_path / "out").meta
    assert meta["model"]["hidden_size"] == 32
    assert (meta["init_from"], meta["source_run_id"]) == (source["run_id"], source["run_id"])
    assert r.data.metrics["data/train_oov_rate"] == pytest.approx(20 / 280)


def test_vocabulary_and_tokenizer_are_the_sources(source, tmp_path):
    paths = corpus_c(tmp_path / "c")
    source_vocab = Vocabulary.load(source["folder"] / "vocab.json")
    assert source_vocab.unk_id is not None  # "zebra" in A's valid split gave it one

    # The composed tokenizer lowercases, which would make "The" known; the source's does not.
    cfg = compose_run(
        tmp_path,
        paths,
        f"trainer.init_from=runs:/{source['run_id']}/model",
        "trainer.max_steps=3",
        "tokenizer.lowercase=true",
        uri=source["uri"],
        experiment="vocab",
    )
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, r = the_run(source["uri"], "vocab")
    m = r.data.metrics
    assert m["data/train_oov_rate"] == pytest.approx(20 / 280)  # "yak" and "The" on 10 of 40 lines
    assert m["data/valid_oov_rate"] == pytest.approx(2 / 84)  # "zebra" on 2 of 12 lines
    assert m["data/test_oov_rate"] == 0.0
    assert r.data.params["tokenizer.lowercase"] == "False"
    assert r.data.params["data.vocab_size"] == str(len(source_vocab))
    assert Vocabulary.load(tmp_path / "out" / "vocab.json") == source_vocab
    assert load_bundle(tmp_path / "out").vocab == source_vocab

    # The ids: unseen words are the source's <unk>; the cache never mixes them with a corpus-built
    # vocabulary's ids.
    mapped = load_corpus(cfg.dataset, WordTokenizer(), cache_dir=tmp_path / "cache", vocab=source_vocab)
    assert mapped.info["from_cache"]  # the run made exactly these
    assert mapped.vocab.decode(mapped.train.ids[-7:]) == ["the", "<unk>", "sat", "on", "<unk>", "mat", "<eos>"]
    assert mapped.info["oov"] == {"train": 20, "valid": 2, "test": 0}
    own = load_corpus(cfg.dataset, WordTokenizer(), cache_dir=tmp_path / "cache")
    assert own.cache_key != mapped.cache_key and not own.info["from_cache"]
    assert "yak" in own.vocab.index


def test_mixed_precision_fine_tune(source, tmp_path):
    paths = corpus_b(tmp_path / "b")
    cfg = compose_run(
        tmp_path,
        paths,
        f"trainer.init_from={source['folder']}",
        "trainer.max_steps=2",
        "trainer.precision=mixed_bfloat16",
        "tracking=none",
    )
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert math.isfinite(summary["test/ppl"]) and summary["test/ppl"] < 6  # the source's knowledge


def test_a_killed_fine_tune_resumes_from_its_own_checkpoint(source, tmp_path, monkeypatch, capsys):
    from lmbench.training.trainer import Trainer

    paths = corpus_b(tmp_path / "b")
    cfg = compose_run(
        tmp_path,
        paths,
        f"trainer.init_from={source['run_id']}",
        "trainer.max_steps=6",
        "trainer.checkpoint_every_n_steps=2",
        uri=source["uri"],
        experiment="resume",
    )
    loads = []
    real_load = finetune.load_weights
    monkeypatch.setattr(finetune, "load_weights", lambda model, src: (loads.append(src.given), real_load(model, src)))
    real_validate = Trainer._validate

    def killed_at_validation(self, *args, **kwargs):
        monkeypatch.setattr(Trainer, "_validate", real_validate)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_validate", killed_at_validation)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, killed = the_run(source["uri"], "resume")
    assert killed.info.status == "KILLED" and loads == [source["run_id"]]

    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert "Resuming from" in capsys.readouterr().out
    assert loads == [source["run_id"]]  # not loaded again: the checkpoint's weights are the run's
    _, r = the_run(source["uri"], "resume")
    assert r.info.run_id == killed.info.run_id and r.info.status == "FINISHED"
    assert r.data.tags["lmbench.resumed_at_step"] == "6"

    # Another source (even the same model named otherwise) is another run: refused, not mixed.
    other = compose_run(
        tmp_path,
        paths,
        f"trainer.init_from={source['folder']}",
        "trainer.max_steps=6",
        "trainer.resume=true",
        uri=source["uri"],
        experiment="resume",
    )
    with pytest.raises(ConfigError, match="trainer.init_from"):
        run(other, output_dir=tmp_path / "out", launch_dir=tmp_path)


@pytest.fixture(scope="module")
def ngram_source(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ngram")
    cfg = compose_run(tmp, corpus_a(tmp / "a"), "tracking=none", model=("model=ngram", "model.order=2"))
    run(cfg, output_dir=tmp / "out", launch_dir=tmp)
    return tmp / "out"


def test_an_ngram_source_is_refused(ngram_source, tmp_path):
    cfg = compose_run(tmp_path, corpus_b(tmp_path / "b"), f"trainer.init_from={ngram_source}", "tracking=none")
    with pytest.raises(ConfigError, match="init_from applies to neural models; .* of the ngram family"):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)


def test_a_source_vocabulary_without_unk_refuses_unseen_words(tmp_path):
    # B's vocabulary needs no <unk>: its valid and test words all occur in its train split.
    cfg = compose_run(
        tmp_path, corpus_b(tmp_path / "b"), "trainer.max_steps=1", "tracking.log_model=false", experiment="no-unk"
    )
    run(cfg, output_dir=tmp_path / "src", launch_dir=tmp_path)
    assert Vocabulary.load(tmp_path / "src" / "vocab.json").unk_id is None
    _, src = the_run(cfg.tracking.uri, "no-unk")

    tune = compose_run(tmp_path, corpus_c(tmp_path / "c"), f"trainer.init_from={tmp_path / 'src'}", "tracking=none")
    with pytest.raises(DataError, match=r"the train split .* 20 token\(s\) .* no unknown token .*'yak', 'The'"):
        run(tune, output_dir=tmp_path / "out", launch_dir=tmp_path)

    # The same run by its id: it logged no model.
    by_id = compose_run(tmp_path, corpus_c(tmp_path / "c"), f"trainer.init_from={src.info.run_id}", experiment="x")
    with pytest.raises(ModelNotFound, match=f"run {src.info.run_id} has no logged model"):
        run(by_id, output_dir=tmp_path / "out2", launch_dir=tmp_path)


def test_an_unknown_run_id_is_a_one_line_cli_error(source, tmp_path):
    paths = corpus_b(tmp_path / "b")
    missing = "0123456789abcdef0123456789abcdef"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmbench",
            f"hydra.run.dir={tmp_path / 'out'}",
            f"trainer.init_from={missing}",
            "dataset=text_files",
            *(f"dataset.{s}={p}" for s, p in paths.items()),
            f"cache_dir={tmp_path / 'cache'}",
            f"tracking.uri={source['uri']}",
            "trainer.progress=false",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lmbench: error:")]
    assert errors == [f"lmbench: error: there is no run {missing} in the MLflow store {source['uri']}"], proc.stderr


def test_a_bpe_source_brings_its_trained_tokenizer(tmp_path, monkeypatch):
    """Fine-tuning a subword model cuts the new corpus with the source's trained pieces: training a
    tokenizer on the new corpus would give other pieces, which the source's ids do not mean."""
    from lmbench.data.learned import MODEL_FILE, LearnedTokenizer

    bpe = ("tokenizer=bpe", "tokenizer.vocab_size=60", "trainer.max_steps=3", "tracking=none")
    run(compose_run(tmp_path, corpus_a(tmp_path / "a"), *bpe), output_dir=tmp_path / "src", launch_dir=tmp_path)
    monkeypatch.setattr(LearnedTokenizer, "fit", lambda *a: pytest.fail("the tokenizer was trained again"))
    cfg = compose_run(tmp_path, corpus_b(tmp_path / "b"), f"trainer.init_from={tmp_path / 'src'}", *bpe[2:])
    run(cfg, output_dir=tmp_path / "tuned", launch_dir=tmp_path)
    for name in (MODEL_FILE, "vocab.json"):
        assert (tmp_path / "tuned" / "model" / name).read_text() == (tmp_path / "src" / "model" / name).read_text()
    tuned = load_bundle(tmp_path / "tuned")
    assert tuned.score_text((tmp_path / "b" / "test.txt").read_text()).n_oov == 0
