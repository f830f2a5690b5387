"""The search loop: ask the study for trials, launch them as Hydra jobs, tell it how each ended.

Batches of `n_jobs` trials go to the launcher together (joblib runs them in parallel); the loop goes
on until the study holds `n_trials` trials finished or running, counted over every launch and every
worker, so a relaunched search runs only what is missing, and two workers on one study share the
count (counting and asking under one lock, for a journal file). A job returns its value (a complete
trial), raises `optuna.TrialPruned` (pruned), or fails: the trial is marked FAIL; a diverged trial
(a learning rate that blows the model up) is a result and the search goes on, any other error stops
the search, as a failed job stops any sweep.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from lmbench.errors import TrainingDiverged
from lmbench.search.settings import SearchSettings, is_sweep_argument
from lmbench.search.storage import StudyStorage
from lmbench.search.study import DONE, OWNER, counted, open_study, reclaim_dead_trials, this_process

Launch = Callable[[list[list[str]], int], Sequence[JobReturn]]


def trial_overrides(settings: SearchSettings, trial: optuna.Trial, arguments: Sequence[str]) -> list[str]:
    """A trial's job: the command line's plain overrides, its params, and its trial number."""
    plain = [a for a in arguments if not is_sweep_argument(a)]
    return [*plain, *settings.space.overrides(trial.params), f"sweep.trial={trial.number}"]


def run_search(
    settings: SearchSettings, storage: StudyStorage, launch: Launch, arguments: Sequence[str],
    validate: Callable[[list[list[str]]], None],
) -> optuna.Study:
    study = open_study(settings, storage)
    reclaimed = reclaim_dead_trials(study)
    done = len(study.get_trials(deepcopy=False, states=DONE))
    print(
        f"Search '{settings.study_name}': study in {storage}; {done} of {settings.n_trials} trials finished"
        + (f"; trials {reclaimed} died with their process and are queued again" if reclaimed else ""),
        flush=True,
    )
    owner, job_idx = this_process(), 0
    while True:
        with _one_asker(storage):
            room = settings.n_trials - counted(study)
            trials = [study.ask(settings.space.distributions) for _ in range(min(settings.n_jobs, max(room, 0)))]
            for trial in trials:
                trial.set_user_attr(OWNER, owner)
        if not trials:
            break
        batch = [trial_overrides(settings, trial, arguments) for trial in trials]
        try:
            validate(batch)
            returns = launch(batch, job_idx)
        except BaseException:
            for trial in trials:  # unless a job already told it (it cannot: only we tell)
                study.tell(trial, state=TrialState.FAIL)
            raise
        job_idx += len(trials)
        for trial, ret in zip(trials, returns):
            _tell(study, trial, ret)
    return study


@contextmanager
def _one_asker(storage: StudyStorage):
    """Count and ask under a file lock beside a journal, so that two workers on one study never both
    take its last trial. (A database study has no such lock: workers may run up to n_jobs extra.)"""
    if storage.kind != "journal":
        yield
        return
    with open(storage.location + ".ask.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tell(study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
    # JobReturn keeps a failed job's exception in `_return_value`; its `return_value` property would
    # print "Error executing job" for a pruned trial, which is no error.
    outcome = ret._return_value
    if ret.status == JobStatus.COMPLETED and outcome is not None:
        study.tell(trial, float(outcome))
        best = study.best_trial
        print(f"Trial {trial.number}: {float(outcome):.2f} (best: {best.value:.2f}, trial {best.number})", flush=True)
    elif isinstance(outcome, optuna.TrialPruned):
        study.tell(trial, state=TrialState.PRUNED)
        print(f"Trial {trial.number}: pruned", flush=True)
    elif isinstance(outcome, TrainingDiverged):  # a point of the space that blows up: a result, not a fault
        study.tell(trial, state=TrialState.FAIL)
        print(f"Trial {trial.number}: diverged at step {outcome.step}", flush=True)
    else:
        study.tell(trial, state=TrialState.FAIL)
        if isinstance(outcome, BaseException):
            raise outcome
        raise RuntimeError(f"trial {trial.number}'s job returned no value ({outcome!r})")
