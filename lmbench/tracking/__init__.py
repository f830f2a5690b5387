"""MLflow tracking: the only package that imports mlflow (with `artifacts.pyfunc`, the pyfunc model).

`run`: one run as the trainer logs it (`Tracker`). `store`: the store as a whole (schema,
experiments, a sweep's parent run, the write retry). `queries`: runs read back as plain records.
`uri`: where the store is (resolved, checked, shown in the UI), without MLflow.

Each name below is imported from its module when it is first asked for (PEP 562), not when the
package is: `store` and `queries` import MLflow (1-2 s, 170 MB at a command's start), which a run
with tracking=none never needs; `uri` never does, `Tracker` only once its run starts.
"""

from __future__ import annotations

import importlib

MODULES = {
    "queries": ("RunRecord", "download", "find_runs", "get_run", "last_logged", "metric_history", "run_artifact",
                "run_status"),
    "run": ("Tracker", "flatten", "git_commit"),
    "store": ("check_store", "describe_run", "end_run", "ensure_experiment", "log_artifacts", "log_table",
              "reopen_run", "start_parent_run", "with_retry"),
    "uri": ("resolve_uri", "ui_command", "ui_hint", "ui_url"),
}
_MODULE_OF = {name: module for module, names in MODULES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # asked once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
