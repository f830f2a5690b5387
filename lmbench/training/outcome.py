"""What a run says about itself: its corpus in the log, and its one line of figures at the end."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from lmbench import names
from lmbench.data.types import CorpusData
from lmbench.models.base import LanguageModel, family_of
from lmbench.tracking import Tracker
from lmbench.training.result import FitResult

log = logging.getLogger("lmbench.training.run")


def write_failure(ex: OSError, output_dir: Path) -> str:
    """What to say when a file of the run could not be written (a full disk, a read-only folder).

    A copy names its source in `filename` and its destination in `filename2` (shutil's copies into
    MLflow's artifact store): the destination is the file that could not be written. A file outside
    the run folder is the artifact store's, which hydra.run.dir does not move."""
    target = ex.filename2 or ex.filename
    if target is None:
        where = f"into the run folder {output_dir}"
    else:
        where = str(target)
    inside = target is None or Path(os.path.abspath(target)).is_relative_to(Path(output_dir).resolve())
    if inside:
        fix = "free space or choose another folder (hydra.run.dir)"
    else:
        fix = ("it is in the MLflow artifact store: free space there, or log to a store whose artifacts are "
               f"elsewhere (tracking.uri, tracking.experiment); the run folder {output_dir} keeps the model "
               "and config.yaml")
    return f"cannot write {where} ({ex.strerror}); {fix}. The MLflow run keeps what it logged before"

def run_name_prefix(cfg: DictConfig, model: LanguageModel) -> str:
    return cfg.tracking.run_name or f"{family_of(model)}-{cfg.dataset.name}"


def log_corpus(cfg: DictConfig, data: CorpusData, fine_tune: bool) -> None:
    oov_rate = data.info.get("oov_rate")
    log.info(
        "%s: |V|=%d%s, tokens train/valid/test = %d/%d/%d%s%s",
        cfg.dataset.name,
        len(data.vocab),
        " (the source model's)" if fine_tune else "",
        len(data.train),
        len(data.valid),
        len(data.test),
        ", OOV rate " + "/".join(f"{oov_rate[s]:.2%}" for s in data.splits) if oov_rate else "",
        " (from cache)" if data.info.get("from_cache") else "",
    )
    if "train_tokens_full" in data.info:
        log.info(
            "training on the first %d of the %d train tokens (dataset.train_fraction=%s, max_train_tokens=%s); "
            "the vocabulary is the whole train split's",
            len(data.train), data.info["train_tokens_full"], cfg.dataset.train_fraction, cfg.dataset.max_train_tokens,
        )


def budget_words(cfg: DictConfig, fit: FitResult) -> str:
    """", stopped by max_time (600 s)" when a budget the user set ended training; "" otherwise."""
    if fit.stop_reason in ("max_time", "max_tokens"):
        unit = " s" if fit.stop_reason == "max_time" else " tokens"
        return f", stopped by {fit.stop_reason} ({cfg.trainer[fit.stop_reason]:,g}{unit})"
    return ", stopped early" if fit.stop_reason == "early_stopping" else ""


def print_outcome(
    cfg: DictConfig, model: LanguageModel, fit: FitResult, summary: dict[str, float], tracker: Tracker, ui_hint: bool
) -> None:
    """One line of figures; and how to open the MLflow UI, unless a sweep says it once at its end."""
    print(
        f"{run_name_prefix(cfg, model)}: {fit.how_long()}{budget_words(cfg, fit)}, "
        f"{fit.train_seconds:.1f} s train, "
        f"{fit.tokens_per_sec:,.0f} tok/s | valid ppl {fit.best_valid.ppl:.2f} | "
        f"test ppl {summary[names.split_metric(names.TEST, names.PPL)]:.2f}, "
        f"bpc {summary[names.split_metric(names.TEST, names.BPC)]:.4f}",
        flush=True,
    )
    if tracker.enabled and ui_hint:
        print(f"Open the MLflow UI with: {tracker.ui_hint()}", flush=True)
