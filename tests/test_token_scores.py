"""Per-token scores kept and logged (token_scores/<split>.npz), and the figures in units of the raw
text: word perplexity (= perplexity for a word tokenizer with eos) and bits per byte (= bits per
character on ASCII text)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import only_run, tiny_cfg
from omegaconf import OmegaConf

from lmbench.config import DatasetConfig
from lmbench.data import pipeline
from lmbench.data.pipeline import load_corpus, measured_split
from lmbench.data.text import line_measures
from lmbench.data.tokenizers import CharTokenizer, WordTokenizer
from lmbench.errors import DataError
from lmbench.scoring import TokenScores, evaluate, ids_digest
from lmbench.training.run import run

NON_ASCII = "café über naïve\nthe naïve café\nüber alles\n"


class Uniform:
    """Every token has probability 1/|V|: figures follow from the counts alone."""

    def __init__(self, vocab_size):
        self.vocab_size = vocab_size

    def score(self, ids, *, batch_size=None, progress=None):
        return np.full(len(ids), -math.log(self.vocab_size))


def corpus(tmp_path: Path, texts: dict[str, str], tokenizer, cache: Path | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        (tmp_path / f"{split}.txt").write_text(text, encoding="utf-8")
    cfg = OmegaConf.structured(DatasetConfig(name="tiny", **{s: str(tmp_path / f"{s}.txt") for s in texts}))
    return load_corpus(cfg, tokenizer, cache_dir=cache or tmp_path / "cache")


@pytest.mark.parametrize("text", ["a b\n\n c  d e \n", "x y\nlast line", NON_ASCII, "one\n"])
def test_line_measures_sum_to_the_text_and_count_the_word_tokenizers_tokens(text):
    chars, words, utf8 = line_measures(text)
    tokens = WordTokenizer().tokenize(text)
    assert len(chars) == len(words) == len(utf8) == tokens.count("<eos>")  # lines cut as tokenizers cut
    assert chars.sum() == len(text) and utf8.sum() == len(text.encode("utf-8"))
    assert words.sum() == len(tokens)
    assert chars.dtype == words.dtype == utf8.dtype == np.int64


def test_bits_per_byte_is_bpc_on_ascii_and_smaller_by_chars_over_bytes_on_utf8():
    ascii_text, ids = "the cat\nsat on it\n", np.array([3, 4, 0, 5, 6, 7, 0], dtype=np.uint16)
    plain = evaluate(Uniform(9), measured_split("test", ids, ascii_text), show_progress=False)
    assert plain.bits_per_byte == plain.bpc and plain.word_ppl == pytest.approx(plain.ppl, rel=1e-12)

    ids = np.array([3, 4, 5, 0, 6, 5, 3, 0, 4, 7, 0], dtype=np.uint16)  # NON_ASCII's 11 word tokens
    split = measured_split("test", ids, NON_ASCII)
    assert (split.n_chars, split.n_bytes, split.n_words) == (42, 48, 11)  # é ü ï, é ï, ü: 2 bytes each
    res = evaluate(Uniform(9), split, show_progress=False)
    assert res.bits_per_byte != res.bpc
    assert res.bits_per_byte == pytest.approx(res.bpc * split.n_chars / split.n_bytes, rel=1e-12)
    metrics = res.metrics()
    assert metrics["test/bits_per_byte"] == res.bits_per_byte and metrics["test/word_ppl"] == res.word_ppl


def test_word_ppl_is_ppl_for_words_with_eos_and_differs_where_tokens_are_not_words(tmp_path):
    texts = {"train": "a b, c\n\nb c ,\n", "valid": "a , b\n\nc\n", "test": "c , a\n\nb\n"}
    words = corpus(tmp_path / "w", texts, WordTokenizer())
    for s in ("valid", "test"):
        res = evaluate(Uniform(len(words.vocab)), words.splits[s], show_progress=False)
        assert res.words == res.tokens and res.word_ppl == pytest.approx(res.ppl, rel=1e-9)
    # A dropped blank line loses its end-of-sentence token; a lone "," vanishes with punctuation.
    for i, tokenizer in enumerate((WordTokenizer(drop_blank_lines=True), WordTokenizer(strip_punctuation=True))):
        data = corpus(tmp_path / str(i), texts, tokenizer)
        res = evaluate(Uniform(len(data.vocab)), data.test, show_progress=False)
        assert res.tokens == 6 and res.words == 7 and res.word_ppl < res.ppl


def test_token_scores_lines_and_their_absence_when_tokens_do_not_follow_lines(tmp_path):
    texts = {"train": "a b\nc\n", "valid": "a\n\nb c\n", "test": "b a\n\nc\n"}
    data = corpus(tmp_path / "eos", texts, WordTokenizer())
    res = evaluate(Uniform(len(data.vocab)), data.test, show_progress=False)
    scores = TokenScores.of(res, data.test, data.vocab)
    np.testing.assert_array_equal(scores.line_ends, [3, 4, 6])
    np.testing.assert_array_equal(scores.line_words, [3, 1, 2])
    assert scores.line_nats().sum() == pytest.approx(res.nats, rel=1e-6)
    loaded = TokenScores.load(scores.save(tmp_path / "test.npz"))
    for name in TokenScores.ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(scores, name))
    assert loaded.ids_digest == ids_digest(data.test.ids, data.vocab) == scores.ids_digest
    assert loaded.n_words == data.test.n_words == 6

    for i, tokenizer in enumerate((WordTokenizer(drop_blank_lines=True), WordTokenizer(add_eos=False))):
        data = corpus(tmp_path / str(i), texts, tokenizer)
        res = evaluate(Uniform(len(data.vocab)), data.test, show_progress=False)
        loaded = TokenScores.load(TokenScores.of(res, data.test, data.vocab).save(tmp_path / "unaligned.npz"))
        assert not loaded.by_line and len(loaded.line_ends) == len(loaded.line_bytes) == 0
        assert len(loaded.log_probs) == len(data.test) and loaded.n_chars == len(texts["test"])
        with pytest.raises(ValueError, match="no line boundaries"):
            loaded.line_nats()


def test_load_refuses_what_is_not_a_token_scores_file(tmp_path):
    np.savez(tmp_path / "other.npz", log_probs=np.zeros(3, np.float32))
    with pytest.raises(DataError, match="not a token-scores file"):
        TokenScores.load(tmp_path / "other.npz")


def test_cold_and_warm_loads_give_the_same_line_measures(tmp_path):
    texts = {"train": "a b\nc d e\n", "valid": NON_ASCII, "test": "b\n\na c"}
    cold = corpus(tmp_path, texts, CharTokenizer())
    warm = corpus(tmp_path, texts, CharTokenizer())
    assert not cold.info["from_cache"] and warm.info["from_cache"]
    for s, text in texts.items():
        a, b = cold.splits[s], warm.splits[s]
        assert (a.n_chars, a.n_words, a.n_bytes) == (b.n_chars, b.n_words, b.n_bytes)
        assert (b.n_chars, b.n_bytes) == (len(text), len(text.encode("utf-8")))
        for name, total in (("line_chars", b.n_chars), ("line_words", b.n_words), ("line_bytes", b.n_bytes)):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            assert getattr(b, name).sum() == total


def as_previous_format(folder: Path) -> None:
    """Turn a cache entry into what FORMAT_VERSION 1 wrote: no line measures, no word or byte counts."""
    meta = json.loads((folder / "meta.json").read_text())
    for key in ("n_words", "n_bytes", "lines"):
        del meta[key]
    (folder / "meta.json").write_text(json.dumps({**meta, "format": 1}))
    for path in folder.glob("*.lines.npy"):
        path.unlink()


def test_a_cache_entry_of_the_previous_format_is_remade_not_misread(tmp_path, monkeypatch, caplog):
    texts = {"train": "a b\nc d e\n", "valid": NON_ASCII, "test": "b\na c\n"}
    fresh = corpus(tmp_path, texts, WordTokenizer())
    ids_root = tmp_path / "cache" / "ids"
    # Written by the previous version: under that version's key, which this one never reads...
    with monkeypatch.context() as m:
        m.setattr(pipeline, "FORMAT_VERSION", 1)
        old = corpus(tmp_path, texts, WordTokenizer(), cache=tmp_path / "old")
    as_previous_format(tmp_path / "old" / "ids" / old.cache_key)
    shutil.copytree(tmp_path / "old" / "ids" / old.cache_key, ids_root / old.cache_key)
    shutil.rmtree(ids_root / fresh.cache_key)
    assert old.cache_key != fresh.cache_key and not corpus(tmp_path, texts, WordTokenizer()).info["from_cache"]
    assert json.loads((ids_root / old.cache_key / "meta.json").read_text())["format"] == 1  # left alone
    # ...and at this version's key (as if the key had not changed): refused and rebuilt, quietly.
    shutil.rmtree(ids_root / fresh.cache_key)
    shutil.copytree(ids_root / old.cache_key, ids_root / fresh.cache_key)
    again = corpus(tmp_path, texts, WordTokenizer())
    assert not again.info["from_cache"] and "unreadable" not in caplog.text
    assert again.valid.n_bytes == len(NON_ASCII.encode("utf-8")) and len(again.valid.line_words) == 3
    assert json.loads((ids_root / fresh.cache_key / "meta.json").read_text())["format"] == pipeline.FORMAT_VERSION
    assert corpus(tmp_path, texts, WordTokenizer()).info["from_cache"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny word-level LSTM run (two epochs), tracked; its store, folder and summary."""
    tmp_path = tmp_path_factory.mktemp("run")
    cfg = tiny_cfg(tmp_path, "trainer.max_epochs=2")
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    data = load_corpus(cfg.dataset, WordTokenizer(), cache_dir=tmp_path / "cache")
    return cfg, tmp_path, summary, data


