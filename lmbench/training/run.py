"""One run, from a composed config to a finished MLflow run, in five stages:

    prepare   the config as it will run: a fine-tune's source (or a checkpoint's tokenizer) adopted,
              `_target_` keys checked, precision and seed set
    build     tokenizer, token ids (cached), model, optimizer; impossible set-ups refused; the
              checkpoint to resume from, or a fine-tune's starting weights
    open_run  the MLflow run started (or resumed) with its tags and parameters
    train     fit, test with the best checkpoint, the summary and every token's score logged
    save      the bundle written (and ARPA if asked) and logged as the run's MLflow model

Nothing reaches MLflow before `open_run`, so a bad config or corpus leaves no run behind. Whatever
was logged before a failure stays logged; the MLflow run ends FAILED (or KILLED on Ctrl-C or SIGTERM)
with the reason as a tag.
"""

from __future__ import annotations

import errno
import inspect
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

import lmbench
from lmbench import interrupts, names
from lmbench.artifacts.bundle import BundleLoader
from lmbench.artifacts.format import save_bundle
from lmbench.artifacts.interpolation import component_folders
from lmbench.config import check_target, check_values, to_yaml
from lmbench.config.recipes import RECIPE_KEY
from lmbench.data.pipeline import load_corpus
from lmbench.data.subset import train_subset
from lmbench.data.types import CorpusData
from lmbench.errors import ConfigError, DataError, TrainingDiverged
from lmbench.models.base import LanguageModel, ModelBase, family_of
from lmbench.paths import default_cache_dir
from lmbench.scoring import EvalResult, TokenScores
from lmbench.tracking import Tracker, flatten, git_commit, resolve_uri
from lmbench.training.counting_run import CountingRun
from lmbench.training.divergence import explain
from lmbench.training.machine import cpu_model
from lmbench.training.native import native_stderr_silenced, quiet_tensorflow_import
from lmbench.training.outcome import log_corpus, print_outcome, run_name_prefix, write_failure
from lmbench.training.result import Idle, TrainingStopped, ValidationObserver
from lmbench.training.state import TrainState, config_digest
from lmbench.training.trainer import FitResult, Trainer

log = logging.getLogger(__name__)

# Passed by lmbench to every model builder; `vocab` (the Vocabulary) and `loader` (of other runs'
# bundles) only to builders that take them.
MODEL_SUPPLIED = ("vocab_size", "eos_id", "vocab", "loader")
# A file of the run that cannot be written (a full disk, a read-only or vanished folder) is the
# user's to fix, not a bug: one paragraph, the run FAILED with what it logged.
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.ENOTDIR, errno.ENOENT)


@dataclass
class Plan:
    """The config as it runs, and what was derived from it before any data is read."""

    cfg: DictConfig
    container: dict[str, Any]  # cfg resolved, as plain data: params, config.yaml, the bundle's nodes
    digest: str  # state.config_digest: what must not change for a resume
    policy: str | None  # the Keras dtype policy trainer.precision resolved to (None: no network)
    uri: str  # the tracking URI
    source: Any  # trainer.init_from's model (finetune.Source), or None
    kind: CountingRun  # what the stages do by the kind of model: CountingRun or network.NetworkRun


@dataclass
class Built:
    tokenizer: Any
    data: CorpusData
    model: LanguageModel
    optimizer: Any  # a Keras optimizer for a network, None for a counting model
    trainer: Trainer
    tracker: Tracker  # not started yet
    resume: TrainState | None


