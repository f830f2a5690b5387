"""Where the MLflow store is, said without MLflow: the URI a run uses (resolved, checked), what
an unreachable server looks like, and how to open a run in the UI. Apart from `store`, which
imports MLflow (1-2 s, 170 MB), because a run with tracking=none needs these and never MLflow."""

from __future__ import annotations

import os
from pathlib import Path

from lmbench.errors import ConfigError

DEFAULT_DB = "mlflow.db"


def resolve_uri(configured: str | None, launch_dir: Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db (absolute, so
    that every process of a sweep writes to the same store wherever it runs)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_uri(uri, "tracking.uri" if configured else "$MLFLOW_TRACKING_URI")
        return uri
    return f"sqlite:///{(launch_dir / DEFAULT_DB).resolve()}"


# The store schemes MLflow's tracking client knows (SQLAlchemy databases take a +driver suffix).
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks", "databricks-uc")
EXAMPLES = (
    "sqlite:///mlflow.db (a file here), sqlite:////abs/path/mlflow.db, http://127.0.0.1:5000 (an mlflow "
    "server), postgresql+psycopg2://user@host/db"
)


def check_uri(uri: str, where: str) -> None:
    """Refuse, in one paragraph, a tracking URI MLflow would fail on later (often after minutes of
    training, or with a traceback): an unknown scheme, a sqlite URI without its third slash, a
    sqlite file in a folder that does not exist, an http(s) URI without a host."""
    scheme, sep, rest = uri.partition("://")
    if not sep:  # a plain path: MLflow's file store
        return
    base = scheme.split("+", 1)[0].lower()
    if base not in SCHEMES:
        raise ConfigError(f"{where}={uri!r} has the unknown scheme {scheme!r}; MLflow stores are e.g. {EXAMPLES}")
    if base == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"{where}={uri!r} names no sqlite file: a sqlite URI has three slashes before a relative path "
                "(sqlite:///mlflow.db) and four before an absolute one (sqlite:////abs/path/mlflow.db)"
            )
        folder = Path(rest[1:]).expanduser().parent
        if not folder.is_dir():
            raise ConfigError(f"{where}={uri!r}: the folder {folder} does not exist; create it or name another file")
    if base in ("http", "https") and not rest.split("/", 1)[0]:
        raise ConfigError(f"{where}={uri!r} names no host; e.g. http://127.0.0.1:5000")


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


# What a write that found the server gone raises (requests' and urllib3's words, inside MLflow's
# exception), and the answers of a proxy in front of a server that is down.
UNREACHABLE = ("Max retries exceeded", "Connection refused", "Connection aborted", "RemoteDisconnected",
               "timed out", "Read timed out", "error code 502", "error code 503", "error code 504")


def unreachable(uri: str, ex: BaseException) -> bool:
    """Whether `ex`, raised by a write to the server at `uri`, means the server cannot be reached
    (the write may succeed later), rather than that it refused the write."""
    return is_http(uri) and any(words in str(ex) for words in UNREACHABLE)


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"


def ui_url(uri: str, experiment_id: str, run_id: str | None = None, artifact: str | None = None) -> str:
    """The page of an experiment (its runs), a run, or one of a run's artifacts in the MLflow UI: at
    the tracking server itself for an http(s) store, else where `mlflow ui` serves by default.

    MLflow 3.17's UI chooses between its GenAI and its model-training pages by the URL's
    `workflowType`, else by what this browser last chose with the switch at its top left, else
    GenAI: a plain experiment link opens on the GenAI overview of traces, whatever the
    experiment's `mlflow.experimentKind` tag says. `workflowType=machine_learning` opens the runs.
    An artifact's page shows the file (an HTML file rendered, in a frame) beside the run's others.
    """
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    page = f"#/experiments/{experiment_id}"
    if run_id:
        page += f"/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "")
    return f"{base}/{page}?workflowType=machine_learning"


def ui_hint(uri: str, experiment_id: str, run_id: str | None = None, artifact: str | None = None) -> str:
    """How to look at a run (or one of its artifacts) in the MLflow UI: the command that serves a
    local store, and the page."""
    url = ui_url(uri, experiment_id, run_id, artifact)
    return f"open {url}" if uri.startswith(("http://", "https://")) else f"{ui_command(uri)}\n  then open {url}"
