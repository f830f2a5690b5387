"""The job's side of a trial: its validations reported to the study, and the pruner's verdict.

A job of lmbench's search sweeper has `sweep.trial` set to its Optuna trial number; `TrialReporter`
is the training loop's validation observer (lmbench.training.result.ValidationObserver): at every
validation it reports the validation perplexity at the global step, and when the study's pruner
says so, it returns the reason to stop. The job then raises `optuna.TrialPruned`, which the sweeper
records as the trial's state PRUNED.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from lmbench.scoring import EvalResult
from lmbench.search.settings import read_settings
from lmbench.search.storage import choose_storage, open_storage


class TrialReporter:
    def __init__(self, trial: optuna.Trial, pruner_name: str):
        self.trial, self.pruner_name = trial, pruner_name

    @classmethod
    def open(cls, sweeper_node: Any, trial_number: int, tracking_uri: str, launch_dir: Path) -> TrialReporter:
        """The reporter of trial `trial_number` of the study the job's sweeper config names."""
        settings = read_settings(sweeper_node)
        storage = open_storage(choose_storage(settings.storage, tracking_uri, settings.study_name, launch_dir))
        study = optuna.load_study(study_name=settings.study_name, storage=storage, pruner=settings.make_pruner())
        study_id = storage.get_study_id_from_name(settings.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial_number)
        return cls(optuna.Trial(study, trial_id), settings.pruner["name"])

    def __call__(self, step: int, valid: EvalResult) -> str | None:
        self.trial.report(valid.ppl, step)
        if not self.trial.should_prune():
            return None
        return f"pruned by Optuna's {self.pruner_name} pruner at step {step} (valid ppl {valid.ppl:.2f})"

    def pruned_error(self) -> optuna.TrialPruned:
        return optuna.TrialPruned(f"trial {self.trial.number} pruned")