def run(
    cfg: DictConfig, output_dir: Path, launch_dir: Path, parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None, observer: ValidationObserver | None = None,
) -> dict[str, float]:
    """`parent_run_id` nests the MLflow run under a sweep's parent run; `extra_tags` (the sweep id,
    the job's overrides, Hydra's group choices) are added to the run's tags; `observer` sees every
    validation of a network and may stop it (a search's pruner): then the run ends KILLED, tagged
    with the step and reason, and `TrainingStopped` is raised. Returns the summary."""
    try:
        plan = prepare(cfg, launch_dir)
    except Idle as ex:  # a counting model, and this is not the chief: status 0, nothing run
        log.info("%s", ex)
        return {}
    output_dir = plan.kind.own_folder(Path(output_dir))  # a worker's (not the chief's) files: its own folder
    with plan.kind.allocation_failures():  # one paragraph, not a traceback
        built = build(plan, output_dir, observer)
    tracker = built.tracker  # finish() does nothing until open_run has started the run
    try:
        with interrupts.signal_errors(), plan.kind.allocation_failures():  # after a signal, any error is its: KILLED
            open_run(plan, built, output_dir, launch_dir, parent_run_id, extra_tags)
            fit, summary = train(plan, built, output_dir)
            save(plan, built, output_dir, summary)
    except TrainingStopped as ex:  # everything logged so far stays; no test, no bundle
        tracker.log_metrics({names.TRAIN_TOKENS: ex.train_tokens})
        tracker.set_tags({names.STOPPED_AT_STEP: str(ex.step), names.STOP_REASON: ex.reason})
        tracker.finish("KILLED")
        print(f"Stopped at step {ex.step}: {ex.reason}", flush=True)
        raise
    except TrainingDiverged as ex:  # one paragraph; a sweep's report lists the run as diverged
        message = explain(ex, plan.cfg)
        tracker.set_tags({names.DIVERGED: str(ex.step) if ex.step >= 0 else "scoring"})
        tracker.finish("FAILED", message, step=ex.step)
        raise TrainingDiverged(message, ex.step, ex.loss) from None
    except KeyboardInterrupt as ex:  # Ctrl-C, or SIGTERM (lmbench.interrupts): the CLI says how to continue
        interrupts.caught()
        tracker.finish("KILLED", interrupts.reason(ex))
        raise
    except OSError as ex:
        if ex.errno not in WRITE_ERRORS:
            tracker.finish("FAILED", f"{type(ex).__name__}: {ex}")
            raise
        message = write_failure(ex, output_dir)
        tracker.finish("FAILED", message)
        raise DataError(message) from None
    except BaseException as ex:
        tracker.finish("FAILED", f"{type(ex).__name__}: {ex}")
        raise
    tracker.finish("FINISHED")
    print_outcome(plan.cfg, built.model, fit, summary, tracker, ui_hint=parent_run_id is None)
    return summary


def prepare(cfg: DictConfig, launch_dir: Path) -> Plan:
    kind = run_kind(cfg)
    kind.configure_devices(cfg)  # several devices: before TensorFlow's first op (distributed.py)
    uri = resolve_uri(cfg.tracking.uri, launch_dir)
    cfg, source = kind.adopt_source(cfg, uri)  # fine-tuning: the source's model, tokenizer and vocabulary
    container = OmegaConf.to_container(cfg, resolve=True)
    check_target(cfg.tokenizer, "tokenizer")
    check_target(cfg.model, "model", supplied=MODEL_SUPPLIED)
    kind.check_optimizer(cfg.optimizer)
    check_values(cfg)  # value ranges, before any data is read
    policy = kind.set_precision_and_seed(cfg)  # before any layer is built
    return Plan(cfg, container, config_digest(container), policy, uri, source, kind)


def run_kind(cfg: DictConfig) -> CountingRun:
    """`CountingRun` for a counting model (the n-gram) on one device, without TensorFlow; else
    `network.NetworkRun`, which imports it (4.7 s, 745 MB), with its native start-up lines hidden.
    Decided from the config before anything is built: the class `model._target_` names says whether
    it is a network (`ModelBase.is_network`). A builder function (model=interpolated: its
    components may be networks), a fine-tune (trainer.init_from) and several devices or a strategy
    take the network's way; a target that cannot be imported too, and `check_target` says why."""
    with native_stderr_silenced():  # a network family's module imports TensorFlow
        try:
            target = get_object(cfg.model._target_)
        except Exception:
            target = None
    counting = isinstance(target, type) and issubclass(target, ModelBase) and not target.is_network
    trainer = cfg.trainer
    one_device = trainer.get("devices", 1) == 1 and trainer.get("strategy", "auto") == "auto"
    if counting and one_device and not trainer.init_from:
        return CountingRun()
    quiet_tensorflow_import()
    from lmbench.training.network import NetworkRun  # imports TensorFlow: only here, for a network (above)

    return NetworkRun()


def build(plan: Plan, output_dir: Path, observer: ValidationObserver | None = None) -> Built:
    cfg, source, kind = plan.cfg, plan.source, plan.kind
    tokenizer = kind.source_tokenizer(build_tokenizer(cfg.tokenizer), source, cfg)
    data = load_corpus(
        cfg.dataset,
        tokenizer,
        cache_dir=default_cache_dir(cfg.cache_dir),
        progress=cfg.trainer.progress,
        vocab=source.vocab if source is not None else None,
    )
    data = train_subset(data, cfg.dataset.train_fraction, cfg.dataset.max_train_tokens)  # vocabulary: all of train
    log_corpus(cfg, data, fine_tune=source is not None)
    kind.check_fits(cfg, len(data.vocab), plan.policy)
    with kind.scope():
        model = build_model(cfg.model, data.vocab, BundleLoader(plan.uri, default_cache_dir(cfg.cache_dir)))
    tracking = cfg.tracking
    tracker = Tracker(
        tracking.enabled and kind.is_chief(), plan.uri, tracking.experiment, tracking.log_every_n_steps,
        retry_every_s=tracking.retry_every_s, final_wait_s=tracking.final_wait_s,
    )
    trainer = kind.trainer(cfg.trainer, tracker, output_dir / "checkpoints", observer, cfg.seed)
    trainer.check(model, data)
    optimizer = kind.optimizer(cfg.optimizer, model)
    resume = kind.resume_state(cfg, trainer, model, plan.digest)
    kind.prepare_weights(model, data, source, resume)
    return Built(data.tokenizer, data, model, optimizer, trainer, tracker, resume)


