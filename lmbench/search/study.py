"""A search's Optuna study: opened (created the first time) in its storage, and cleared of the
trials a dead process left RUNNING.

Every trial records the process that runs it (`lmbench.owner`: host, pid and the process's start
time, so that a reused pid is not taken for the owner). When a search is launched again, a RUNNING
trial whose owner on this host is gone (the search was killed) is marked FAIL and its parameters
queued again, so the search still tries them; a RUNNING trial of a live process -- another worker
on the same study -- is left alone, and so is one owned on another host, which this one cannot see.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lmbench.search.settings import SearchSettings
from lmbench.search.storage import StudyStorage, open_storage

log = logging.getLogger(__name__)
OWNER = "lmbench.owner"  # trial user attribute: {"host", "pid", "started"}
REQUEUED_FROM = "lmbench.requeued_from"  # trial user attribute: the dead trial whose params it retries
DONE = (TrialState.COMPLETE, TrialState.PRUNED)

optuna.logging.set_verbosity(optuna.logging.WARNING)  # lmbench prints what a search does itself


def open_study(settings: SearchSettings, storage: StudyStorage, seed_offset: int | None = None) -> optuna.Study:
    """The study named after the search, created the first time (a worker racing another on its
    creation loads it). Its sampler's seed moves on by the trials already there, unless given."""
    study = optuna.create_study(
        study_name=settings.study_name, storage=open_storage(storage), direction=settings.direction,
        pruner=settings.make_pruner(), load_if_exists=True,
    )
    offset = len(study.get_trials(deepcopy=False)) if seed_offset is None else seed_offset
    study.sampler = settings.make_sampler(offset)
    return study


def this_process() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def is_alive(owner: dict[str, object]) -> bool:
    """Whether the process that owns a trial still runs (True when it is on another host)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: alive
        return True
    return owner.get("started") is None or _start_time(pid) == owner.get("started")


def reclaim_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose owner died, queue their parameters again; their numbers."""
    reclaimed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER)
        if owner is not None and is_alive(owner):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={REQUEUED_FROM: trial.number})
        reclaimed.append(trial.number)
    if reclaimed:
        log.warning("trials %s were left running by a process that died: marked failed, their parameters queued again",
                    reclaimed)
    return reclaimed


def counted(study: optuna.Study) -> int:
    """Trials that count towards n_trials: finished (complete, pruned) or running somewhere."""
    return len(study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING)))


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which a reused pid does not share."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])
