"""The MLflow store as a whole: where it is, its schema and experiments, runs other than one's own.

What sweeps need before and after their jobs (a parent run, created before any job touches the
store; ending it), and the retry every write goes through while sqlite answers "database is locked"
(parallel jobs share one file).
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from lmbench import names
from lmbench.errors import TrackingError
from lmbench.paths import redact
from lmbench.tracking.uri import is_http

log = logging.getLogger(__name__)
# "Creating initial MLflow database tables... / Updating database tables" at every fresh store, once
# per job of a sweep: nothing a user must read.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

# MLflow draws a progress bar for every artifact copy (each model logged or loaded): noise on a
# local store. Set the variable to "true" to see them.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Against a tracking server MLflow prints "View run ... / View experiment at: <server>/#/experiments/<id>"
# whenever a run ends: MLflow 3.17's UI opens that experiment link on its GenAI overview of traces.
# lmbench prints its own links (ui_hint), which open the runs and a sweep's report.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# MLflow's HTTP client retries a request 7 times with a back-off factor of 2 (about four minutes
# against a server that is down) and waits 120 s for an answer. lmbench bounds both through MLflow's
# own settings, so that a server that is not there is reported within seconds, and a server that
# goes away mid-run costs training a few seconds per write (the Tracker then buffers). Set the
# variables to choose otherwise.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",  # waits of about 0, 2 and 4 s (+ up to 1 s jitter each)
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
for _key, _value in HTTP_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
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


def check_store(uri: str) -> None:
    """Ask the store one cheap question before any work: a server that is not there, does not speak
    MLflow, or refuses the job's credentials ends here in one paragraph (`TrackingError`), within
    the bounded HTTP retries above, instead of after minutes of training or retrying. A file store
    (sqlite, a folder) is only created when the run opens: a config refused before stays
    without a trace. A database server's store gets its schema here."""
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        return
    try:
        store_client(uri).search_experiments(max_results=1)
    except Exception as ex:  # MlflowException, or the driver's own error for a database
        raise TrackingError(store_problem(uri, ex)) from None


