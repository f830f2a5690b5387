"""Reading runs back, as plain records (reports, sources of models)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from lmbench.tracking.store import store_client


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
    return _record(store_client(uri).get_run(run_id))


def find_runs(
    uri: str, experiment: str | None = None, parent_run_id: str | None = None, filter_string: str | None = None
) -> list[RunRecord]:
    """Runs of `experiment` (default: every experiment), children of `parent_run_id`, matching
    `filter_string` (MLflow search syntax, e.g. "tags.lmbench.dataset = 'ptb'"), all combined."""
    client = store_client(uri)
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
    try:
        return store_client(uri).get_run(run_id).info.status
    except MlflowException:
        return None


def download(artifact_uri: str, uri: str, dst: Path) -> str:
    """Fetch an artifact URI (runs:/..., models:/..., a store path) into `dst`; the local path."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # models:/<name>/<version> resolves in the same store
    return mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst))


def run_artifact(uri: str, run_id: str, path: str, dst: Path) -> Path | None:
    """Download one artifact of a run (`token_scores/test.npz`) into the folder `dst`; None when the
    run has no such artifact (a run logged before lmbench wrote it)."""
    client = store_client(uri)
    folder = path.rpartition("/")[0] or None
    if path not in {f.path for f in client.list_artifacts(run_id, folder)}:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dst)))


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, by step."""
    history = store_client(uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def last_logged(uri: str, run_id: str, key: str) -> float | None:
    """The value of `key` logged last in time. A run's summary shows the value at the highest step
    instead, which differs for a key logged both per step and once more at the end."""
    history = store_client(uri).get_metric_history(run_id, key)
    return max(history, key=lambda m: (m.timestamp, m.step)).value if history else None
