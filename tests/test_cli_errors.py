"""Bad input from the command line: one clear paragraph, no traceback, a non-zero exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmbench.paths import CONF_DIR


def lmbench(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("LMBENCH_DATA_DIR", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "lmbench", f"hydra.run.dir={tmp_path / 'out'}",
         f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "trainer.progress=false", *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def text_files(tmp_path: Path, train: bytes, other: bytes = b"a b\n") -> list[str]:
    paths = []
    for split, data in (("train", train), ("valid", other), ("test", other)):
        p = tmp_path / f"{split}.txt"
        p.write_bytes(data)
        paths.append(f"dataset.{split}={p}")
    return ["dataset=text_files", *paths]


def test_unknown_group_option_lists_the_choices(tmp_path):
    proc = lmbench(tmp_path, "model=lstmm")
    assert_clean_error(
        proc, "lmbench: error: model=lstmm is not an option of the model group. Did you mean model=lstm?",
        "Options: awd_lstm, awd_lstm_small, gru, interpolated, lstm,",
    )
    assert proc.returncode == 2 and "Config search path" not in proc.stderr  # not Hydra's internals
    proc = lmbench(tmp_path, "-m", "model=ngram,LSTM")  # each value of a sweep, before any job
    assert_clean_error(proc, "model=LSTM is not an option of the model group. Did you mean model=lstm?")


def test_a_misspelt_key_gets_lmbenchs_hint_only(tmp_path):
    """Not Hydra's advice to write +optimizer.lr, which would fail later, at the optimizer."""
    proc = lmbench(tmp_path, "optimizer.lr=0.1")
    assert_clean_error(proc, "lmbench: error: optimizer.lr is not a config key. Valid keys under optimizer:")
    assert proc.returncode == 2 and "+optimizer.lr" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr


def test_misspelt_key_names_the_key_and_the_valid_ones(tmp_path):
    proc = lmbench(tmp_path, "trainer.max_epoch=2")
    assert_clean_error(proc, "trainer.max_epoch", "Did you mean trainer.max_epochs?", "bptt")


def test_misspelt_key_in_a_target_group(tmp_path):
    proc = lmbench(tmp_path, *text_files(tmp_path, b"a b c\n" * 50), "+model.hiden_size=3")
    assert_clean_error(proc, "model.hiden_size", "Did you mean model.hidden_size?")
    assert proc.returncode == 2


def test_missing_corpus_offline_says_where_to_put_files(tmp_path):
    proc = lmbench(tmp_path, "dataset.url=http://127.0.0.1:9/")
    assert_clean_error(proc, "ptb.train.txt", "LMBENCH_DATA_DIR")
    assert proc.returncode == 2


def test_empty_corpus(tmp_path):
    proc = lmbench(tmp_path, *text_files(tmp_path, b""))
    assert_clean_error(proc, "train.txt", "empty")
    assert proc.returncode == 2


def test_invalid_utf8_names_file_and_byte_offset(tmp_path):
    proc = lmbench(tmp_path, *text_files(tmp_path, b"good line\nbad \xff byte\n"))
    assert_clean_error(proc, "train.txt", "byte 14", "dataset.encoding_errors=replace")
    assert proc.returncode == 2


@pytest.mark.parametrize("bptt", [0, -3])
def test_bptt_must_be_positive(tmp_path, bptt):
    proc = lmbench(tmp_path, *text_files(tmp_path, b"a b c\n" * 50), f"trainer.bptt={bptt}")
    assert_clean_error(proc, "trainer.bptt")
    assert proc.returncode == 2


def test_batch_size_larger_than_the_streams_allow(tmp_path):
    proc = lmbench(tmp_path, *text_files(tmp_path, b"a b c\n" * 5), "trainer.batch_size=50")
    assert_clean_error(proc, "trainer.batch_size=50", "20 training tokens")
    assert proc.returncode == 2


def test_conf_dir_ships_with_the_package():
    assert (CONF_DIR / "config.yaml").is_file()


def test_a_sweep_with_an_unusable_tracking_uri_stops_before_its_jobs(tmp_path):
    """Hydra turns an exception in a callback into a warning and runs the jobs anyway; the sweep
    callback stops the sweep with the one paragraph instead."""
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmbench",
            "-m",
            "model=ngram",
            "tracking.uri=foo://x",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert_clean_error(proc, "lmbench: error: tracking.uri='foo://x' has the unknown scheme 'foo'")
    assert "Launching" not in proc.stdout + proc.stderr and "UserWarning" not in proc.stderr


def test_subword_vocab_size_below_the_byte_alphabet(tmp_path):
    """The tokenizer's own ConfigError, not Hydra's wrapping of it (an instantiation error)."""
    proc = lmbench(tmp_path, *text_files(tmp_path, b"a b c\n" * 50), "tokenizer=byte_bpe", "tokenizer.vocab_size=100")
    assert_clean_error(proc, "lmbench: error: tokenizer.vocab_size must be an integer >= 257 for byte_bpe", "got 100")
    assert proc.returncode == 2 and "Error in call to target" not in proc.stderr


def test_a_run_folder_that_cannot_be_created_is_one_paragraph(tmp_path):
    """Hydra creates the run folder and printed a traceback when it could not."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    proc = lmbench(tmp_path, "model=ngram", "tracking=none", f"hydra.run.dir={blocker / 'run'}")
    assert proc.returncode == 2
    assert_clean_error(proc, f"lmbench: error: hydra.run.dir={blocker / 'run'} cannot be created (Not a directory")


@pytest.mark.parametrize(("override", "needle"), [
    ("trainer.max_steps=abc", "trainer.max_steps takes a whole number or null"),
    ("tracking.enabled=maybe", "tracking.enabled takes true or false"),
    ("dataset.split_fractions=3", "dataset.split_fractions takes a list of numbers"),
])
def test_a_wrong_type_is_one_paragraph_with_exit_2(tmp_path, override, needle):
    proc = lmbench(tmp_path, override)
    assert_clean_error(proc, f"lmbench: error: {needle}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_wrong_type_in_any_value_of_a_sweep_stops_it_before_its_first_job(tmp_path):
    proc = lmbench(tmp_path, "-m", "model=ngram", "trainer.max_steps=100,abc")
    assert_clean_error(proc, "lmbench: error: trainer.max_steps takes a whole number or null")
    assert proc.returncode == 2 and "Sweep:" not in proc.stdout and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(("override", "needle"), [
    ("optimizer.learning_rate=-1", "optimizer.learning_rate must be a finite number in (0.0, inf), got -1"),
    ("trainer.divergence_grace_steps=-3", "trainer.divergence_grace_steps must be >= 0"),
    ("model.head.chunk_logits=0", "model.head.chunk_logits must be an integer >= 1"),
])
def test_values_out_of_range_are_refused_before_any_data_is_read(tmp_path, override, needle):
    """The corpus named here does not exist: the value's paragraph comes first, so no data was read."""
    proc = lmbench(tmp_path, "dataset=text_files", f"dataset.file={tmp_path / 'missing.txt'}", override)
    assert_clean_error(proc, f"lmbench: error: {needle}")
    assert "missing.txt" not in proc.stderr and proc.returncode == 2
