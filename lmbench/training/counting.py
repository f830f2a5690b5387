"""Fitting a counting model (the n-gram family, a mixture): one pass over train, then `tune` on
valid where the model declares it (`ModelBase.tunes_on_valid`), then validation. The trainer's
budgets (epochs, steps, tokens, time) are a network's compute: a counting model counts its whole
training split once whatever they say, so that a sweep with a token budget compares networks with
the n-gram of the same data. Less data for every family is `dataset.max_train_tokens`."""

from __future__ import annotations

import time
from collections.abc import Callable

from lmbench.config import TrainerConfig
from lmbench.data.types import CorpusData
from lmbench.models.base import CountingModel
from lmbench.progress import progress_bar
from lmbench.scoring import EvalResult
from lmbench.tracking import Tracker
from lmbench.training.result import FitResult

# The trainer's validation: (model, data, epoch, result) -> the valid split's result, logged.
Validate = Callable[..., EvalResult]


def fit_counting(
    model: CountingModel, data: CorpusData, cfg: TrainerConfig, tracker: Tracker, validate: Validate
) -> FitResult:
    result = FitResult(epochs=1, stop_reason="one_pass")
    ids = data.train.ids
    start = time.perf_counter()
    with progress_bar(len(ids), "count train", "tok", cfg.progress) as bar:
        stats = model.fit(ids, progress=bar.update)
    if model.tunes_on_valid:  # fitted on the validation split, e.g. interpolation weights
        with progress_bar(len(data.valid), "tune valid", "tok", cfg.progress) as bar:
            stats = {**stats, **model.tune(data.valid.ids, batch_size=cfg.eval_batch_size, progress=bar.update)}
    result.train_seconds = time.perf_counter() - start
    result.train_tokens = len(ids)
    tracker.log_metrics(stats)
    result.best_valid = validate(model, data, epoch=1, result=result)
    return result
