"""One run, from a composed config to a finished MLflow run.

check the config -> tokenize (cached) -> build the model -> start tracking -> fit -> test with the
best checkpoint -> log the model. Whatever was logged before a failure stays logged; the MLflow
run ends FAILED (or KILLED on Ctrl-C) with the reason as a tag. With `trainer.init_from` the model,
tokenizer and vocabulary are a logged model's, and training starts from its weights (finetune.py).
"""

from __future__ import annotations

import inspect
import logging
import platform
from pathlib import Path

import keras
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

import lmbench
from lmbench.bundle import save_bundle
from lmbench.config import check_target, to_yaml
from lmbench.data.pipeline import default_cache_dir, load_corpus
from lmbench.errors import ConfigError, TrainingDiverged
from lmbench.tracking import Tracker, flatten, git_commit, resolve_uri
from lmbench.models.neural import NeuralLM
from lmbench.training import checkpoints, finetune, precision
from lmbench.training.trainer import Trainer

log = logging.getLogger(__name__)

# Passed by lmbench to every model builder; `vocab` (the Vocabulary itself) only to those that take it.
MODEL_SUPPLIED = ("vocab_size", "eos_id", "vocab")


def saved_state(cfg: DictConfig, trainer: Trainer, model, digest: str) -> checkpoints.TrainState | None:
    """The checkpoint to continue from, per trainer.resume (null: if the run folder has one).
    `digest` is this run's `checkpoints.config_digest`; a checkpoint with another is refused."""
    wanted = cfg.trainer.resume
    state = checkpoints.read_state(trainer.last_checkpoint) if isinstance(model, NeuralLM) else None
    if wanted is True and state is None:
        raise ConfigError(
            f"trainer.resume=true, but there is no checkpoint in {trainer.last_checkpoint}. Resume by "
            "running the same command with hydra.run.dir=<the interrupted run's folder>."
        )
    if wanted is False or state is None:
        return None
    if state.config_digest != digest:
        raise ConfigError(
            f"the checkpoint in {trainer.last_checkpoint} was made with a different dataset, tokenizer, "
            "model, seed or trainer.init_from; resume with the same settings, or set trainer.resume=false "
            "to start over"
        )
    return state


