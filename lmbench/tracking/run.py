"""One MLflow run, as the trainer sees it.

A `Tracker` owns one MLflow run. Disabled tracking (`tracking=none`) gives the same object with
every call a no-op, so the trainer never branches on it. Whatever was logged stays logged when a run
fails: `finish("FAILED", reason)` ends the run with that status and the reason as a tag.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow import MlflowClient

from lmbench import names
from lmbench.errors import ConfigError
from lmbench.tracking.store import ensure_experiment, ui_hint, with_retry

T = TypeVar("T")


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
        if int(log_every_n_steps) < 1:
            raise ConfigError(f"tracking.log_every_n_steps must be >= 1, got {log_every_n_steps}")
        self.log_every_n_steps = int(log_every_n_steps)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.last_run_id: str | None = None  # the run this tracker logged to, also after finish
        self._logged_upto: dict[str, int] = {}  # after a resume: last step already in the store

    # -- lifecycle -----------------------------------------------------------------------------
    def start(
        self, run_name_prefix: str, tags: dict[str, str], params: dict[str, Any], parent_run_id: str | None = None
    ) -> None:
        """Start a new run; with `parent_run_id` (a sweep's parent run, still running) it is nested."""
        if not self.enabled:
            return
        mlflow.set_tracking_uri(self.uri)
        self.experiment_id = ensure_experiment(self.uri, self.experiment)
        run = with_retry(mlflow.start_run, experiment_id=self.experiment_id, parent_run_id=parent_run_id)
        self.run_id = self.last_run_id = run.info.run_id
        with_retry(mlflow.set_tags, {**tags, names.RUN_NAME: f"{run_name_prefix}-{self.run_id[:8]}"})
        # MLflow takes at most 100 params per request; log_params batches, values are strings.
        with_retry(mlflow.log_params, {k: ("null" if v is None else v) for k, v in params.items()})

    def resume(self, run_id: str, resumed_at_step: int) -> None:
        """Continue an earlier run (killed or interrupted) as the same MLflow run.

        Steps the killed process had already logged past its last checkpoint are recomputed by
        the resumed one; they are skipped, so every (metric, step) is in the store exactly once.
        """
        if not self.enabled:
            return
        mlflow.set_tracking_uri(self.uri)
        client = MlflowClient(tracking_uri=self.uri)
        run = client.get_run(run_id)  # MlflowException if the store does not have it
        self.experiment_id = run.info.experiment_id
        self._logged_upto = {
            key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics
        }
        with_retry(mlflow.start_run, run_id=run_id)
        self.run_id = self.last_run_id = run_id
        with_retry(mlflow.set_tag, names.RESUMED_AT_STEP, str(resumed_at_step))

    def finish(self, status: str = "FINISHED", reason: str | None = None, step: int | None = None) -> None:
        if not self.active:
            return
        if reason:
            with_retry(mlflow.set_tag, names.ERROR, reason[:5000])
        if step is not None:
            with_retry(mlflow.set_tag, names.FAILED_STEP, str(step))
        with_retry(mlflow.end_run, status=status)
        self.run_id = None

    # -- logging -------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.active:
            at = 0 if step is None else step
            fresh = {k: float(v) for k, v in metrics.items() if at > self._logged_upto.get(k, -1)}
            if fresh:
                with_retry(mlflow.log_metrics, fresh, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.active:
            with_retry(mlflow.set_tags, tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            path = Path(path)
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=artifact_path)
            else:
                mlflow.log_artifact(str(path), artifact_path=artifact_path)

    @property
    def active(self) -> bool:
        """Whether calls log anything: tracking is on and the run has started and not finished."""
        return self.enabled and self.run_id is not None

    def call(self, log_call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """`log_call(*args, **kwargs)` inside this run (MLflow's active run), retried like every
        write; nothing when the run is not active. For what MLflow logs itself (a pyfunc model)."""
        return with_retry(log_call, *args, **kwargs) if self.active else None

    def ui_hint(self) -> str:
        """How to open this run (started, finished or not) in the MLflow UI."""
        return ui_hint(self.uri, self.experiment_id, self.last_run_id)
