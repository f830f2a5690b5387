"""Where `lmbench` finds its configs, what `lmbench --help` shows, and a user's own config folder."""

from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
from pathlib import Path

import lmbench
from lmbench.paths import CONF_DIR, CONF_MODULE

REPO = Path(__file__).resolve().parent.parent


def lmbench_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(cwd / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "lmbench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def groups_section(help_text: str) -> str:
    return help_text.split("== Config groups", 1)[1].split("== The composed config", 1)[0]


def test_the_configs_are_the_package_lmbench_conf_and_conf_dir_is_its_folder():
    """pkg://lmbench.conf (what Hydra reads) and CONF_DIR (what tests glob) are one folder; run from
    a checkout it is the checkout's own conf/, not another install's."""
    folder = Path(str(importlib.resources.files(CONF_MODULE)))
    assert folder == CONF_DIR and (CONF_DIR / "config.yaml").is_file()
    if Path(lmbench.__file__).resolve().parent == REPO / "lmbench":
        assert CONF_DIR == REPO / "conf"


def test_help_page_opens_with_a_usage_header_and_lists_groups_without_schemas(tmp_path):
    proc = lmbench_cli(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("lmbench: train n-gram, RNN, LSTM, GRU and Transformer language models")
    for needle in ("lmbench [group=option ...] [key=value ...]", "lmbench -m ", "lmbench experiment=quick",
                   "--config-dir", "README.md", "docs/architecture.md", "lmbench --hydra-help"):
        assert needle in out, needle
    assert "powered by Hydra" not in out
    groups = groups_section(out)
    assert "schema" not in groups, groups
    assert "dataset: ptb, text_files, tinyshakespeare, wikitext103, wikitext2\n" in groups
    assert "tracking: mlflow, none\n" in groups and "trainer: default\n" in groups
    assert "model: awd_lstm, awd_lstm_small, gru, interpolated, lstm," in groups
    assert "experiment: awd_lstm_ptb, equal_time, ptb_classic, quick, scaling," in groups
    assert "trainer:\n  max_epochs: 1" in out  # the composed config follows


def test_job_log_is_lmbench_log(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("a b c\nb c a\n" * 20)
    proc = lmbench_cli(
        tmp_path, "model=ngram", "model.order=2", "dataset=text_files", "tracking=none", "trainer.progress=false",
        *(f"dataset.{s}={tmp_path / s}.txt" for s in ("train", "valid", "test")), f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out" / "lmbench.log").is_file()
    assert not (tmp_path / "out" / "main.log").exists() and not (tmp_path / "out" / "cli.log").exists()


def user_config_folder(tmp_path: Path) -> Path:
    """A user's own folder: a model variant, a corpus and a trainer preset with a misspelt key."""
    folder = tmp_path / "my_conf"
    for group in ("model", "dataset", "trainer"):
        (folder / group).mkdir(parents=True)
    (folder / "model" / "my_lstm.yaml").write_text(
        "_target_: lmbench.models.recurrent.RecurrentLM\ncell: lstm\nembedding_dim: 24\nhidden_size: 24\n"
        "num_layers: 1\ndropout: 0.0\ntie_embeddings: true\n"
    )
    (folder / "dataset" / "my_corpus.yaml").write_text("name: my_corpus\nfile: all.txt\n")
    (folder / "trainer" / "typo.yaml").write_text("max_epoch: 2\n")
    return folder


def test_a_users_config_folder_adds_options_by_config_dir_and_by_searchpath(tmp_path):
    folder = user_config_folder(tmp_path)
    for how in (["--config-dir", str(folder)], [f"hydra.searchpath=[file://{folder}]"]):
        proc = lmbench_cli(tmp_path, *how, "model=my_lstm", "dataset=my_corpus", "--cfg", "job")
        assert proc.returncode == 0, proc.stderr
        assert "hidden_size: 24" in proc.stdout and "name: my_corpus" in proc.stdout
    # The help page lists the folder's options too (Hydra lists them for --config-dir only: a
    # hydra.searchpath override is applied when composing, after the groups are listed).
    groups = groups_section(lmbench_cli(tmp_path, "--config-dir", str(folder), "--help").stdout).splitlines()
    assert "my_lstm" in next(line for line in groups if line.startswith("model: "))


def test_a_misspelt_key_in_a_users_yaml_or_after_its_option_fails_at_composition(tmp_path):
    folder = user_config_folder(tmp_path)
    proc = lmbench_cli(tmp_path, "--config-dir", str(folder), "trainer=typo", "--cfg", "job")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "max_epoch" in proc.stderr
    proc = lmbench_cli(tmp_path, "--config-dir", str(folder), "dataset=my_corpus", "dataset.fil=b.txt", "--cfg", "job")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # lmbench's paragraph, before Hydra's
    assert "Did you mean dataset.file?" in proc.stderr  # the hint composes with the user's folder too


def test_evaluate_reads_a_named_dataset_from_the_same_configs(tmp_path):
    """`lmbench-evaluate --dataset NAME` composes conf/dataset/NAME through pkg://lmbench.conf too."""
    from lmbench.cli.evaluate import dataset_config

    cfg = dataset_config("wikitext2", None, [f"dataset.data_dir={tmp_path}"])
    assert cfg.name == "wikitext2" and cfg.subdir == "wikitext-2" and cfg.data_dir == str(tmp_path)


def test_a_yaml_syntax_error_in_a_users_config_is_one_paragraph_naming_the_file_and_line(tmp_path):
    folder = user_config_folder(tmp_path)
    broken = folder / "model" / "broken.yaml"
    broken.write_text("defaults:\n  - lstm\nhidden_size: 24\n  embedding_dim: [24\n")  # a stray indent
    proc = lmbench_cli(tmp_path, "--config-dir", str(folder), "model=broken", "--cfg", "job")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"lmbench: error: the config file {broken} is not valid YAML" in proc.stderr
    assert "at line 4, column 16: `embedding_dim: [24`" in proc.stderr
