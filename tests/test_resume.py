"""A run killed with SIGKILL continues from its last checkpoint: same MLflow run, every metric step
exactly once, and the final perplexity of an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_corpus
from mlflow import MlflowClient


def command(tmp_path: Path, run_dir: Path, db: Path) -> list[str]:
    paths = write_corpus(tmp_path, n_train=3000, n_eval=100)
    return [
        sys.executable, "-m", "lmbench",
        f"hydra.run.dir={run_dir}",
        "dataset=text_files", f"dataset.train={paths['train']}", f"dataset.valid={paths['valid']}",
        f"dataset.test={paths['test']}", f"cache_dir={tmp_path / 'cache'}",
        "model.hidden_size=32", "model.embedding_dim=32", "model.num_layers=1",
        "optimizer=adam", "optimizer.learning_rate=0.003",
        "trainer.batch_size=4", "trainer.bptt=8", "trainer.max_epochs=2", "trainer.progress=false",
        "trainer.checkpoint_every_n_steps=20", "model.dropout=0.1",
        f"tracking.uri=sqlite:///{db}", "tracking.experiment=resume", "tracking.log_every_n_steps=10",
    ]


def env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def the_run(db: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_sigkill_then_rerun_continues_the_same_run(tmp_path):
    ref_db, db = tmp_path / "ref.db", tmp_path / "run.db"
    subprocess.run(command(tmp_path, tmp_path / "ref", ref_db), env=env(), check=True, capture_output=True, timeout=600)
    ref_client, ref = the_run(ref_db)
    total = max(m.step for m in ref_client.get_metric_history(ref.info.run_id, "train/loss"))

    run_dir = tmp_path / "run"
    cmd = command(tmp_path, run_dir, db)
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = run_dir / "checkpoints" / "last" / "trainer_state.json"
    killed_at = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            step = json.loads(state_file.read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            step = 0
        if step >= total // 3:
            proc.send_signal(signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.02)
    proc.wait()
    if killed_at is None:
        pytest.fail(f"the run ended (code {proc.returncode}) before a checkpoint past step {total // 3}")
    assert killed_at < total, "killed too late to test resuming"
    client, killed = the_run(db)
    assert killed.info.status == "RUNNING"  # SIGKILL gives MLflow no chance to close the run

    resumed = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout

    client, r = the_run(db)  # still one run: the same one, now finished
    assert r.info.run_id == killed.info.run_id
    assert r.info.status == "FINISHED"
    assert int(r.data.tags["lmbench.resumed_at_step"]) <= killed_at
    for key in ("train/loss", "valid/ppl"):
        got = [m.step for m in client.get_metric_history(r.info.run_id, key)]
        want = [m.step for m in ref_client.get_metric_history(ref.info.run_id, key)]
        assert sorted(got) == want, key  # no step lost, none twice
    # The whole run's training rate is one value, logged once at the end; the per-window rate is
    # its own curve. (It used to share the name: after a resume the whole-run figure came at step 0,
    # below steps the store already had, and was dropped.)
    [rate] = client.get_metric_history(r.info.run_id, "train/tokens_per_sec")
    assert rate.value == r.data.metrics["train/tokens_per_sec"] > 0
    bundle_metrics = json.loads((run_dir / "model" / "lmbench_model.json").read_text())["metrics"]
    assert rate.value == pytest.approx(bundle_metrics["train/tokens_per_sec"], rel=1e-12)
    windows = [m.step for m in client.get_metric_history(r.info.run_id, "train/window_tokens_per_sec")]
    assert sorted(windows) == [m.step for m in ref_client.get_metric_history(ref.info.run_id, "train/loss")]
    print(f"killed at step {killed_at} of {total}; test ppl uninterrupted "
          f"{ref.data.metrics['test/ppl']:.4f}, resumed {r.data.metrics['test/ppl']:.4f}")
    assert r.data.metrics["test/ppl"] == pytest.approx(ref.data.metrics["test/ppl"], rel=0.01)


def test_ctrl_c_marks_the_run_killed_and_says_how_to_continue(tmp_path):
    db, run_dir = tmp_path / "run.db", tmp_path / "run"
    cmd = command(tmp_path, run_dir, db)
    # A shell starts background commands with SIGINT ignored, and a Python started so never installs
    # its KeyboardInterrupt handler: give the child the default disposition, as a terminal's
    # foreground job has, whatever this test runner inherited.
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state_file = run_dir / "checkpoints" / "last" / "trainer_state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not state_file.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert f"lmbench: interrupted. Continue with the same command plus hydra.run.dir={run_dir}" in err
    assert "Traceback" not in err and "Error executing job" not in err  # no Hydra traceback
    assert "Did you mean" not in err  # not taken for a command-line error
    _, run = the_run(db)
    assert run.info.status == "KILLED"
    assert run.data.tags["lmbench.error"] == "interrupted by the user"


def test_sigterm_ends_the_run_killed_and_the_same_command_continues_it(tmp_path):
    """SIGTERM is how SLURM's preemption, `docker stop` and `kill` stop a job: it used to end the
    process at once and leave its MLflow run RUNNING for ever."""
    db, run_dir = tmp_path / "run.db", tmp_path / "run"
    cmd = [*command(tmp_path, run_dir, db), "trainer.max_steps=60"]  # the first checkpoint is at step 20
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state_file = run_dir / "checkpoints" / "last" / "trainer_state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not state_file.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]  # 128 + 15, as a shell reports it
    assert f"lmbench: terminated by SIGTERM. Continue with the same command plus hydra.run.dir={run_dir}" in err
    assert "Traceback" not in err and "Error executing job" not in err
    _, killed = the_run(db)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["lmbench.error"].startswith("terminated by SIGTERM")

    resumed = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout
    _, run = the_run(db)  # the same run, now finished
    assert (run.info.run_id, run.info.status) == (killed.info.run_id, "FINISHED")
