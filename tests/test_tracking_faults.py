"""Tracking-store faults: found before any training, in one paragraph and within seconds; a server
that goes away mid-run does not stop training, and nothing logged before is lost."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from helpers import compose_hydra, corpus_args, free_port, mlflow_server, run_cli
from mlflow import MlflowClient
from omegaconf import OmegaConf

from lmbench import names
from lmbench.cli.sweep import check_launcher_store
from lmbench.errors import ConfigError, TrackingError
from lmbench.tracking import check_store

FAULT_BUDGET_S = 30  # what a user waits, at most, to hear that the store is wrong


def test_an_unreachable_server_is_found_within_seconds():
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"no MLflow tracking server answers at {uri}"):
        check_store(uri)
    assert time.monotonic() - started < FAULT_BUDGET_S  # MLflow's own retries: about 4 minutes


@pytest.mark.parametrize("sweep", [False, True])
def test_an_unreachable_server_is_reported_before_training(tmp_path, sweep):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = run_cli(tmp_path, uri, *(["-m"] if sweep else []), *corpus_args(tmp_path / "data"), "model=ngram",
                   ok=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (paragraph,) = [line for line in proc.stderr.splitlines() if line.startswith("lmbench: error:")]
    assert f"no MLflow tracking server answers at {uri}" in paragraph
    assert "Traceback" not in proc.stderr and "test ppl" not in proc.stdout  # nothing trained


def test_a_wrong_scheme_is_refused_at_once(tmp_path):
    proc = run_cli(tmp_path, "htp://127.0.0.1:5000", *corpus_args(tmp_path / "data"), "model=ngram", ok=False)
    assert proc.returncode == 2 and "has the unknown scheme 'htp'" in proc.stderr


def declared(jobs_run_on: str | None) -> OmegaConf:
    return OmegaConf.create({"sweep": {"jobs_run_on": jobs_run_on}})


def test_a_file_store_is_refused_where_the_launcher_preset_declares_jobs_elsewhere():
    """The launcher preset declares where its jobs run (sweep.jobs_run_on); the check read the
    launcher's class name (SlurmLauncher, RayLauncher with an address) instead."""
    for where in ("the SLURM cluster's nodes", "10.0.0.1:6379"):
        refused = f"is a file on this machine.*other machines \\({where}\\).*tracking server"
        with pytest.raises(ConfigError, match=refused):
            check_launcher_store(declared(where), "sqlite:////work/mlflow.db")
        check_launcher_store(declared(where), "http://10.0.0.2:5000")  # a server: fine
    check_launcher_store(declared(None), "sqlite:////work/mlflow.db")  # jobs on this machine may share the file
    for preset, where in (("submitit_slurm", "the SLURM cluster's nodes"), ("joblib", None), ("submitit_local", None)):
        assert compose_hydra(f"launcher={preset}").sweep.jobs_run_on == where


def test_submitit_slurm_with_the_default_sqlite_store_is_refused_before_submitting(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_cli(tmp_path, "", "launcher=submitit_slurm", *corpus_args(tmp_path / "data"),
                   "model=ngram", ok=False)
    assert proc.returncode == 2 and "runs jobs on other machines (the SLURM cluster's nodes)" in proc.stderr
    assert not list(tmp_path.rglob(".submitit"))  # nothing was submitted


def wait_for_steps(db: str, experiment: str, n: int, timeout: float = 600) -> None:
    """Until the store has `n` train/loss steps of the experiment's run."""
    client, deadline = MlflowClient(tracking_uri=db), time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id]) if found else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, names.TRAIN_LOSS)) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {n} logged steps within {timeout} s")


