"""Full disks: a run folder or an MLflow artifact store that fills up ends the run FAILED in one
paragraph naming the file that could not be written, with exit status 2 -- not h5py's "Exception
ignored" tracebacks and a crash at exit (SIGSEGV, 139), and not the temporary file a copy read from.
The disks are real: small tmpfs mounts (root only; skipped elsewhere, saying so)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

from helpers import corpus_args, small_disk
from mlflow import MlflowClient

from lmbench.training.outcome import write_failure


def cli(folder: Path, *argv: str) -> subprocess.CompletedProcess:
    env_args = [f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", *corpus_args(folder / "data"),
                "trainer.max_steps=12", "model.hidden_size=32", "model.embedding_dim=32", "model.num_layers=1"]
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(folder / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "lmbench", *env_args, *argv], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


def the_run(folder: Path, experiment: str):
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    [r] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return r


def test_a_full_run_folder_exits_2_without_h5py_noise_or_a_crash(tmp_path):
    with small_disk(tmp_path / "small", left=32 * 1024) as small:
        proc = cli(tmp_path, f"hydra.run.dir={small / 'run'}")
    assert proc.returncode == 2, proc.stderr[-3000:]  # was 139: SIGSEGV at exit
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr
    (paragraph,) = [line for line in proc.stderr.splitlines() if line.startswith("lmbench: error:")]
    assert f"cannot write {small / 'run' / 'checkpoints'}" in paragraph and "No space left on device" in paragraph
    assert "hydra.run.dir" in paragraph
    assert the_run(tmp_path, "lmbench").info.status == "FAILED"


def test_a_full_artifact_store_names_its_file_and_not_the_run_folder(tmp_path):
    """The artifact store on a full disk, the run folder not: the message named the temporary file
    MLflow copied from (the copy's source, OSError.filename) and said to move hydra.run.dir."""
    with small_disk(tmp_path / "small", left=16 * 1024) as small:
        MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment(
            "full", artifact_location=(small / "artifacts").as_uri())
        proc = cli(tmp_path, "tracking.experiment=full", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr
    (paragraph,) = [line for line in proc.stderr.splitlines() if line.startswith("lmbench: error:")]
    assert f"cannot write {small / 'artifacts'}" in paragraph and "MLflow artifact store" in paragraph
    assert "hydra.run.dir" not in paragraph and f"the run folder {tmp_path / 'run'} keeps the model" in paragraph
    assert the_run(tmp_path, "full").info.status == "FAILED"


WRITE_FAILS = """
import sys, gc
from pathlib import Path
import numpy as np
from lmbench.models import weights_file
from lmbench.models.recurrent import RecurrentLM
weights_file.check_room = lambda path, needed: None  # the disk fills up after the check
model = RecurrentLM(vocab_size=5000, eos_id=0, embedding_dim=64, hidden_size=64, num_layers=1)
model(np.zeros((1, 4), np.int32))
path = Path(sys.argv[1]) / "model.weights.h5"
try:
    model.save_weights(path)
except Exception as ex:
    print("failed:", type(ex).__name__, "left:", path.exists())
del model
gc.collect()
"""


def test_a_weights_file_that_fails_half_way_is_closed_and_removed(tmp_path):
    """h5py's file, left open by Keras when a write failed, tried to write again at every object
    collected and at exit: "Exception ignored" tracebacks, then SIGSEGV."""
    with small_disk(tmp_path / "small", left=64 * 1024) as small:
        proc = subprocess.run([sys.executable, "-c", WRITE_FAILS, str(small)], capture_output=True, text=True,
                              timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "failed:" in proc.stdout and "left: False" in proc.stdout
    assert "Exception ignored" not in proc.stderr


def test_the_destination_of_a_copy_is_named():
    copy = OSError(errno.ENOSPC, "No space left on device", "/tmp/tmpx/model/MLmodel", None, "/store/1/abc/MLmodel")
    said = write_failure(copy, Path("/runs/a"))
    assert said.startswith("cannot write /store/1/abc/MLmodel (No space left on device); it is in the MLflow")
    inside = write_failure(OSError(errno.ENOSPC, "No space left on device", "/runs/a/checkpoints/x.h5"),
                           Path("/runs/a"))
    assert "cannot write /runs/a/checkpoints/x.h5" in inside and "hydra.run.dir" in inside
    assert "into the run folder /runs/a" in write_failure(OSError(errno.ENOSPC, "No space"), Path("/runs/a"))


def test_a_store_write_that_names_no_file_names_the_artifact_store():
    """A plain write (no file named) or a copy's source: the run's artifact store is named instead
    (OSError's constructor drops filename2 when filename is None, so it is set apart)."""
    from lmbench.tracking import Tracker

    tracker = Tracker(False, "sqlite:///x.db", "e")
    tracker.artifact_uri = "file:///store/1/abc/artifacts"
    plain = tracker._in_store(OSError(errno.ENOSPC, "No space left on device"))
    assert plain.filename2 == "/store/1/abc/artifacts"
    inside = OSError(errno.ENOSPC, "No space left on device", "/store/1/abc/artifacts/model/MLmodel")
    assert tracker._in_store(inside) is inside
    said = write_failure(plain, Path("/runs/a"))
    assert said.startswith("cannot write /store/1/abc/artifacts (No space left on device); it is in the MLflow")
