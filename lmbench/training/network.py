"""What `run` does that depends on the kind of model, for a network (`NetworkRun`), and the trainer
with what only a network needs (`NetworkTrainer`). Both import TensorFlow: `run.run_kind` imports
this module only for a network (and for what it cannot tell from the config alone: a builder such
as model=interpolated, a fine-tune, several devices), whose model is then handled here as the
counting hooks would where it is none.

    devices       trainer.devices / trainer.strategy (distributed.py), before TensorFlow's first op
    fine-tuning   trainer.init_from: the source's configs, tokenizer and weights (artifacts/finetune.py)
    precision     the Keras dtype policy (precision.py) and the seeds, TensorFlow's among them
    memory        the estimate before the model is built (memory.py); TensorFlow's allocation errors
    training      the optimizer, the checkpoint to resume from, NeuralLoop, scoring in float32
    figures       the run's tags of precision and devices; FLOPs and MFU (peak.py)
"""

from __future__ import annotations

from pathlib import Path

import keras
from omegaconf import DictConfig

from lmbench import names
from lmbench.artifacts import finetune, pretrained
from lmbench.config import TrainerConfig, check_target
from lmbench.data.batching import as_streams
from lmbench.data.types import CorpusData, Split
from lmbench.errors import ConfigError, DamagedFile
from lmbench.models.base import LanguageModel
from lmbench.paths import default_cache_dir
from lmbench.scoring import EvalResult, evaluate
from lmbench.tracking import Tracker
from lmbench.training import checkpoints, distributed, memory, precision, workers
from lmbench.training.counting_run import CountingRun
from lmbench.training.neural_loop import NeuralLoop
from lmbench.training.peak import mfu, resolve_peak
from lmbench.training.result import FitResult, ValidationObserver
from lmbench.training.state import TrainState
from lmbench.training.steps import build_optimizer
from lmbench.training.trainer import Trainer


class NetworkTrainer(Trainer):
    """The common trainer, also for networks: truncated BPTT (neural_loop.py), and scoring a
    network computing in float32 whatever trainer.precision trained it in."""

    def check_network(self, model: LanguageModel, data: CorpusData) -> None:
        cfg = self.cfg
        if not model.is_network:
            return
        as_streams(data.train.ids, cfg.batch_size, cfg.bptt)
        if model.context is not None and cfg.bptt > model.context:  # attention models
            raise ConfigError(
                f"trainer.bptt={cfg.bptt} exceeds model.context={model.context}: training windows must "
                "fit the model's context; lower trainer.bptt or raise model.context"
            )

    def fit(
        self, model: LanguageModel, data: CorpusData, state: TrainState | None = None, resumed: bool = False,
        optimizer=None,
    ) -> FitResult:
        if not model.is_network:
            return super().fit(model, data, state, resumed, optimizer)
        if self._checked is not model:
            self.check(model, data)
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

    def _evaluate(self, model: LanguageModel, split: Split) -> EvalResult:
        # Scored computing in float32, so that figures do not depend on the training precision and a
        # reloaded bundle (always float32) reproduces them exactly; its own weights, no float32 copy.
        if not model.is_network:
            return super()._evaluate(model, split)
        with model.computing_in_float32() as scorer:
            return evaluate(scorer, split, batch_size=self.cfg.eval_batch_size, show_progress=self.cfg.progress)


