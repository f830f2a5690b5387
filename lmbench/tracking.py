"""MLflow tracking: with mlflow_model.py (the pyfunc model), the only modules that import mlflow.

A `Tracker` owns one MLflow run. Disabled tracking (`tracking=none`) gives the same object with
every call a no-op, so the trainer never branches on it. Whatever was logged stays logged when a run
fails: `finish("FAILED", reason)` ends the run with that status and the reason as a tag.

Besides the `Tracker`, the module offers what sweeps and reports need from the store: a parent run
per sweep (`start_parent_run`, `end_run`), and reading runs back (`find_runs`, `metric_history`).
Every write retries while sqlite answers "database is locked" (parallel jobs share one file).
"""

from __future__ import annotations

import logging
import os
import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
# MLflow draws a progress bar for every artifact copy (each model logged or loaded): noise on a
# local store. Set the variable to "true" to see them.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
T = TypeVar("T")


def with_retry(call: Callable[..., T], *args: Any, attempts: int = 8, first_wait: float = 0.1, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, retried with jittered exponential backoff while sqlite is locked.

    MLflow already sets a 20 s busy timeout, but sqlite skips waiting (SQLITE_BUSY at once) when
    waiting could deadlock: two connections that both read and then both want to write, which N
    jobs logging to one file do. A locked write is rolled back, and MLflow accepts a param or tag
    logged again with the same value, so a retry logs nothing twice. Other errors, and the lock
    after `attempts` tries (about 25 s of waiting in all), are raised.
    """
    attempt = 1
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as ex:
            if "database is locked" not in str(ex) or attempt >= attempts:
                raise
            wait = first_wait * 2 ** (attempt - 1) * (1 + random.random())
            log.warning("MLflow store locked; retry %d of %d in %.2f s", attempt, attempts - 1, wait)
            time.sleep(wait)
            attempt += 1


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
    def start(
        self, run_name_prefix: str, tags: dict[str, str], params: dict[str, Any], parent_run_id: str | None = None
    ) -> None:
        """Start a new run; with `parent_run_id` (a sweep's parent run, still running) it is nested."""
        if not self.enabled:
            return
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(self.uri)
        experiment_id = ensure_experiment(self.uri, self.experiment)
        run = with_retry(mlflow.start_run, experiment_id=experiment_id, parent_run_id=parent_run_id)
        self.run_id = run.info.run_id
        with_retry(mlflow.set_tags, {**tags, "mlflow.runName": f"{run_name_prefix}-{self.run_id[:8]}"})
        # MLflow takes at most 100 params per request; log_params batches, values are strings.
        with_retry(mlflow.log_params, {k: ("null" if v is None else v) for k, v in params.items()})

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
        with_retry(mlflow.start_run, run_id=run_id)
        self.run_id = run_id
        with_retry(mlflow.set_tag, "lmbench.resumed_at_step", str(resumed_at_step))

    def finish(self, status: str = "FINISHED", reason: str | None = None, step: int | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        mlflow = self._mlflow
        if reason:
            with_retry(mlflow.set_tag, "lmbench.error", reason[:5000])
        if step is not None:
            with_retry(mlflow.set_tag, "lmbench.failed_step", str(step))
        with_retry(mlflow.end_run, status=status)
        self.run_id = None

    # -- logging -------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.enabled and self.run_id is not None:
            at = 0 if step is None else step
            fresh = {k: float(v) for k, v in metrics.items() if at > self._logged_upto.get(k, -1)}
            if fresh:
                with_retry(self._mlflow.log_metrics, fresh, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.enabled and self.run_id is not None:
            with_retry(self._mlflow.set_tags, tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and self.run_id is not None:
            path = Path(path)
            if path.is_dir():
                self._mlflow.log_artifacts(str(path), artifact_path=artifact_path)
            else:
                self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_model(self, bundle_folder: Path) -> None:
        """Log the bundle as the run's MLflow model "model" (pyfunc flavour, see mlflow_model.py)."""
        if self.enabled and self.run_id is not None:
            from lmbench.mlflow_model import log_pyfunc

            with_retry(log_pyfunc, Path(bundle_folder))

    @property
    def ui_command(self) -> str:
        return ui_command(self.uri)


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store's schema and the experiment if needed; return the experiment id.

    Done explicitly (not via mlflow.set_experiment) because parallel jobs racing on a fresh store or
    on set_experiment lose runs (see ECOSYSTEM.md); a lost creation race is resolved by a re-read.
    For a local sqlite store, artifacts go beside the database, not into the launch folder.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    existing = with_retry(client.get_experiment_by_name, name)
    if existing is not None:
        return existing.experiment_id
    location = None
    db = _sqlite_path(uri)
    if db is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        location = (db.parent / "mlruns" / safe).resolve().as_uri()
    try:
        return with_retry(client.create_experiment, name, artifact_location=location)
    except MlflowException:
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


# -- sweeps ------------------------------------------------------------------------------------
def start_parent_run(uri: str, experiment: str, run_name_prefix: str, tags: dict[str, str]) -> str:
    """Create a sweep's parent run (left RUNNING for its children to nest under); return its id,
    which is also the sweep's id (tag `lmbench.sweep_id`, on the parent and on every child).

    Called before any job starts, so the store's schema and the experiment exist before parallel
    jobs first touch the store (ECOSYSTEM.md: a fresh store or experiment raced on loses runs).
    Uses the client, not the fluent API, so the launching process has no active run: sequential
    sweeps run their jobs in this same process, and each job starts its own run.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = ensure_experiment(uri, experiment)
    run_id = with_retry(client.create_run, experiment_id, tags=tags).info.run_id
    for key, value in (("mlflow.runName", f"{run_name_prefix}-{run_id[:8]}"), ("lmbench.sweep_id", run_id)):
        with_retry(client.set_tag, run_id, key, value)
    return run_id


def reopen_run(uri: str, run_id: str, experiment: str) -> bool:
    """Set a run of `experiment` that ended (a sweep that stopped part-way) back to RUNNING, for a
    re-launched sweep to continue under it; False when the store has no such run there."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    found = client.get_experiment_by_name(experiment)
    if found is None or run.info.experiment_id != found.experiment_id or run.info.lifecycle_stage != "active":
        return False
    with_retry(client.update_run, run_id, status="RUNNING")
    with_retry(client.set_tag, run_id, "lmbench.continued", str(int(run.data.tags.get("lmbench.continued", "0")) + 1))
    return True


def end_run(uri: str, run_id: str, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for key, value in (tags or {}).items():
        with_retry(client.set_tag, run_id, key, value)
    with_retry(client.set_terminated, run_id, status=status)


def log_artifacts(uri: str, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Log a file or a folder's contents to a run other than the active one (a sweep's parent)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if Path(path).is_dir():
        client.log_artifacts(run_id, str(path), artifact_path=artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


# -- reading runs back (reports) -----------------------------------------------------------------
@dataclass
class RunRecord:
    """One run as plain data, so that reports need not know MLflow's types."""

    run_id: str
    name: str
    status: str
    experiment_id: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # the last value of each


def _record(run) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:8],
        status=run.info.status,
        experiment_id=run.info.experiment_id,
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
    )


def get_run(uri: str, run_id: str) -> RunRecord:
    from mlflow import MlflowClient

    return _record(MlflowClient(tracking_uri=uri).get_run(run_id))


def find_runs(
    uri: str, experiment: str | None = None, parent_run_id: str | None = None, filter_string: str | None = None
) -> list[RunRecord]:
    """Runs of `experiment` (default: every experiment), children of `parent_run_id`, matching
    `filter_string` (MLflow search syntax, e.g. "tags.lmbench.dataset = 'ptb'"), all combined."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=uri)
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise LookupError(f"no experiment named {experiment!r} in {uri}")
        experiment_ids = [found.experiment_id]
    elif parent_run_id is not None:
        experiment_ids = [client.get_run(parent_run_id).info.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    clauses = [f"tags.mlflow.parentRunId = '{parent_run_id}'"] if parent_run_id else []
    if filter_string:
        clauses.append(filter_string)
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, " and ".join(clauses), run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
            order_by=["attributes.start_time DESC"], page_token=token,
        )
        runs.extend(_record(r) for r in page)
        token = page.token
        if not token:
            return runs


def run_status(uri: str, run_id: str) -> str | None:
    """FINISHED, RUNNING, FAILED, KILLED; None when the store has no such run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri=uri).get_run(run_id).info.status
    except MlflowException:
        return None


def download(artifact_uri: str, uri: str, dst: Path) -> str:
    """Fetch an artifact URI (runs:/..., models:/..., a store path) into `dst`; the local path."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # models:/<name>/<version> resolves in the same store
    return mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst))


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, by step."""
    from mlflow import MlflowClient

    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def last_logged(uri: str, run_id: str, key: str) -> float | None:
    """The value of `key` logged last in time. A run's summary shows the value at the highest step
    instead, which differs for a key logged both per step and once more at the end."""
    from mlflow import MlflowClient

    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    return max(history, key=lambda m: (m.timestamp, m.step)).value if history else None