def test_a_run_logs_word_ppl_bits_per_byte_and_its_token_scores(tiny_run):
    import mlflow

    cfg, tmp_path, summary, data = tiny_run
    client, r = only_run(cfg.tracking.uri)
    m = r.data.metrics
    for split in ("valid", "test", "best_valid"):  # word tokenizer with eos, ASCII text
        assert m[f"{split}/word_ppl"] == pytest.approx(m[f"{split}/ppl"], rel=1e-9)
        assert m[f"{split}/bits_per_byte"] == pytest.approx(m[f"{split}/bpc"], rel=1e-12)
    assert {a.path for a in client.list_artifacts(r.info.run_id, "token_scores")} == {
        "token_scores/valid.npz", "token_scores/test.npz"}

    mlflow.set_tracking_uri(cfg.tracking.uri)
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{r.info.run_id}/token_scores", dst_path=str(tmp_path)))
    for split, loss in (("test", m["test/loss"]), ("valid", m["best_valid/loss"])):
        scores, kept = TokenScores.load(folder / f"{split}.npz"), data.splits[split]
        assert scores.log_probs.dtype == np.float32 and len(scores.log_probs) == len(kept)
        assert scores.log_probs.sum(dtype=np.float64) == pytest.approx(-loss * len(kept), rel=1e-6)
        assert scores.by_line and scores.line_ends[-1] == len(kept)
        assert (scores.n_chars, scores.n_words, scores.n_bytes) == (kept.n_chars, kept.n_words, kept.n_bytes)
        assert (scores.line_chars.sum(), scores.line_words.sum(), scores.line_bytes.sum()) == (
            kept.n_chars, kept.n_words, kept.n_bytes)
        assert scores.ids_digest == r.data.tags[f"lmbench.scored_ids.{split}"] == ids_digest(kept.ids, data.vocab)
        assert (tmp_path / "out" / "token_scores" / f"{split}.npz").is_file()