@pytest.mark.slow  # two server starts and a training run: about a minute idle, several under load
@pytest.mark.parametrize("comes_back", [True, False])
def test_a_server_gone_mid_run_does_not_stop_training(tmp_path, comes_back):
    """The server is stopped once training has logged its first steps; the run trains on. When the
    server comes back, every kept write arrives (all steps, the model, FINISHED); when it does not,
    the run still ends normally, says what it could not log, and the store keeps what it had."""
    db, port = f"sqlite:///{tmp_path / 'mlflow.db'}", free_port()
    artifacts = tmp_path / "artifacts"
    argv = [sys.executable, "-m", "lmbench", *corpus_args(tmp_path / "data"), "model=rnn", "model.num_layers=1",
            "trainer.max_epochs=3", "tracking.log_every_n_steps=1", "tracking.retry_every_s=1",
            f"tracking.final_wait_s={900 if comes_back else 2}", "tracking.experiment=gone"]
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # a refused write returns at once: the test stays short
    with mlflow_server(db, artifacts, port=port) as server:
        env["MLFLOW_TRACKING_URI"] = server.url
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            wait_for_steps(db, "gone", 3)
        finally:
            server.stop()
    try:
        if comes_back:
            time.sleep(2)
            with mlflow_server(db, artifacts, port=port):
                out, _ = proc.communicate(timeout=900)
        else:
            out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "test ppl" in out and "Traceback" not in out  # training went on to its end
    steps = int(re.search(r"3 epoch\(s\), (\d+) step\(s\)", out).group(1))

    client = MlflowClient(tracking_uri=db)  # the store itself, read directly
    (run,) = client.search_runs([client.get_experiment_by_name("gone").experiment_id])
    logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, names.TRAIN_LOSS))
    assert logged == list(range(1, len(logged) + 1))  # no step twice, none lost before the stop
    if comes_back:
        assert len(logged) == steps, out[-3000:]
        assert run.info.status == "FINISHED" and "test/ppl" in run.data.metrics
        (model,) = client.search_logged_models(experiment_ids=[run.info.experiment_id])
        assert model.source_run_id == run.info.run_id
        assert "answers again" in out and "not logged" not in out
    else:
        assert 3 <= len(logged) < steps and run.info.status == "RUNNING"
        (warning,) = [line for line in out.splitlines() if line.startswith("lmbench: warning: the tracking store")]
        assert "metric values" in warning and "MLflow model" in warning and "end of run" in warning


def test_writes_kept_while_the_store_is_unreachable_are_sent_in_order():
    from lmbench.tracking import Tracker

    tracker = Tracker(True, "http://127.0.0.1:1", "x", retry_every_s=0, final_wait_s=0)
    tracker.run_id = "r"  # as if started
    sent, down = [], True

    def write(item):
        def call():
            if down:
                raise RuntimeError("API request failed: Max retries exceeded (Connection refused)")
            sent.append(item)
        return call

    tracker._write("metric values", write(1), count=3)
    tracker._write("MLflow model", write(2))
    assert sent == [] and tracker._unlogged.summary() == "3 metric values, 1 MLflow model"
    down = False
    tracker._write("tags", write(3))
    assert sent == [1, 2, 3] and not tracker._unlogged.writes
    with pytest.raises(RuntimeError, match="refused the write"):  # any other error is raised as it is
        tracker._write("tags", lambda: (_ for _ in ()).throw(RuntimeError("refused the write")))


RACE = """
import sys, time
from lmbench.tracking.store import ensure_experiment
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # every process opens the fresh store at the same moment
print(ensure_experiment(sys.argv[1], "lmbench"))
"""


def test_commands_started_together_on_a_fresh_sqlite_store_all_get_it(tmp_path):
    """Two `lmbench` commands started at once in one folder (not a sweep, which makes its store
    first) both used to create MLflow's tables, and the slower died: "table experiments already exists"."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 8  # after every interpreter has imported MLflow
    procs = [subprocess.Popen([sys.executable, "-c", RACE, uri, str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # one experiment, the same id for all
    assert sorted(os.listdir(tmp_path)) == ["mlflow.db"]  # the lock leaves nothing behind


RUN_RACE = """
import sys, time
from lmbench.tracking import Tracker
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # every process starts its run on the fresh store at once
tracker = Tracker(True, sys.argv[1], "race")
tracker.start("race", {}, {"seed": sys.argv[3]})
tracker.log_metrics({"valid/ppl": 1.5}, step=1)
tracker.finish()
"""


def test_runs_started_together_on_a_fresh_sqlite_store_are_all_recorded(tmp_path):
    """Four runs started at one instant on a fresh store: `Tracker.start` made its MlflowClient (which
    migrates a fresh sqlite file, unlocked) before taking the schema's lock, so every process
    migrated at once ("table _alembic_tmp_tags already exists", "duplicate column name: step") and
    no run was recorded. Now every client is made once the schema exists (`store_client`)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 8  # after every interpreter has imported MLflow
    procs = [subprocess.Popen([sys.executable, "-c", RUN_RACE, uri, str(start), str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.metrics == {"valid/ppl": 1.5} for r in runs)


FOLDER_RACE = """
import os, sys, time
from hydra import compose, initialize_config_dir
from lmbench.cli.plugins import register_configs
from lmbench.paths import CONF_DIR
register_configs()
os.chdir(sys.argv[1])
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    cfg = compose("config", return_hydra_config=True)
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
print(cfg.hydra.run.dir)  # resolved as Hydra resolves it when the run starts: the same second for all
"""


def test_commands_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    """The default run folder is named after the second the command started, and Hydra creates it
    with exist_ok: commands started together shared it (one resumed from the other's checkpoint)."""
    start = time.time() + 8
    procs = [subprocess.Popen([sys.executable, "-c", FOLDER_RACE, str(tmp_path), str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    folders = [out.strip() for out, _ in results]
    assert len(set(folders)) == 3, folders
    assert all((tmp_path / folder).is_dir() for folder in folders)
