"""What a run does that depends on the kind of model it trains, for a counting model (the n-gram).

`run.run_kind` chooses this class, or `network.NetworkRun` (a subclass: the same hooks for a
network), before anything is built; the stages of `run` call the hooks and never ask which kind
they have. A counting model is fitted in one process on one device, with no precision policy, no
optimizer, no checkpoint to resume, no memory estimate and no FLOPs. Nothing this module imports
loads TensorFlow: a counting model's run never does (its import costs 4.7 s and 745 MB; the
n-gram's fit and scoring on PTB, 0.3 s).
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from lmbench.config import TrainerConfig
from lmbench.config.checks import check_devices, check_precision
from lmbench.data.types import CorpusData
from lmbench.models.base import LanguageModel
from lmbench.tracking import Tracker
from lmbench.training import machine
from lmbench.training.result import FitResult, ValidationObserver
from lmbench.training.state import TrainState
from lmbench.training.trainer import Trainer


class CountingRun:
    def configure_devices(self, cfg: DictConfig) -> None:
        check_devices(cfg.trainer)  # several devices or a strategy: run_kind chose NetworkRun

    def adopt_source(self, cfg: DictConfig, uri: str) -> tuple[DictConfig, None]:
        return cfg, None  # trainer.init_from: run_kind chose NetworkRun

    def check_optimizer(self, optimizer_cfg: DictConfig) -> None:
        return None  # none is built: its class (Keras') is not even imported

    def set_precision_and_seed(self, cfg: DictConfig) -> str | None:
        """The Keras dtype policy (None: no network); the seeds `keras.utils.set_random_seed` sets,
        less TensorFlow's."""
        check_precision(cfg.trainer.precision)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        return None

    def source_tokenizer(self, tokenizer, source, cfg: DictConfig):
        return tokenizer

    def own_folder(self, output_dir: Path) -> Path:
        return output_dir

    def share_run(self, tracker: Tracker, output_dir: Path) -> None:
        return None  # one process

    def is_chief(self) -> bool:
        return True

    def scope(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def allocation_failures(self) -> contextlib.AbstractContextManager:
        return machine.allocation_failures()  # MemoryError: one paragraph, as for a network

    def check_fits(self, cfg: DictConfig, vocab_size: int, policy: str | None) -> None:
        return None

    def trainer(
        self, cfg: TrainerConfig, tracker: Tracker, checkpoint_dir: Path, observer: ValidationObserver | None, seed: int
    ) -> Trainer:
        return Trainer(cfg, tracker, checkpoint_dir=checkpoint_dir, observer=observer, seed=seed)

    def optimizer(self, optimizer_cfg: DictConfig, model: LanguageModel):
        return None

    def resume_state(self, cfg: DictConfig, trainer: Trainer, model: LanguageModel, digest: str) -> TrainState | None:
        return None

    def prepare_weights(self, model: LanguageModel, data: CorpusData, source, resume: TrainState | None) -> None:
        return None

    def network_tags(self, model: LanguageModel, policy: str | None) -> dict[str, str]:
        return {}

    def figures(self, cfg: DictConfig, policy: str | None, model: LanguageModel, tracker: Tracker,
                fit: FitResult) -> dict[str, float]:
        return {}
