"""Using what was trained: lmbench-generate and lmbench-evaluate on runs of every family."""

from __future__ import annotations

import math
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SENTENCES, TINY, compose_tiny, only_run, tiny_cfg

from lmbench import names
from lmbench.cli import evaluate as evaluate_cli
from lmbench.cli import generate as generate_cli
from lmbench.training.run import run

RUNS = {  # name -> (model, overrides)
    "ngram": ("ngram", ("model.order=3",)),
    "lstm": ("lstm", TINY["lmbench.models.recurrent.RecurrentLM"]),
    "transformer": ("transformer", TINY["lmbench.models.transformer.TransformerLM"]),
    "char": ("gru", (*TINY["lmbench.models.recurrent.RecurrentLM"], "tokenizer=char")),
    "unlogged": ("ngram", ("model.order=2", "tracking.log_model=false")),
    "bpe": ("lstm", (*TINY["lmbench.models.recurrent.RecurrentLM"], "tokenizer=bpe", "tokenizer.vocab_size=30")),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run per entry of RUNS, each in its own folder and store: name -> (run, uri, folder)."""
    out = {}
    for name, (model, overrides) in RUNS.items():
        folder = tmp_path_factory.mktemp(name)
        cfg = compose_tiny(folder, model, *overrides, "trainer.max_steps=30")
        run(cfg, output_dir=folder / "out", launch_dir=folder)
        out[name] = (only_run(cfg.tracking.uri)[1], cfg.tracking.uri, folder)
    return out


def cli(main, capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as ex:
        code = ex.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", ["ngram", "lstm", "transformer"])
def test_generate_is_seeded_and_continues_the_prompt(runs, capsys, monkeypatch, tmp_path, name):
    r, uri, _ = runs[name]
    monkeypatch.setenv("LMBENCH_CACHE_DIR", str(tmp_path / "cache"))
    args = (r.info.run_id, "--tracking-uri", uri, "--prompt", "the cat", "--tokens", "12", "--top-k", "5")
    code, first, err = cli(generate_cli.main, capsys, *args, "--seed", "3")
    assert code == 0, err
    assert first.startswith("the cat")
    words = first.split()
    assert len(words) >= 2 + 12 - first.count("\n") - 1  # eos tokens became line ends
    assert set(words) <= {"the", "cat", "sat", "on", "mat", "dog", "log", "a", "saw"}
    assert cli(generate_cli.main, capsys, *args, "--seed", "3")[1] == first
    others = {cli(generate_cli.main, capsys, *args, "--seed", str(s))[1] for s in range(4, 9)}
    assert others - {first}, "five other seeds all gave the same text"


def test_generate_char_model_joins_characters(runs, capsys, monkeypatch, tmp_path):
    r, uri, folder = runs["char"]
    code, out, err = cli(
        generate_cli.main, capsys, str(folder / "out"), "--prompt", "the ", "--tokens", "30", "--seed", "1"
    )
    assert code == 0, err
    assert out.startswith("the ") and len(out.rstrip("\n")) >= 4 + 30 - out.count("\n")
    assert set(out) <= set("the cat sat on mat dog log a saw\n")


@pytest.mark.parametrize(
    "args, message",
    [
        (("--temperature", "-1"), "temperature must be >= 0"),
        (("--top-p", "1.5"), "top_p must be in (0, 1]"),
        (("--top-k", "0"), "top_k must be >= 1"),
        (("--prompt", "zebra quokka"), "every token of the prompt 'zebra quokka' is out of the model's vocabulary"),
        (("--tokens", "0"), "must be >= 1"),
    ],
)
def test_generate_refuses_bad_arguments(runs, capsys, args, message):
    r, uri, folder = runs["lstm"]
    # the tiny corpus has no <unk>: an unseen word is refused as such, seen or not by the vocabulary
    code, _, err = cli(generate_cli.main, capsys, str(folder / "out"), *args)
    assert code == 2
    assert err.startswith("lmbench-generate: error:")
    assert message in err or ("not in the model's vocabulary" in err and "zebra" in args[-1]), err


def test_unknown_run_and_run_without_model_are_clear_errors(runs, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LMBENCH_CACHE_DIR", str(tmp_path / "cache"))
    _, uri, _ = runs["ngram"]
    code, _, err = cli(generate_cli.main, capsys, "0" * 32, "--tracking-uri", uri)
    assert code == 2 and f"there is no run {'0' * 32}" in err
    r, uri, _ = runs["unlogged"]
    code, _, err = cli(evaluate_cli.main, capsys, r.info.run_id, "--tracking-uri", uri)
    assert code == 2 and f"run {r.info.run_id} has no logged model" in err
    code, _, err = cli(generate_cli.main, capsys, str(tmp_path))
    assert code == 2 and "holds no lmbench model" in err
    code, _, err = cli(generate_cli.main, capsys, "not-a-model")
    assert code == 2 and "neither a folder nor an MLflow run id" in err


@pytest.mark.parametrize("name", ["ngram", "transformer"])
def test_evaluate_own_test_split_reproduces_the_run_and_is_logged(runs, capsys, tmp_path, monkeypatch, name):
    from mlflow import MlflowClient

    monkeypatch.setenv("LMBENCH_CACHE_DIR", str(tmp_path / "cache"))
    r, uri, _ = runs[name]
    code, out, err = cli(evaluate_cli.main, capsys, r.info.run_id, "--tracking-uri", uri, "--split", "valid", "test")
    assert code == 0, err
    client = MlflowClient(tracking_uri=uri)
    evals = client.search_runs([client.get_experiment_by_name("lmbench-eval").experiment_id])
    assert len(evals) == 1
    e = evals[0]
    assert e.data.tags["lmbench.source_run_id"] == r.info.run_id
    assert e.data.tags["lmbench.kind"] == "evaluation"
    m = e.data.metrics
    assert m["eval/test/ppl"] == pytest.approx(r.data.metrics["test/ppl"], rel=1e-9)
    assert m["eval/valid/ppl"] == pytest.approx(r.data.metrics["best_valid/ppl"], rel=1e-9)
    assert m["eval/test/oov_rate"] == 0.0
    total = m["eval/test/tokens"] + m["eval/valid/tokens"]
    nats = m["eval/test/loss"] * m["eval/test/tokens"] + m["eval/valid/loss"] * m["eval/valid/tokens"]
    assert m["eval/all/ppl"] == pytest.approx(math.exp(nats / total), rel=1e-9)
    assert "test" in out and f"{r.data.metrics['test/ppl']:.2f}" in out


def test_evaluate_files_reports_the_oov_rate(tmp_path, capsys, monkeypatch):
    # A corpus with <unk> in train, so that unseen words have somewhere to go.
    from helpers import tiny_cfg

    folder = tmp_path / "unk"
    cfg = tiny_cfg(folder, "model=ngram", "model.order=2", "tokenizer.max_size=6", model=())
    run(cfg, output_dir=folder / "out", launch_dir=folder)
    text = tmp_path / "new.txt"
    text.write_text("the cat sat on the zebra\nquokka saw a dog\n", encoding="utf-8")
    # 6 + 1 eos + 4 + 1 eos = 12 tokens; zebra and quokka are unseen; max_size=6 also drops rarer words
    from lmbench.artifacts.bundle import load_bundle

    bundle = load_bundle(folder / "out")
    unseen = [t for t in bundle.tokenizer.tokenize(text.read_text()) if t not in bundle.vocab.index]
    assert {"zebra", "quokka"} <= set(unseen)
    code, out, err = cli(evaluate_cli.main, capsys, str(folder / "out"), "--files", str(text), "--no-log")
    assert code == 0, err
    assert f"{len(unseen) / 12:.2%}" in out


# Penn Treebank's form: lower-case, numbers as N, no commas or full stops, rare words as <unk>.
# Penn Treebank's form: lower-case, numbers as N, no commas or full stops, rare words as <unk>.
PTB_STYLE = ["the cat sat on the mat", "a dog saw N cats on the log", "the <unk> sat on N mats", "a cat saw the dog"]


def train_bigram(folder, compose_config, lines: list[str], *overrides: str) -> tuple[Path, str]:
    """A bigram model of `lines` (train, valid and test alike): (its bundle folder, its store's URI)."""
    corpus = {split: folder / f"{split}.txt" for split in ("train", "valid", "test")}
    for path in corpus.values():
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cfg = compose_config(
        "dataset=text_files", *(f"dataset.{split}={path}" for split, path in corpus.items()), "model=ngram",
        "model.order=2", "model.smoothing=wb", f"tracking.uri={uri}", "tracking.experiment=tiny",
        "tracking.log_model=false", "trainer.progress=false", *overrides,
    )
    run(cfg, output_dir=folder / "out", launch_dir=folder)
    return folder / "out", uri


def test_evaluate_warns_that_a_cased_text_is_not_comparable_and_says_how_to_write_it(
    tmp_path, capsys, compose_config, cache_dir
):
    from mlflow import MlflowClient

    model, uri = train_bigram(tmp_path, compose_config, PTB_STYLE)
    cased = tmp_path / "cased.txt"
    cased.write_text("The Cat sat on the mat.\nA dog saw 3 cats.\n", encoding="utf-8")
    # 13 tokens with the two line ends; The, Cat, mat., A, 3 and cats. are unknown: 6/13 = 46.2%
    code, out, err = cli(evaluate_cli.main, capsys, str(model), "--files", str(cased), "--tracking-uri", uri)
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("cased"))
    assert row.split()[2] == "46.15%" and row.endswith("not comparable: 46.2% OOV")
    warning = err[err.index("lmbench-evaluate: warning:"):]
    assert warning.startswith(
        "lmbench-evaluate: warning: 46.2% (cased) of the tokens are out of the model's vocabulary "
        "(14 tokens from text_files), more than --max-oov-rate 0.05: these figures are not comparable"
    )
    assert "scored as the one token <unk>" in warning and "the better the perplexity looks" in warning
    assert (
        "It expects text as it was trained on: lower-case (no capital letter in its vocabulary), with numbers "
        "written `N` (its vocabulary has `N` and no number), without commas and full stops" in warning
    )
    assert "tokenizer=bpe" in warning and "\n" not in warning.strip()  # one paragraph
    client = MlflowClient(tracking_uri=uri)
    [evaluation] = client.search_runs([client.get_experiment_by_name("lmbench-eval").experiment_id])
    assert evaluation.data.tags[names.NOT_COMPARABLE] == "OOV rate above --max-oov-rate 0.05: cased 46.2%"

    # The same words written as the model's text was: nothing unknown, no mark, no warning, no tag.
    known = tmp_path / "known.txt"
    known.write_text("the cat sat on the mat\na dog saw N cats\n", encoding="utf-8")
    code, out, err = cli(evaluate_cli.main, capsys, str(model), "--files", str(known), "--tracking-uri", uri)
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("known"))
    assert row.split()[2] == "0.00%" and "not comparable" not in out and "warning" not in err
    runs = client.search_runs([client.get_experiment_by_name("lmbench-eval").experiment_id])  # newest first
    assert [r.data.tags.get(names.NOT_COMPARABLE) for r in runs] == [None, evaluation.data.tags[names.NOT_COMPARABLE]]

    # A limit the user raises: the same cased text passes.
    args = (str(model), "--files", str(cased), "--no-log", "--max-oov-rate")
    code, out, err = cli(evaluate_cli.main, capsys, *args, "0.5")
    assert code == 0 and "not comparable" not in out and "warning" not in err
    code, _, err = cli(evaluate_cli.main, capsys, *args, "5")
    assert code == 2 and "--max-oov-rate: must be a share from 0 to 1" in err


