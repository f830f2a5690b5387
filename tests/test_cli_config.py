"""Where `lmbench` finds its configs, and a user's own config folder."""

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


def test_the_configs_are_the_package_lmbench_conf_and_conf_dir_is_its_folder():
    """pkg://lmbench.conf (what Hydra reads) and CONF_DIR (what tests glob) are one folder; run from
    a checkout it is the checkout's own conf/, not another install's."""
    folder = Path(str(importlib.resources.files(CONF_MODULE)))
    assert folder == CONF_DIR and (CONF_DIR / "config.yaml").is_file()
    if Path(lmbench.__file__).resolve().parent == REPO / "lmbench":
        assert CONF_DIR == REPO / "conf"


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


def test_a_misspelt_key_in_a_users_yaml_or_after_its_option_fails_at_composition(tmp_path):
    folder = user_config_folder(tmp_path)
    proc = lmbench_cli(tmp_path, "--config-dir", str(folder), "trainer=typo", "--cfg", "job")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "max_epoch" in proc.stderr
    proc = lmbench_cli(tmp_path, "--config-dir", str(folder), "dataset=my_corpus", "dataset.fil=b.txt", "--cfg", "job")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "Did you mean dataset.file?" in proc.stderr  # the hint composes with the user's folder too
