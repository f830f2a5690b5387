"""A search's report, for its folder and its MLflow parent run: every trial with its parameters,
value, state, trained tokens and MLflow run, the best one marked; the best parameters and value
(`optimization_results.yaml`); and Optuna's own plots where Optuna can draw them (optimization
history, parameter importances, intermediate values: the curves the pruner judged).
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from lmbench import names, tracking

log = logging.getLogger(__name__)
PLOTS = {
    "optimization_history.png": "plot_optimization_history",
    "param_importances.png": "plot_param_importances",
    "intermediate_values.png": "plot_intermediate_values",
}


def trial_rows(study: optuna.Study, runs: list[tracking.RunRecord]) -> list[dict[str, object]]:
    """One row per trial (by number). `runs` are the search's MLflow runs; each names its trial in
    the tag `lmbench.trial` (the newest run of a trial stands for it)."""
    run_of = {}
    for r in runs:  # newest first
        if names.TRIAL in r.tags:
            run_of.setdefault(int(r.tags[names.TRIAL]), r)
    best = study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None
    keys = sorted({k for t in study.trials for k in t.params})
    rows = []
    for t in study.get_trials(deepcopy=False):
        run = run_of.get(t.number)
        value = t.value if t.value is not None else _last_intermediate(t)
        rows.append({
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": value,
            "best": "yes" if best is not None and t.number == best.number else "",
            **{k: t.params.get(k) for k in keys},
            "steps": t.last_step,
            "trained_tokens": _whole(run.metrics.get(names.TRAIN_TOKENS)) if run else None,
            "run_id": run.run_id if run else None,
        })
    return rows


def write_search_report(study: optuna.Study, uri: str | None, parent_run_id: str | None, out: Path) -> str:
    """Write the table, the best result and the plots into `out`; log them to the parent run under
    `search/` when there is one. Returns the Markdown table."""
    runs = tracking.find_runs(uri, parent_run_id=parent_run_id) if parent_run_id else []
    end_runs_of_dead_trials(study, runs, uri)
    rows = trial_rows(study, runs)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (out / "trials.md").write_text(table + "\n")
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    best = [r for r in rows if r["best"]]
    if best:
        (out / "optimization_results.yaml").write_text(yaml.safe_dump({
            "name": study.study_name, "best_trial": study.best_trial.number,
            "best_value": float(study.best_value), "best_params": dict(study.best_params),
        }, sort_keys=False))
    _plots(study, out)
    if parent_run_id:
        tracking.log_artifacts(uri, parent_run_id, out, "search")
        tracking.log_table(uri, parent_run_id, {k: [r[k] for r in rows] for k in rows[0]}, "search/trials.json")
    return table


def end_runs_of_dead_trials(study: optuna.Study, runs: list[tracking.RunRecord], uri: str | None) -> None:
    """A run still RUNNING whose trial FAILED was left so by a process that died (the study's trial
    was reclaimed, study.py): end it FAILED, saying so, rather than leave it running in the UI."""
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    for r in runs:
        if r.status == "RUNNING" and names.TRIAL in r.tags and int(r.tags[names.TRIAL]) in failed:
            reason = "the search process running this trial died; the search queued its parameters again"
            tracking.end_run(uri, r.run_id, "FAILED", {names.ERROR: reason})
            r.status = "FAILED"


def markdown(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "(no trials)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(r[k]) for k in header) + " |" for r in rows]
    return "\n".join(lines)


def _whole(value: float | None) -> int | None:
    """A count MLflow keeps as a float (25600.0): 25600 in the table, not 2.56e+04."""
    return None if value is None else int(value)


def _cell(value: object) -> str:
    """A table cell: a value or a parameter at 4 significant digits (Optuna samples 3.549789049598131)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if not math.isnan(value) else ""
    if isinstance(value, str) and len(value) == 32:  # a run id
        return value[:8]
    return str(value)


def _last_intermediate(trial: optuna.trial.FrozenTrial) -> float | None:
    return trial.intermediate_values[trial.last_step] if trial.last_step is not None else None


def _plots(study: optuna.Study, out: Path) -> None:
    """Optuna's matplotlib plots; one it cannot draw (too few trials, one parameter that never
    varied) is left out with a log line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    for file, plot in PLOTS.items():
        try:
            with warnings.catch_warnings():  # "experimental" since Optuna 2.2, on every call
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = getattr(optuna_plots, plot)(study)
            ax.figure.savefig(out / file, dpi=100, bbox_inches="tight")
        except (ValueError, RuntimeError, ZeroDivisionError) as ex:
            log.info("search report: no %s (%s)", file, ex)
        finally:
            plt.close("all")
