"""The common trainer: every family fitted, validated and tested the same way.

Counting models (`fit(ids)`) are estimated in one pass (counting.py); networks are trained by
truncated BPTT (neural_loop.py) through `network.NetworkTrainer`, this class with what only a
network needs, which imports TensorFlow (this module does not: a counting model's run never loads
it). Both are validated and tested by the same evaluator (`lmbench.scoring.evaluate`) on the same
token ids; a network computing in bfloat16 is scored in float32 (`NetworkTrainer.evaluate`), so
that no figure depends on the training precision.
"""

from __future__ import annotations

from pathlib import Path

from lmbench.config import TrainerConfig, check_trainer_values
from lmbench.data.types import CorpusData, Split
from lmbench.errors import ConfigError
from lmbench.models.base import LanguageModel
from lmbench.scoring import EvalResult, evaluate
from lmbench.tracking import Tracker
from lmbench.training.counting import fit_counting
from lmbench.training.result import FitResult, ValidationObserver
from lmbench.training.state import TrainState

__all__ = ["FitResult", "Trainer"]


class Trainer:
    def __init__(
        self, cfg: TrainerConfig, tracker: Tracker, checkpoint_dir: Path, observer: ValidationObserver | None = None,
        seed: int = 0,
    ):
        self.cfg = cfg
        self.observer = observer  # sees a network's every validation; may stop it (neural_loop)
        self.tracker = tracker
        self.checkpoint_dir = Path(checkpoint_dir)
        self.seed = seed  # the run's: trainer.variable_bptt's window lengths follow it
        self._checked = None  # the model check() last passed for

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last"

    @property
    def best_checkpoint(self) -> Path:  # the best validation's weights (neural_loop)
        return self.checkpoint_dir / "best"

    def check(self, model: LanguageModel, data: CorpusData) -> None:
        """Refuse an impossible set-up before anything is trained or logged."""
        cfg = self.cfg
        check_trainer_values(cfg)
        self.check_network(model, data)
        if cfg.export_arpa and not model.exports_arpa:
            raise ConfigError(
                f"trainer.export_arpa=true, but a {model.family} model has no ARPA form; only n-gram "
                "models can be exported"
            )
        self._checked = model

    def check_network(self, model: LanguageModel, data: CorpusData) -> None:
        """What a network's training needs of the data and the trainer (`NetworkTrainer`)."""
        if model.is_network:
            raise TypeError(f"a {model.family} network is trained by training.network.NetworkTrainer")

    def fit(
        self, model: LanguageModel, data: CorpusData, state: TrainState | None = None, resumed: bool = False,
        optimizer=None,
    ) -> FitResult:
        """Train `model` from `state`; with `resumed`, first restore checkpoints/last into it. A
        network needs its `optimizer` (`steps.build_optimizer`), a counting model none (and no state:
        it counts in one pass). Checks the set-up first unless `check` already passed for this model
        (run() checks before it starts tracking)."""
        if self._checked is not model:
            self.check(model, data)
        return fit_counting(model, data, self.cfg, self.tracker, self._validate)

    def _validate(self, model, data: CorpusData, epoch: int, result: FitResult) -> EvalResult:
        valid = self._evaluate(model, data.valid)
        result.history.append(valid)
        self.tracker.log_metrics(valid.metrics(), step=epoch)
        return valid

    def test(self, model, data: CorpusData) -> EvalResult:
        return self._evaluate(model, data.test)

    def _evaluate(self, model: LanguageModel, split: Split) -> EvalResult:
        return evaluate(model, split, batch_size=self.cfg.eval_batch_size, show_progress=self.cfg.progress)