class NetworkRun(CountingRun):
    def configure_devices(self, cfg: DictConfig) -> None:
        distributed.configure(cfg.trainer, counting=distributed.counted(cfg))  # an n-gram: no strategy

    def adopt_source(self, cfg: DictConfig, uri: str) -> tuple[DictConfig, finetune.Source | None]:
        source = None
        if cfg.trainer.init_from:
            source = finetune.load_source(cfg.trainer.init_from, uri, default_cache_dir(cfg.cache_dir))
            cfg = finetune.adopt_source_configs(cfg, source)
        return pretrained.adopt_folder_tokenizer(cfg), source  # model=pretrained: the folder's tokenizer.json

    def check_optimizer(self, optimizer_cfg: DictConfig) -> None:
        check_target(optimizer_cfg, "optimizer", supplied=("global_clipnorm",))

    def set_precision_and_seed(self, cfg: DictConfig) -> str:
        policy = precision.resolve(cfg.trainer.precision)
        keras.mixed_precision.set_global_policy(policy)  # before any layer is built
        keras.utils.set_random_seed(cfg.seed)
        return policy

    def source_tokenizer(self, tokenizer, source: finetune.Source | None, cfg: DictConfig):
        """A learned tokenizer is the source's trained one, not trained again; model=pretrained's is
        the folder's tokenizer.json, unless a source's was read."""
        if source is not None:
            tokenizer = finetune.source_tokenizer(tokenizer, source)
        return pretrained.folder_tokenizer(tokenizer, cfg)

    def own_folder(self, output_dir: Path) -> Path:
        return distributed.own_folder(output_dir)  # a worker's (not the chief's) files: its own folder

    def share_run(self, tracker: Tracker, output_dir: Path) -> None:
        """The chief's run id to every worker, each of which prints and records it (workers.py)."""
        run_id = workers.share_run(distributed.active(), tracker.run_id)
        workers.record_run(distributed.active(), run_id, output_dir, tracker.uri, tracker.experiment)

    def is_chief(self) -> bool:
        return distributed.is_chief()

    def scope(self):
        return distributed.scope()  # the network's variables mirrored on every replica (none for one device)

    def allocation_failures(self):
        return memory.allocation_failures()  # TensorFlow's too

    def check_fits(self, cfg: DictConfig, vocab_size: int, policy: str | None) -> None:
        memory.check_fits(cfg, vocab_size, policy)  # before the model: its output layer is built with it

    def trainer(
        self, cfg: TrainerConfig, tracker: Tracker, checkpoint_dir: Path, observer: ValidationObserver | None, seed: int
    ) -> Trainer:
        return NetworkTrainer(cfg, tracker, checkpoint_dir=checkpoint_dir, observer=observer, seed=seed)

    def optimizer(self, optimizer_cfg: DictConfig, model: LanguageModel):
        """Built now, so that a bad optimizer config fails before tracking."""
        with distributed.scope():
            return build_optimizer(optimizer_cfg) if model.is_network else None

    def resume_state(self, cfg: DictConfig, trainer: Trainer, model: LanguageModel, digest: str) -> TrainState | None:
        resume = saved_state(cfg, trainer, model, digest)
        distributed.agree_on_start(resume.global_step if resume is not None else 0)  # several workers
        return resume

    def prepare_weights(self, model: LanguageModel, data: CorpusData, source: finetune.Source | None,
                        resume: TrainState | None) -> None:
        if model.is_network and source is None:  # a fine-tune keeps its source's; a resume restores its own
            model.adapt(data.train.ids)
        elif model.is_network:  # its head's FLOPs still follow this corpus's cluster shares
            model.output_head.observe(data.train.ids)
        if source is not None and resume is None:  # when resuming, the run's own checkpoint is restored instead
            finetune.load_weights(model, source)

    def network_tags(self, model: LanguageModel, policy: str | None) -> dict[str, str]:
        if not model.is_network:
            return {}
        return {names.PRECISION: policy, **precision.device_tags()}  # trainer.precision=auto resolved here

    def figures(self, cfg: DictConfig, policy: str | None, model: LanguageModel, tracker: Tracker,
                fit: FitResult) -> dict[str, float]:
        return compute_figures(cfg, policy, model, tracker, fit)


def compute_figures(cfg: DictConfig, policy: str, model, tracker: Tracker, fit: FitResult) -> dict[str, float]:
    """A network's FLOPs per training and per scored token (counted from its architecture at the
    run's window), its training FLOPs and MFU against the peak (trainer.peak_flops, else the
    machine's measured one, tagged with how it was found). A counting model has none: {}."""
    per_token = model.flops_per_token(context=cfg.trainer.bptt, training=True)
    if per_token is None:
        return {}
    figures = {
        names.TRAIN_FLOPS_PER_TOKEN: per_token,
        names.TRAIN_FLOPS: per_token * fit.train_tokens,
        names.EVAL_FLOPS_PER_TOKEN: model.flops_per_token(context=cfg.trainer.bptt, training=False),
    }
    if fit.train_seconds > 0:
        peak, how = resolve_peak(cfg.trainer.peak_flops, policy, default_cache_dir(cfg.cache_dir))
        tracker.set_tags({names.PEAK_FLOPS: f"{peak:.4g}", names.PEAK_FLOPS_METHOD: how})
        figures[names.TRAIN_MFU] = mfu(figures[names.TRAIN_FLOPS], fit.train_seconds, peak)
    return figures


def saved_state(cfg: DictConfig, trainer: Trainer, model, digest: str) -> TrainState | None:
    """The checkpoint to continue from, per trainer.resume (null: if the run folder has one).
    `digest` is this run's `state.config_digest`; a checkpoint with another is refused."""
    wanted = cfg.trainer.resume
    if wanted is False or not model.is_network:
        return None
    try:
        state = checkpoints.read_state(trainer.last_checkpoint)
    except DamagedFile as ex:
        raise ConfigError(damaged_checkpoint(trainer, ex)) from None
    if wanted is True and state is None:
        raise ConfigError(
            f"trainer.resume=true, but there is no checkpoint in {trainer.last_checkpoint}. Resume by "
            "running the same command with hydra.run.dir=<the interrupted run's folder>."
        )
    if state is None:
        return None
    if state.config_digest != digest:
        raise ConfigError(
            f"the checkpoint in {trainer.last_checkpoint} was made with a different dataset, tokenizer, "
            "model, seed or trainer.init_from; resume with the same settings, or set trainer.resume=false "
            "to start over"
        )
    try:  # its files, before the MLflow run is reopened
        best = trainer.best_checkpoint if state.best_valid_loss is not None else None
        checkpoints.check(trainer.last_checkpoint, best)
    except DamagedFile as ex:
        raise ConfigError(damaged_checkpoint(trainer, ex)) from None
    return state


def damaged_checkpoint(trainer: Trainer, ex: DamagedFile) -> str:
    return (
        f"the checkpoint in {trainer.checkpoint_dir} is damaged and cannot be resumed from: {ex}. Run the same "
        "command with trainer.resume=false to train again from the start in this folder (as a new MLflow run; "
        "the interrupted one keeps what it logged), or give another hydra.run.dir"
    )
