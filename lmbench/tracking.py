"""MLflow tracking: the only module that imports mlflow.

A `Tracker` owns one MLflow run. Disabled tracking (`tracking=none`) gives the same object with
every call a no-op, so the trainer never branches on it. Whatever was logged stays logged when a run
fails: `finish("FAILED", reason)` ends the run with that status and the reason as a tag.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"


def resolve_uri(configured: str | None, launch_dir: Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db (absolute, so
    that every process of a sweep writes to the same store wherever it runs)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(launch_dir / DEFAULT_DB).resolve()}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class Tracker:
    def __init__(self, enabled: bool, uri: str, experiment: str, log_every_n_steps: int = 50):
        self.enabled = enabled
        self.uri = uri
        self.experiment = experiment
        self.log_every_n_steps = max(1, int(log_every_n_steps))
        self.run_id: str | None = None
        self._mlflow = None
        self._logged_upto: dict[str, int] = {}  # after a resume: last step already in the store

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, run_name_prefix: str, tags: dict[str, str], params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(self.uri)
        experiment_id = ensure_experiment(self.uri, self.experiment)
        run = mlflow.start_run(experiment_id=experiment_id)
        self.run_id = run.info.run_id
        mlflow.set_tags({**tags, "mlflow.runName": f"{run_name_prefix}-{self.run_id[:8]}"})
        # MLflow takes at most 100 params per request; log_params batches, values are strings.
        mlflow.log_params({k: ("null" if v is None else v) for k, v in params.items()})

    def resume(self, run_id: str, resumed_at_step: int) -> None:
        """Continue an earlier run (killed or interrupted) as the same MLflow run.

        Steps the killed process had already logged past its last checkpoint are recomputed by
        the resumed one; they are skipped, so every (metric, step) is in the store exactly once.
        """
        if not self.enabled:
            return
        import mlflow
        from mlflow import MlflowClient

        self._mlflow = mlflow
        mlflow.set_tracking_uri(self.uri)
        client = MlflowClient(tracking_uri=self.uri)
        run = client.get_run(run_id)  # MlflowException if the store does not have it
        self._logged_upto = {
            key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics
        }
        mlflow.start_run(run_id=run_id)
        self.run_id = run_id
        mlflow.set_tag("lmbench.resumed_at_step", str(resumed_at_step))

    def finish(self, status: str = "FINISHED", reason: str | None = None, step: int | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        mlflow = self._mlflow
        if reason:
            mlflow.set_tag("lmbench.error", reason[:5000])
        if step is not None:
            mlflow.set_tag("lmbench.failed_step", str(step))
        mlflow.end_run(status=status)
        self.run_id = None

    # -- logging -------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.enabled and self.run_id is not None:
            at = 0 if step is None else step
            fresh = {k: float(v) for k, v in metrics.items() if at > self._logged_upto.get(k, -1)}
            if fresh:
                self._mlflow.log_metrics(fresh, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.enabled and self.run_id is not None:
            self._mlflow.set_tags(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and self.run_id is not None:
            path = Path(path)
            if path.is_dir():
                self._mlflow.log_artifacts(str(path), artifact_path=artifact_path)
            else:
                self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    @property
    def ui_command(self) -> str:
        return f"mlflow ui --backend-store-uri {self.uri}"


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store's schema and the experiment if needed; return the experiment id.

    Done explicitly (not via mlflow.set_experiment) because parallel jobs racing on a fresh store or
    on set_experiment lose runs (see ECOSYSTEM.md); a lost creation race is resolved by a re-read.
    For a local sqlite store, artifacts go beside the database, not into the launch folder.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    db = _sqlite_path(uri)
    if db is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        location = (db.parent / "mlruns" / safe).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id
