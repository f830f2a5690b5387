"""The face of a hyperparameter search (hydra/sweeper=lmbench_optuna, lmbench.search): its config
checked before the parent run is made, each trial's job wired to the study, the report at the end.
lmbench.search (and Optuna) load only when a search runs."""

from __future__ import annotations

from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lmbench import tracking
from lmbench.errors import ConfigError

SWEEPER = "hydra_plugins.lmbench_search.lmbench_sweeper.LmbenchOptunaSweeper"


def is_search(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.sweeper._target_") == SWEEPER


def _settings(sweeper: DictConfig, arguments=()):
    from lmbench.search.settings import read_settings

    return read_settings(OmegaConf.to_container(sweeper, resolve=True), arguments)


def check_search(config: DictConfig) -> None:
    """The search's settings (pruner, sampler, space: lmbench.search.settings) and that every key it
    searches is in the config, as ConfigErrors."""
    settings = _settings(config.hydra.sweeper, list(config.hydra.overrides.task))
    for key in settings.space.distributions:
        if not key.startswith("+") and OmegaConf.select(config, key, default="__missing__") == "__missing__":
            raise ConfigError(f"the search varies {key}, which is no key of the config; check its spelling "
                              "(`lmbench --cfg job` prints the config)")


def trial_reporter(cfg: DictConfig, hydra_cfg: DictConfig):
    """The validation observer of a search's trial (lmbench.search.trial), None for other jobs."""
    if cfg.sweep.trial is None or hydra_cfg.mode != RunMode.MULTIRUN or hydra_cfg.sweeper.get("_target_") != SWEEPER:
        return None
    from lmbench.search.trial import TrialReporter

    uri = tracking.resolve_uri(cfg.tracking.uri, Path.cwd())
    return TrialReporter.open(OmegaConf.to_container(hydra_cfg.sweeper, resolve=True), cfg.sweep.trial, uri, Path.cwd())


def report_search(config: DictConfig, uri: str, parent_run_id: str, out: Path) -> None:
    """The trials table, best result and Optuna's plots, into `out` and onto the parent run."""
    from lmbench.search.report import write_search_report
    from lmbench.search.storage import choose_storage
    from lmbench.search.study import open_study

    settings = _settings(config.hydra.sweeper)
    study = open_study(settings, choose_storage(settings.storage, uri, settings.study_name, Path.cwd()))
    table = write_search_report(study, uri, parent_run_id, out)
    print(f"\nSearch '{settings.study_name}' ({len(study.trials)} trials):\n{table}\nIn {out}", flush=True)