def test_what_the_tokenizer_normalizes_itself_is_said_and_costs_no_unknown_words(tmp_path, capsys, compose_config,
                                                                               cache_dir):
    from lmbench.artifacts.bundle import load_bundle

    lines = ["The Cat sat on the mat , twice .", "A dog saw 3 cats on 12 logs ."]
    model, _ = train_bigram(tmp_path, compose_config, lines, "tokenizer.lowercase=true", "tokenizer.number_token=N")
    assert load_bundle(model).normalization() == [
        "lower-cased by its tokenizer",
        "with numbers written `N` by its tokenizer",
        "with punctuation spaced off as words of its own (`end .`, not `end.`)",
    ]
    text = tmp_path / "new.txt"
    text.write_text("A DOG SAW 7 CATS .\n", encoding="utf-8")  # cased and numbered: the tokenizer copes
    code, out, err = cli(evaluate_cli.main, capsys, str(model), "--files", str(text), "--no-log")
    assert code == 0 and "warning" not in err
    assert next(line for line in out.splitlines() if line.startswith("new")).split()[2] == "0.00%"


def test_generate_bpe_model_prints_detokenized_text(runs, capsys):
    """The sampled pieces are joined by the tokenizer's decoder: "▁" is a space, <eos> a line end."""
    from lmbench.artifacts.bundle import load_bundle

    _, _, folder = runs["bpe"]
    args = (str(folder / "out"), "--prompt", "the cat", "--tokens", "25", "--seed", "3")
    code, out, err = cli(generate_cli.main, capsys, *args)
    assert code == 0, err
    assert out.startswith("the cat") and "▁" not in out and "<eos>" not in out
    bundle = load_bundle(folder / "out")
    prompt = bundle.prompt_ids("the cat")
    assert bundle.vocab.decode(prompt) == ["the", "▁cat"]
    pieces = bundle.vocab.decode(list(prompt) + list(bundle.model.generate(prompt, 25, seed=3)))
    spelt = "".join("\n" if p == "<eos>" else p.replace("▁", " ") for p in pieces)
    assert out.rstrip("\n") == spelt.rstrip("\n")
    assert set(out) <= set("the cat sat on mat dog log a saw\n")


