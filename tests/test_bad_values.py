"""Every numeric config value is range-checked before any work: a bad one is a ConfigError naming
the key and its range, and no MLflow run (nor experiment) is created."""

from __future__ import annotations

import pytest
from helpers import tiny_cfg
from mlflow import MlflowClient

from lmbench.errors import ConfigError, DataError
from lmbench.training.run import run

CASES = [
    # the optimizer: Keras itself trains with a negative learning rate and reports a figure
    (("optimizer.learning_rate=-0.1",), r"optimizer.learning_rate must be a finite number in \(0.0, inf\)"),
    (("optimizer.learning_rate=0",), r"optimizer.learning_rate must be"),
    (("optimizer.learning_rate=nan",), r"optimizer.learning_rate must be"),
    (("optimizer=sgd", "optimizer.momentum=1.5"), r"optimizer.momentum must be a finite number in \[0.0, 1.0\)"),
    (("optimizer=adam", "optimizer.beta_2=1.0"), r"optimizer.beta_2 must be"),
    (("optimizer=adam", "optimizer.epsilon=0"), r"optimizer.epsilon must be"),
    (("optimizer=adamw", "optimizer.weight_decay=-0.01"), r"optimizer.weight_decay must be"),
    # the trainer
    (("trainer.clip_norm=0",), r"trainer.clip_norm must be > 0"),
    (("trainer.clip_norm=-1",), r"trainer.clip_norm must be > 0"),
    (("trainer.batch_size=0",), r"trainer.batch_size"),
    (("trainer.bptt=-3",), r"trainer.bptt"),
    (("trainer.min_delta=-0.5",), r"trainer.min_delta"),
    (("trainer.lr_decay_patience=-1",), r"trainer.lr_decay_patience"),
    (("trainer.max_epochs=0",), r"trainer.max_epochs must be >= 1"),
    (("trainer.eval_batch_size=0",), r"trainer.eval_batch_size must be >= 1"),
    (("trainer.warmup_steps=-1",), r"trainer.warmup_steps must be >= 0"),
    (("trainer.min_lr_ratio=1.5",), r"min_lr_ratio in \[0, 1\]"),
    # tracking, the model
    (("tracking.log_every_n_steps=0",), r"tracking.log_every_n_steps must be >= 1"),
    (("model.dropout=1.0",), r"model.dropout must be in \[0, 1\)"),
    (("model.hidden_size=0",), r"must be >= 1"),
]


@pytest.mark.parametrize("overrides,message", CASES, ids=[" ".join(o) for o, _ in CASES])
def test_an_out_of_range_value_stops_the_run_before_mlflow_sees_it(tmp_path, overrides, message):
    cfg = tiny_cfg(tmp_path, "tracking.experiment=refused", *overrides)
    with pytest.raises(ConfigError, match=message):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert MlflowClient(tracking_uri=cfg.tracking.uri).get_experiment_by_name("refused") is None


URIS = [
    ("foo://bar", "unknown scheme 'foo'"),
    ("sqllite:///mlflow.db", "unknown scheme 'sqllite'"),
    ("sqlite://mlflow.db", "three slashes"),
    ("sqlite:///no/such/folder/mlflow.db", "does not exist"),
    ("http:///api", "names no host"),
]


@pytest.mark.parametrize("uri,message", URIS, ids=[u for u, _ in URIS])
def test_a_tracking_uri_mlflow_cannot_use_is_refused_before_any_work(tmp_path, monkeypatch, uri, message):
    monkeypatch.chdir(tmp_path)  # relative sqlite paths are relative to the launch folder
    cfg = tiny_cfg(tmp_path, f"tracking.uri={uri}")
    with pytest.raises(ConfigError, match=f"tracking.uri=.*{message}"):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("*.db"))


def test_the_environments_tracking_uri_is_checked_too(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgress://localhost/db")
    cfg = tiny_cfg(tmp_path, "tracking.uri=null")
    with pytest.raises(ConfigError, match=r"\$MLFLOW_TRACKING_URI=.*unknown scheme 'postgress'"):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)


def test_a_run_folder_that_fills_up_fails_the_run_in_one_paragraph_and_keeps_what_was_logged(tmp_path):
    """A real full disk: a 1 MiB tmpfs with 64 KiB left holds the run folder, the store does not.
    The first checkpoint cannot be written: DataError, the run FAILED, its first steps kept."""
    import os
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]).returncode:
        pytest.skip("needs root, to mount a small tmpfs")
    try:
        (small / "filler").write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))
        cfg = tiny_cfg(
            tmp_path, "trainer.max_steps=10", "trainer.checkpoint_every_n_steps=5", "tracking.log_every_n_steps=1"
        )
        with pytest.raises(DataError, match=r"cannot write .*small.*\(No space left on device(\)|: [0-9.]+ MB needed)"):
            run(cfg, output_dir=small / "out", launch_dir=tmp_path)
    finally:
        subprocess.run(["umount", str(small)], check=False)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    [r] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert r.info.status == "FAILED" and "No space left on device" in r.data.tags["lmbench.error"]
    assert [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")] == [1, 2, 3, 4, 5]
