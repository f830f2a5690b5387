"""`hydra/sweeper=lmbench_optuna`: lmbench's Optuna search as a Hydra Sweeper plugin.

Only the Hydra glue lives here: the config schema (registered in Hydra's ConfigStore when Hydra scans
its plugins) and a Sweeper that hands the work to lmbench.search. Hydra imports every plugin module
when it starts, so Optuna and lmbench are imported only once a search actually runs.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without entering them in
# sys.modules, where dataclasses look string annotations up.
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class LmbenchOptunaSweeperConf:
    _target_: str = "hydra_plugins.lmbench_search.lmbench_sweeper.LmbenchOptunaSweeper"
    study_name: str = "lmbench"  # the study, its journal file and its parent run are named after it
    direction: str = "minimize"  # lmbench returns best_valid/ppl
    n_trials: int = 20  # finished (complete or pruned) over every launch and worker
    n_jobs: int = 1  # trials launched together; parallel with hydra/launcher=joblib
    storage: Optional[str] = None  # null: chosen from the tracking URI (lmbench/search/storage.py)
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})  # tpe | random, + its settings
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "none"})  # median | successive_halving | ...
    params: dict[str, str] = field(default_factory=dict)  # key: range in Hydra's sweep grammar


ConfigStore.instance().store(group="hydra/sweeper", name="lmbench_optuna", node=LmbenchOptunaSweeperConf,
                             provider="lmbench")


class LmbenchOptunaSweeper(Sweeper):
    def __init__(self, **node: Any) -> None:
        self.node = {k: OmegaConf.to_container(v) if isinstance(v, DictConfig) else v for k, v in node.items()}
        self.config: Optional[DictConfig] = None
        self.launcher = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from lmbench import tracking
        from lmbench.errors import LmbenchError, exit_with
        from lmbench.search.driver import run_search
        from lmbench.search.settings import read_settings
        from lmbench.search.storage import choose_storage

        assert self.config is not None and self.launcher is not None
        try:
            settings = read_settings(self.node, arguments)
            uri = tracking.resolve_uri(self.config.tracking.uri, Path.cwd())  # as the jobs resolve it
        except LmbenchError as ex:
            exit_with("lmbench", ex)
        storage = choose_storage(settings.storage, uri, settings.study_name, Path.cwd())
        return run_search(settings, storage, self.launcher.launch, arguments, self.validate_batch_is_legal)
