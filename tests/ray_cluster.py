"""A 4-job sweep on a local Ray cluster into an MLflow server, run by tests/test_ray_cluster.py
inside a network namespace of its own (`unshare -n`, loopback only): Ray binds its ports on every
interface even when told 127.0.0.1, so the cluster must not be reachable from outside.

    unshare -n <python with ray> tests/ray_cluster.py <folder> <lmbench override> ...

Brings up the loopback interface, starts a Ray head (`ray start --head`) and `mlflow server` over
<folder>/mlflow.db, runs `python -m lmbench launcher=ray <overrides>` in <folder> with RAY_ADDRESS
and MLFLOW_TRACKING_URI set (its output in <folder>/sweep.log), stops Ray, exits with lmbench's
status. Ray's workers inherit nothing from the sweep's process: what they need comes through
hydra.job.env_set (lmbench/cli/sweep.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services import free_port, mlflow_server

RAY = Path(sys.executable).parent / "ray"


def main(folder: Path, overrides: list[str]) -> int:
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