def test_evaluate_bpe_model_cuts_new_text_with_its_own_tokenizer(runs, capsys, tmp_path, monkeypatch):
    from lmbench.artifacts.bundle import load_bundle
    from lmbench.data.learned import LearnedTokenizer

    monkeypatch.setenv("LMBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(LearnedTokenizer, "fit", lambda *a: pytest.fail("the model's tokenizer was trained again"))
    r, uri, folder = runs["bpe"]
    code, out, err = cli(evaluate_cli.main, capsys, r.info.run_id, "--tracking-uri", uri, "--no-log")
    assert code == 0, err
    assert f"{r.data.metrics['test/ppl']:.2f}" in out and f"{int(r.data.metrics['test/tokens']):,}" in out
    text = tmp_path / "new.txt"
    text.write_text("a dog sat on the cat\nthe mat saw a log\n", encoding="utf-8")
    pieces = load_bundle(folder / "out").tokenizer.tokenize(text.read_text(encoding="utf-8"))
    assert len(pieces) > 12  # more pieces than the 10 words and 2 line ends
    code, out, err = cli(evaluate_cli.main, capsys, str(folder / "out"), "--files", str(text), "--no-log")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("new"))
    assert row.split()[1] == str(len(pieces)) and row.split()[2] == "0.00%"



def test_sigterm_stops_lmbench_evaluate_while_it_scores_in_one_line(tmp_path):
    """It used to die at once (status -15), and Ctrl-C ended in a KeyboardInterrupt traceback."""
    run(tiny_cfg(tmp_path, "trainer.max_steps=2"), output_dir=tmp_path / "out", launch_dir=tmp_path)
    text = tmp_path / "long.txt"  # seconds of scoring
    text.write_text("\n".join(random.Random(0).choice(SENTENCES) for _ in range(60_000)) + "\n")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lmbench.cli.evaluate", str(tmp_path / "out" / "model"), "--files", str(text),
             "--no-log"], stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path,
        )
        deadline = time.time() + 300
        while proc.poll() is None and "eval long" not in log.read_text() and time.time() < deadline:
            time.sleep(0.05)  # its progress bar: scoring has begun
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode == 143, err[-2000:]
    assert err.rstrip().endswith("lmbench-evaluate: terminated by SIGTERM") and "Traceback" not in err
