"""The common trainer: every family fitted, validated and tested the same way.

Counting models (`fit(ids)`) are estimated in one pass (counting.py); networks are trained by
truncated BPTT (neural_loop.py). Both are then validated and tested by the same evaluator
(`lmbench.scoring.evaluate`) on the same token ids; a network computing in bfloat16 is scored
in float32 (`NeuralLM.computing_in_float32`), so that no figure depends on the training precision.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from lmbench.config import TrainerConfig, check_trainer_values
from lmbench.data.batching import as_streams
from lmbench.data.types import CorpusData, Split
from lmbench.errors import ConfigError
from lmbench.models.base import LanguageModel
from lmbench.models.neural import NeuralLM
from lmbench.scoring import EvalResult, evaluate
from lmbench.tracking import Tracker
from lmbench.training.checkpoints import TrainState
from lmbench.training.counting import fit_counting
from lmbench.training.neural_loop import NeuralLoop
from lmbench.training.result import FitResult, ValidationObserver

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
        if isinstance(model, NeuralLM):
            as_streams(data.train.ids, cfg.batch_size, cfg.bptt)
            if model.context is not None and cfg.bptt > model.context:  # attention models
                raise ConfigError(
                    f"trainer.bptt={cfg.bptt} exceeds model.context={model.context}: training windows must "
                    "fit the model's context; lower trainer.bptt or raise model.context"
                )
        if cfg.export_arpa and not model.exports_arpa:
            raise ConfigError(
                f"trainer.export_arpa=true, but a {model.family} model has no ARPA form; only n-gram "
                "models can be exported"
            )
        self._checked = model

    def fit(
        self, model: LanguageModel, data: CorpusData, state: TrainState | None = None, resumed: bool = False,
        optimizer=None,
    ) -> FitResult:
        """Train `model` from `state`; with `resumed`, first restore checkpoints/last into it. A
        network needs its `optimizer` (`steps.build_optimizer`), a counting model none. Checks the
        set-up first unless `check` already passed for this model (run() checks before it starts
        tracking)."""
        if self._checked is not model:
            self.check(model, data)
        if not isinstance(model, NeuralLM):
            return fit_counting(model, data, self.cfg, self.tracker, self._validate)
        if optimizer is None:
            raise ValueError("Trainer.fit: a network needs an optimizer (steps.build_optimizer)")
        if self.cfg.max_steps == 0:  # zero-shot (a pretrained checkpoint): the network scored as it is
            result = FitResult(stop_reason="max_steps")
            result.best_valid = self._validate(model, data, 0, result)
            return result
        loop = NeuralLoop(
            model, data, optimizer, self.cfg, self.tracker, self.checkpoint_dir, self._validate, self._evaluate,
            self.observer, self.seed,
        )
        return loop.run(state or TrainState(), resumed)

    def _validate(self, model, data: CorpusData, epoch: int, result: FitResult) -> EvalResult:
        valid = self._evaluate(model, data.valid)
        result.history.append(valid)
        self.tracker.log_metrics(valid.metrics(), step=epoch)
        return valid

    def test(self, model, data: CorpusData) -> EvalResult:
        return self._evaluate(model, data.test)

    def _evaluate(self, model: LanguageModel, split: Split) -> EvalResult:
        # A network is scored computing in float32 whatever trainer.precision trained it in, so
        # that figures do not depend on the training precision and a reloaded bundle (always
        # float32) reproduces them exactly; its own weights, no float32 copy (NeuralLM.computing_in_float32).
        scoring = model.computing_in_float32() if isinstance(model, NeuralLM) else contextlib.nullcontext(model)
        with scoring as scorer:
            return evaluate(scorer, split, batch_size=self.cfg.eval_batch_size, show_progress=self.cfg.progress)
