"""`lmbench launcher=ray` against a Ray cluster at an address (`main` below starts it, this file
run as a script in a network namespace of its own): the four families as four Ray tasks, one MLflow
parent run, four child runs, the comparison report on the parent. Needs `pip install -e ".[ray]"`
(best in a venv of its own: docs/machines.md, "Ray") and permission to run `unshare -n`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port, mlflow_server, sweep_runs, write_corpus

HERE = Path(__file__).parent


def can_unshare() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(
        ["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None or importlib.util.find_spec(
    "hydra_plugins.hydra_ray_launcher") is None, reason="needs ray and hydra-ray-launcher: pip install -e '.[ray]'")
@pytest.mark.skipif(not can_unshare(), reason="needs `unshare -n` (a network namespace) to keep Ray on loopback")
def test_four_families_on_a_ray_cluster_nest_under_one_parent(tmp_path):
    corpus = write_corpus(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, str(HERE / "test_ray_cluster.py"), str(tmp_path),
         "model=ngram,rnn,lstm,transformer", "tracking.experiment=ray", f"cache_dir={tmp_path / 'cache'}",
         "dataset=text_files", *(f"dataset.{split}={path}" for split, path in corpus.items()),
         "trainer.max_steps=12", "trainer.batch_size=4", "trainer.bptt=8", "trainer.eval_batch_size=2",
         "trainer.progress=false"],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    log = (tmp_path / "sweep.log").read_text() if (tmp_path / "sweep.log").exists() else ""
    assert proc.returncode == 0, log[-4000:] + proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Ray Launcher is launching 4 jobs" in log
    # The jobs' folders are where Ray's workers run (where `ray start` ran), here the test's folder.
    assert len(list(tmp_path.glob("multirun/*/*/[0-3]/config.yaml"))) == 4
    _, parent, children = sweep_runs(tmp_path, "ray")  # the server's sqlite file, read directly
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.tags["lmbench.model"] for r in children) == ["lstm", "ngram", "rnn", "transformer"]
    assert all(r.info.status == "FINISHED" and "test/ppl" in r.data.metrics for r in children)
    assert {r.data.tags["lmbench.sweep_id"] for r in children} == {parent.info.run_id}
    # The report went through the server into its artifact folder (the sqlite client cannot list it).
    report = sorted(p.name for p in (tmp_path / "artifacts").glob(f"*/{parent.info.run_id}/artifacts/report/*"))
    assert {"comparison.md", "comparison.csv", "valid_ppl.png"} <= set(report), report


# -- the cluster's side: this file run as a script, inside the namespace ----------------------------

RAY = Path(sys.executable).parent / "ray"


def main(folder: Path, overrides: list[str]) -> int:
    """A 4-job sweep on a local Ray cluster into an MLflow server, run by the test above
    inside a network namespace of its own (`unshare -n`, loopback only): Ray binds its ports on every
    interface even when told 127.0.0.1, so the cluster must not be reachable from outside.

        unshare -n <python with ray> tests/test_ray_cluster.py <folder> <lmbench override> ...

    Brings up the loopback interface, starts a Ray head (`ray start --head`) and `mlflow server` over
    <folder>/mlflow.db, runs `python -m lmbench launcher=ray <overrides>` in <folder> with RAY_ADDRESS
    and MLFLOW_TRACKING_URI set (its output in <folder>/sweep.log), stops Ray, exits with lmbench's
    status. Ray's workers inherit nothing from the sweep's process: what they need comes through
    hydra.job.env_set (lmbench/cli/sweep.py).
    """
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    port = free_port()
    subprocess.run(
        [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         "--object-store-memory=200000000", "--include-dashboard=false", "--disable-usage-stats"],
        check=True, capture_output=True, text=True, timeout=180,
        cwd=folder,  # Ray's workers start here, and Hydra's relative job folders (multirun/...) with them
    )
    try:
        with mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts") as server:
            env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "MLFLOW_TRACKING_URI": server.url}
            with (folder / "sweep.log").open("w") as log:
                return subprocess.run(
                    [sys.executable, "-m", "lmbench", "launcher=ray", *overrides],
                    cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900,
                ).returncode
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve(), sys.argv[2:]))