def build_model(model_cfg: DictConfig, vocab):
    supplied = {"vocab_size": len(vocab), "eos_id": vocab.eos_id}
    if "vocab" in inspect.signature(get_object(model_cfg._target_)).parameters:
        supplied["vocab"] = vocab  # e.g. the interpolated family checks its components' against it
    try:
        return instantiate(model_cfg, **supplied)
    except ConfigError:
        raise
    except Exception as ex:
        # Hydra wraps the builder's own error; its message names the target and the cause.
        cause = ex.__cause__ if isinstance(ex.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(f"model config cannot be built: {ex}") from None


def run(
    cfg: DictConfig, output_dir: Path, launch_dir: Path, parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, float]:
    """`parent_run_id` nests the MLflow run under a sweep's parent run; `extra_tags` (the sweep id,
    the job's overrides, Hydra's group choices) are added to the run's tags."""
    output_dir = Path(output_dir)
    source = None
    if cfg.trainer.init_from:  # fine-tuning: the source's model, tokenizer and vocabulary
        source = finetune.load_source(
            cfg.trainer.init_from, resolve_uri(cfg.tracking.uri, launch_dir), default_cache_dir(cfg.cache_dir)
        )
        cfg = finetune.adopt_source_configs(cfg, source)
    container = OmegaConf.to_container(cfg, resolve=True)
    digest = checkpoints.config_digest(container)
    check_target(cfg.tokenizer, "tokenizer")
    check_target(cfg.model, "model", supplied=MODEL_SUPPLIED)
    check_target(cfg.optimizer, "optimizer", supplied=("global_clipnorm",))
    policy = precision.resolve(cfg.trainer.precision)
    keras.mixed_precision.set_global_policy(policy)  # before any layer is built
    keras.utils.set_random_seed(cfg.seed)

    tokenizer = instantiate(cfg.tokenizer)
    data = load_corpus(
        cfg.dataset, tokenizer, cache_dir=default_cache_dir(cfg.cache_dir), progress=cfg.trainer.progress,
        vocab=source.vocab if source is not None else None,
    )
    vocab = data.vocab
    oov_rate = data.info.get("oov_rate")  # None from a token-id cache older than OOV counts
    log.info(
        "%s: |V|=%d%s, tokens train/valid/test = %d/%d/%d%s%s",
        cfg.dataset.name, len(vocab), " (the source model's)" if source is not None else "",
        len(data.train), len(data.valid), len(data.test),
        ", OOV rate " + "/".join(f"{oov_rate[s]:.2%}" for s in data.splits) if oov_rate else "",
        " (from cache)" if data.info.get("from_cache") else "",
    )
    model = build_model(cfg.model, vocab)
    trainer = Trainer(cfg.trainer, cfg.optimizer, tracker=None, checkpoint_dir=output_dir / "checkpoints")
    trainer.check(model, data)
    resume = saved_state(cfg, trainer, model, digest)
    if source is not None and resume is None:  # when resuming, the run's own checkpoint is restored instead
        finetune.load_weights(model, source)

    tracking = cfg.tracking
    tracker = Tracker(tracking.enabled, resolve_uri(tracking.uri, launch_dir), tracking.experiment, tracking.log_every_n_steps)
    trainer.tracker = tracker
    family = getattr(model, "family", type(model).__name__.lower())
    tokenizer_name = type(tokenizer).__name__.removesuffix("Tokenizer").lower()
    tags = {
        "lmbench.family": family,
        "lmbench.dataset": cfg.dataset.name,
        "lmbench.tokenizer": tokenizer_name,
        "lmbench.version": lmbench.__version__,
        "lmbench.output_dir": str(output_dir.resolve()),
        "lmbench.python": platform.python_version(),
        **(source.tags if source is not None else {}),
        **(extra_tags or {}),
    }
    if isinstance(model, NeuralLM):  # trainer.precision=auto resolved on this machine
        tags["lmbench.precision"] = policy
    if hasattr(model, "eval_method"):  # how an attention model gets its context when scoring
        tags["lmbench.eval_method"] = model.eval_method
    if hasattr(model, "lineage_tags"):  # a model made of other runs' models names them
        tags.update(model.lineage_tags())
    commit = git_commit(launch_dir) or git_commit(Path(lmbench.__file__).parent)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    params = flatten(container)
    params.update({"data.vocab_size": len(vocab), **{f"data.{s}_tokens": len(data.splits[s]) for s in data.splits}})
    prefix = tracking.run_name or f"{family}-{cfg.dataset.name}"
    if resume is not None and resume.run_id is not None:
        tracker.resume(resume.run_id, resumed_at_step=resume.global_step)
    else:
        tracker.start(prefix, tags, params, parent_run_id=parent_run_id)
    if resume is not None:
        print(f"Resuming from {trainer.last_checkpoint} at step {resume.global_step}", flush=True)
    if tracker.enabled:
        print(f"MLflow run {tracker.run_id} in {tracker.uri} (experiment '{tracker.experiment}')", flush=True)

    try:
        if oov_rate:  # tokens the vocabulary lacks (with init_from: the source's vocabulary)
            tracker.log_metrics({f"data/{s}_oov_rate": r for s, r in oov_rate.items()})
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(to_yaml(cfg))
        vocab.save(output_dir / "vocab.json")
        tracker.log_artifact(output_dir / "config.yaml")
        tracker.log_artifact(output_dir / "vocab.json")

        state = resume or checkpoints.TrainState(config_digest=digest)
        fit = trainer.fit(model, data, state, resumed=resume is not None)
        test = trainer.test(model, data)
        n_params = model.num_params()  # after fit: a Keras model has no weights until first called
        best = fit.best_valid
        summary = {
            **test.metrics(),
            "best_valid/loss": best.loss,
            "best_valid/ppl": best.ppl,
            "best_valid/bpc": best.bpc,
            "train/tokens_per_sec": fit.tokens_per_sec,
            "time/train_s": fit.train_seconds,
            "model/params": n_params,
        }
        tracker.log_metrics(summary)
        bundle = save_bundle(
            output_dir / "model", model, vocab=vocab, model_cfg=container["model"],
            tokenizer_cfg=container["tokenizer"], eval_batch_size=cfg.trainer.eval_batch_size,
            info={
                "dataset": cfg.dataset.name, "dataset_config": container["dataset"],
                "run_id": tracker.run_id, "experiment": tracking.experiment, "metrics": summary,
                **({"init_from": source.given, "source_run_id": source.run_id} if source is not None else {}),
            },
        )
        if cfg.trainer.export_arpa:
            model.to_arpa(bundle / "model.arpa", vocab.tokens)
        if tracking.log_model:
            tracker.log_model(bundle)
    except TrainingDiverged as ex:
        tracker.finish("FAILED", str(ex), step=ex.step)
        raise
    except KeyboardInterrupt:
        tracker.finish("KILLED", "interrupted by the user")  # the CLI says how to continue
        raise
    except BaseException as ex:
        tracker.finish("FAILED", f"{type(ex).__name__}: {ex}")
        raise
    tracker.finish("FINISHED")

    trained = f"{fit.epochs} epoch(s), {fit.steps} step(s)" if fit.steps else "counted"
    print(
        f"{prefix}: {trained}, {fit.train_seconds:.1f} s train, "
        f"{fit.tokens_per_sec:,.0f} tok/s | valid ppl {best.ppl:.2f} | "
        f"test ppl {test.ppl:.2f}, bpc {test.bpc:.4f}",
        flush=True,
    )
    if tracker.enabled:
        print(f"Open the MLflow UI with: {tracker.ui_command}", flush=True)
    return summary