def store_problem(uri: str, ex: BaseException) -> str:
    """What went wrong talking to the store at `uri`, said for the user to fix."""
    text = str(ex)
    shown = redact(uri)
    if is_http(uri):
        if "error code 401" in text or "UNAUTHENTICATED" in text:
            return (f"the tracking server {shown} asks for credentials and got none or wrong ones: set "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the job's environment")
        if "error code 403" in text or "PERMISSION_DENIED" in text:
            user = os.environ.get("MLFLOW_TRACKING_USERNAME", "?")
            return (f"the tracking server {shown} refuses user {user!r} (permission denied); an admin grants "
                    "it with MLflow's auth API (docs: MLflow authentication, permissions)")
        if any(code in text for code in ("error code 404", "error code 405", "error code 501", "<!DOCTYPE", "<html")):
            return f"{shown} answers, but is not an MLflow tracking server (no MLflow REST API); check host and port"
        if "SSL" in text or "ssl" in text:
            return f"{shown}: the TLS handshake failed (an http server behind https://, or a certificate problem)"
        if "Connection refused" in text or "Max retries exceeded" in text or "timed out" in text.lower():
            return (f"no MLflow tracking server answers at {shown} (tried "
                    f"{os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES']} more times): start one "
                    "(`mlflow server --host 127.0.0.1 --port 5000 ...`, README \"More than one machine\") or fix "
                    "tracking.uri / $MLFLOW_TRACKING_URI")
    first_line = text.strip().splitlines()[0] if text.strip() else type(ex).__name__
    return f"the tracking store {shown} cannot be used: {first_line[:500]}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store's schema and the experiment if needed; return the experiment id.

    Done explicitly (not via mlflow.set_experiment) because parallel jobs racing on a fresh store or
    on set_experiment lose runs (see ECOSYSTEM.md); a lost creation race is resolved by a re-read.
    For a local sqlite store, artifacts go beside the database, not into the launch folder. The
    experiment is tagged as model training, the type MLflow UIs that ask for one ask a user to pick;
    which page 3.17's UI opens it on depends on the link instead (ui_url).
    """
    client = store_client(uri)
    try:
        existing = with_retry(client.get_experiment_by_name, name)
    except MlflowException as ex:  # a server with authentication: this user may not read it
        if "PERMISSION_DENIED" in str(ex) or "error code 403" in str(ex):
            raise TrackingError(f"{store_problem(uri, ex)} (experiment {name!r})") from None
        raise
    if existing is not None:
        if existing.tags.get(names.EXPERIMENT_KIND) is None:  # made by an older lmbench, or by hand
            with_retry(client.set_experiment_tag, existing.experiment_id, names.EXPERIMENT_KIND, names.MODEL_TRAINING)
        return existing.experiment_id
    location = None
    db = _sqlite_path(uri)
    if db is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        location = (db.parent / "mlruns" / safe).resolve().as_uri()
    try:
        return with_retry(
            client.create_experiment,
            name,
            artifact_location=location,
            tags={names.EXPERIMENT_KIND: names.MODEL_TRAINING},
        )
    except MlflowException:
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def store_client(uri: str) -> MlflowClient:
    """An MlflowClient for the store at `uri`, made only once the store's schema exists.

    Creating an MlflowClient creates MLflow's store object, which migrates a sqlite file's schema
    there and then, without any lock: every client of lmbench is made here, so that the first one
    of each process, for each sqlite store, is made under `create_sqlite_schema`'s lock."""
    create_sqlite_schema(uri)
    return MlflowClient(tracking_uri=uri)


_SCHEMA_READY: set[str] = set()  # sqlite URIs whose schema this process has seen complete, under the lock


def create_sqlite_schema(uri: str) -> None:
    """MLflow's tables in a sqlite file, created by one process at a time: two `lmbench` commands
    started together on a fresh store both migrate it (MLflow creates the tables when its client is
    made), and both fail ("table _alembic_tmp_tags already exists", "duplicate column name: step")
    with no run recorded. The lock is the database folder's (flock on its descriptor: no file is
    left behind); the first client is made inside it, and every later one finds the schema complete.
    Once per process and store."""
    db = _sqlite_path(uri)
    if db is None or uri in _SCHEMA_READY or not db.parent.is_dir():
        return
    folder = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        with_retry(MlflowClient(tracking_uri=uri).search_experiments, max_results=1)
        _SCHEMA_READY.add(uri)
    finally:
        os.close(folder)  # releases the lock


def start_parent_run(uri: str, experiment: str, run_name_prefix: str, tags: dict[str, str]) -> str:
    """Create a sweep's parent run (left RUNNING for its children to nest under); return its id,
    which is also the sweep's id (tag `lmbench.sweep_id`, on the parent and on every child).

    Called before any job starts, so the store's schema and the experiment exist before parallel
    jobs first touch the store (ECOSYSTEM.md: a fresh store or experiment raced on loses runs).
    Uses the client, not the fluent API, so the launching process has no active run: sequential
    sweeps run their jobs in this same process, and each job starts its own run.
    """
    client = store_client(uri)
    experiment_id = ensure_experiment(uri, experiment)
    run_id = with_retry(client.create_run, experiment_id, tags=tags).info.run_id
    for key, value in ((names.RUN_NAME, f"{run_name_prefix}-{run_id[:8]}"), (names.SWEEP_ID, run_id)):
        with_retry(client.set_tag, run_id, key, value)
    return run_id


def reopen_run(uri: str, run_id: str, experiment: str) -> bool:
    """Set a run of `experiment` that ended (a sweep that stopped part-way) back to RUNNING, for a
    re-launched sweep to continue under it; False when the store has no such run there."""
    client = store_client(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    found = client.get_experiment_by_name(experiment)
    if found is None or run.info.experiment_id != found.experiment_id or run.info.lifecycle_stage != "active":
        return False
    with_retry(client.update_run, run_id, status="RUNNING")
    with_retry(client.set_tag, run_id, names.CONTINUED, str(int(run.data.tags.get(names.CONTINUED, "0")) + 1))
    return True


def end_run(uri: str, run_id: str, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
    client = store_client(uri)
    for key, value in (tags or {}).items():
        with_retry(client.set_tag, run_id, key, value)
    with_retry(client.set_terminated, run_id, status=status)


def log_artifacts(uri: str, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Log a file or a folder's contents to a run other than the active one (a sweep's parent)."""
    client = store_client(uri)
    if Path(path).is_dir():
        client.log_artifacts(run_id, str(path), artifact_path=artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def describe_run(uri: str, run_id: str, markdown: str) -> None:
    """Set a run's description (Markdown, shown on its page in the MLflow UI)."""
    with_retry(store_client(uri).set_tag, run_id, names.DESCRIPTION, markdown)


def log_table(uri: str, run_id: str, columns: dict[str, list], artifact_file: str) -> None:
    """Log `columns` (name -> values, all of one length) as an MLflow table artifact of a run."""
    with_retry(store_client(uri).log_table, run_id, data=columns, artifact_file=artifact_file)