def test_log_token_scores_false_logs_no_scores_but_still_the_digests(tmp_path):
    cfg = tiny_cfg(tmp_path, "tracking.log_token_scores=false", model=("model=ngram", "model.order=2"))
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    assert not client.list_artifacts(r.info.run_id, "token_scores")
    assert not (tmp_path / "out" / "token_scores").exists()
    assert {"lmbench.scored_ids.valid", "lmbench.scored_ids.test"} <= set(r.data.tags)


@pytest.mark.corpus
def test_ptb_words_are_its_word_tokens(compose_config, cache_dir):
    """PTB with the word tokenizer: one token per word and per line end, so word_ppl is ppl."""
    if not os.environ.get("LMBENCH_DATA_DIR"):
        pytest.skip("LMBENCH_DATA_DIR is not set, so the PTB files cannot be found")
    cfg = compose_config("dataset=ptb", f"cache_dir={cache_dir}")
    data = load_corpus(cfg.dataset, WordTokenizer(), cache_dir=cache_dir)
    for s, split in data.splits.items():
        assert split.n_words == len(split) and split.n_bytes == split.n_chars, s  # ASCII
    res = evaluate(Uniform(len(data.vocab)), data.test, show_progress=False)
    assert res.word_ppl == pytest.approx(res.ppl, rel=1e-9) and res.tokens == 82_430