def instantiate_unwrapped(node: DictConfig, **supplied):
    """`instantiate(node, **supplied)`, a builder's own `ConfigError` raised as it is: Hydra wraps
    it in an exception of its own, whose message a user would read instead."""
    try:
        return instantiate(node, **supplied)
    except ConfigError:
        raise
    except Exception as ex:
        if isinstance(ex.__cause__, ConfigError):
            raise ex.__cause__ from None
        raise


def build_tokenizer(tokenizer_cfg: DictConfig):
    """The tokenizer of the config; its constructor's `ConfigError` as it is."""
    return instantiate_unwrapped(tokenizer_cfg)


def build_model(model_cfg: DictConfig, vocab, loader: BundleLoader) -> LanguageModel:
    if RECIPE_KEY in model_cfg:  # the recipe the node names (config/recipes.py), not the class's argument
        resolved = OmegaConf.to_container(model_cfg, resolve=True)
        model_cfg = OmegaConf.create({k: v for k, v in resolved.items() if k != RECIPE_KEY})
    supplied = {"vocab_size": len(vocab), "eos_id": vocab.eos_id}
    wanted = inspect.signature(get_object(model_cfg._target_)).parameters
    if "vocab" in wanted:
        supplied["vocab"] = vocab  # e.g. interpolation checks its components' against it
    if "loader" in wanted:
        supplied["loader"] = loader  # e.g. interpolation loads its components from runs
    try:
        return instantiate_unwrapped(model_cfg, **supplied)
    except ConfigError:
        raise
    except Exception as ex:  # Hydra's message names the target and the cause
        raise ConfigError(f"model config cannot be built: {ex}") from None


def open_run(
    plan: Plan, built: Built, output_dir: Path, launch_dir: Path, parent_run_id: str | None,
    extra_tags: dict[str, str] | None,
) -> Tracker:
    """Start the run (or reopen the one a checkpoint names); log what it is made of."""
    cfg, tracker, resume, data = plan.cfg, built.tracker, built.resume, built.data
    if resume is not None and resume.run_id is not None:
        tracker.resume(resume.run_id, resumed_at_step=resume.global_step)
    else:
        # The run's own recipe is in its optimizer and trainer values and `recipe`; the table of every
        # family's recipes would be 25 parameters that say nothing about this run.
        params = flatten({k: v for k, v in plan.container.items() if k != "recipes"})
        params.update(
            {"data.vocab_size": len(data.vocab), **{f"data.{s}_tokens": len(data.splits[s]) for s in data.splits}}
        )
        params["data.train_tokens_full"] = data.info.get("train_tokens_full", len(data.train))
        tags = run_tags(plan, built, output_dir, launch_dir, extra_tags)
        tracker.start(run_name_prefix(cfg, built.model), tags, params, parent_run_id=parent_run_id)
    if resume is not None:
        print(f"Resuming from {built.trainer.last_checkpoint} at step {resume.global_step}", flush=True)
    if tracker.enabled:
        print(f"MLflow run {tracker.run_id} in {tracker.uri} (experiment '{tracker.experiment}')", flush=True)
    plan.kind.share_run(tracker, output_dir)  # several workers: the chief's run, known on every one
    return tracker


def run_tags(
    plan: Plan, built: Built, output_dir: Path, launch_dir: Path, extra: dict[str, str] | None
) -> dict[str, str]:
    cfg, model = plan.cfg, built.model
    tags = {
        names.FAMILY: family_of(model),
        names.DATASET: cfg.dataset.name,
        names.TOKENIZER: built.tokenizer.label,  # word, char, nltk, bpe-8000, ...
        names.VERSION: lmbench.__version__,
        names.OUTPUT_DIR: str(output_dir.resolve()),
        names.PYTHON: platform.python_version(),
        names.CPU: cpu_model(),
        **(plan.source.tags if plan.source is not None else {}),
        **(extra or {}),
    }
    tags.update(plan.kind.network_tags(model, plan.policy))  # a network's precision and devices
    if model.eval_method is not None:  # how an attention model gets its context when scoring
        tags[names.EVAL_METHOD] = model.eval_method
    tags.update(model.lineage_tags())  # a model made of other runs' models names them
    commit = git_commit(launch_dir) or git_commit(Path(lmbench.__file__).parent)
    if commit:
        tags[names.GIT_COMMIT] = commit
    return tags


