"""MLflow tracking: the only package that imports mlflow (with `artifacts.pyfunc`, the pyfunc model).

`run`: one run as the trainer logs it (`Tracker`). `store`: the store as a whole (URI, schema,
experiments, a sweep's parent run, the write retry). `queries`: runs read back as plain records.
"""

from lmbench.tracking.queries import (
    RunRecord,
    download,
    find_runs,
    get_run,
    last_logged,
    metric_history,
    run_artifact,
    run_status,
)
from lmbench.tracking.run import Tracker, flatten, git_commit
from lmbench.tracking.store import (
    check_store,
    describe_run,
    end_run,
    ensure_experiment,
    log_artifacts,
    log_table,
    reopen_run,
    resolve_uri,
    start_parent_run,
    ui_command,
    ui_hint,
    ui_url,
    with_retry,
)

__all__ = [
    "RunRecord",
    "Tracker",
    "check_store",
    "describe_run",
    "download",
    "log_table",
    "end_run",
    "ensure_experiment",
    "find_runs",
    "flatten",
    "get_run",
    "git_commit",
    "last_logged",
    "log_artifacts",
    "metric_history",
    "reopen_run",
    "resolve_uri",
    "run_artifact",
    "run_status",
    "start_parent_run",
    "ui_command",
    "ui_hint",
    "ui_url",
    "with_retry",
]