def train(plan: Plan, built: Built, output_dir: Path) -> tuple[FitResult, dict[str, float]]:
    """Fit, test with the best weights, log the summary; the run's files written on the way."""
    data, model, tracker = built.data, built.model, built.tracker
    oov_rate = data.info.get("oov_rate")  # None from a token-id cache older than OOV counts
    if oov_rate:  # tokens the vocabulary lacks (with init_from: the source's vocabulary)
        tracker.log_metrics({names.oov_metric(s): r for s, r in oov_rate.items()})
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(to_yaml(plan.cfg))
    data.vocab.save(output_dir / "vocab.json")
    tracker.log_artifact(output_dir / "config.yaml")
    tracker.log_artifact(output_dir / "vocab.json")
    learned = built.tokenizer.save_model(output_dir)  # a learned tokenizer's model (tokenizer.json)
    if learned is not None:
        tracker.log_artifact(learned)

    state = built.resume or TrainState(config_digest=plan.digest)
    fit = built.trainer.fit(model, data, state, resumed=built.resume is not None, optimizer=built.optimizer)
    tracker.set_tags({names.STOP_REASON: fit.stop_reason})
    test = built.trainer.test(model, data)
    best = fit.best_valid
    summary = {
        **test.metrics(),
        **best.metrics(names.BEST_VALID, with_speed=False),
        names.TRAIN_TOKENS_PER_SEC: fit.tokens_per_sec,
        names.TRAIN_TOKENS: fit.train_tokens,
        names.TRAIN_SECONDS: fit.train_seconds,
        names.PARAMS: model.num_params(),  # after fit: a Keras model has no weights until first called
        **plan.kind.figures(plan.cfg, plan.policy, model, tracker, fit),  # a network's FLOPs and MFU
    }
    tracker.log_metrics(summary)
    log_token_scores(plan.cfg, built, output_dir, {names.VALID: best, names.TEST: test})
    return fit, summary


def log_token_scores(cfg: DictConfig, built: Built, output_dir: Path, results: dict[str, EvalResult]) -> None:
    """Tag the digest of the ids each split was scored on; with tracking.log_token_scores, also
    write every token's score into the run folder and log it (token_scores/<split>.npz). Valid's
    are the best validation's: the weights the run is tested, saved and reported with."""
    data, tracker = built.data, built.tracker
    scores = {s: TokenScores.of(result, data.splits[s], data.vocab) for s, result in results.items()}
    tracker.set_tags({names.scored_ids_tag(s): score.ids_digest for s, score in scores.items()})
    if cfg.tracking.log_token_scores:
        for s, score in scores.items():
            path = score.save(output_dir / names.TOKEN_SCORES / f"{s}.npz")
            tracker.log_artifact(path, names.TOKEN_SCORES)


def save(plan: Plan, built: Built, output_dir: Path, summary: dict[str, float]) -> None:
    """The bundle (`<run folder>/model/`), its ARPA form if asked, and the MLflow model."""
    cfg, container, source, tracker = plan.cfg, plan.container, plan.source, built.tracker
    if not plan.kind.is_chief():  # the chief's bundle is the run's
        return
    bundle = save_bundle(
        output_dir / "model",
        built.model,
        vocab=built.data.vocab,
        tokenizer=built.tokenizer,
        model_cfg=container["model"],
        tokenizer_cfg=container["tokenizer"],
        eval_batch_size=cfg.trainer.eval_batch_size,
        info={
            "dataset": cfg.dataset.name,
            "dataset_config": container["dataset"],
            "run_id": tracker.run_id,
            "experiment": cfg.tracking.experiment,
            "metrics": summary,
            **({"init_from": source.given, "source_run_id": source.run_id} if source is not None else {}),
        },
        components=component_folders(built.model),
    )
    if cfg.trainer.export_arpa:
        built.model.to_arpa(bundle / "model.arpa", built.data.vocab.tokens)
    if cfg.tracking.log_model and tracker.active:
        from lmbench.artifacts.pyfunc import log_bundle  # imports MLflow and pandas: only for a run that logs

        log_bundle(tracker, bundle)

