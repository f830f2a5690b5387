"""The names lmbench logs under: metrics and MLflow tags, in one place so that writers and readers
(the trainer, the sweep callback, the report, lmbench-evaluate) cannot drift apart.

Metrics are `<split or part>/<figure>`. A split's figures (`split_metric`) are logged per epoch for
valid and once for test; the run's summary (`best_valid/*`, `test/*`, `time/train_s`,
`train/tokens_per_sec`, `model/params`) once at the end. A name means one thing: the training rate
per logging window is `train/window_tokens_per_sec`, the whole run's `train/tokens_per_sec`.
"""

from __future__ import annotations

# -- figures of a scored split: <split>/<figure> ----------------------------------------------------
LOSS, PPL, BPC, TOKENS, TOKENS_PER_SEC, OOV_RATE = "loss", "ppl", "bpc", "tokens", "tokens_per_sec", "oov_rate"
TRAIN, VALID, TEST, BEST_VALID = "train", "valid", "test", "best_valid"
# In the units of the raw text, whatever the tokenizer (lmbench/scoring.py): exp(nats / words), and
# nats / ln 2 / UTF-8 bytes.
WORD_PPL, BITS_PER_BYTE = "word_ppl", "bits_per_byte"


VALID_STEP = "valid_step"  # valid/* again, at the global step (trainer.validate_every_n_steps)


def split_metric(split: str, figure: str) -> str:
    """`valid/ppl`, `test/bpc`, `best_valid/loss`, ..."""
    return f"{split}/{figure}"


# -- training curves (per logging window or per epoch) ---------------------------------------------
TRAIN_LOSS = "train/loss"
TRAIN_PPL = "train/ppl"
TRAIN_WINDOW_TOKENS_PER_SEC = "train/window_tokens_per_sec"
TRAIN_LR_STEP = "train/lr_step"  # the learning rate at each logged step
TRAIN_LR = "train/lr"  # at each epoch's end
TRAIN_EPOCH = "train/epoch"

# -- the run's summary --------------------------------------------------------------------------
TRAIN_TOKENS_PER_SEC = "train/tokens_per_sec"  # the whole run's training rate
TRAIN_TOKENS = "train/tokens"  # tokens trained on (also logged by a run a validation observer stopped)
TRAIN_SECONDS = "time/train_s"
PARAMS = "model/params"
# Compute (a network's; a counting model has none): FLOPs per training token counted from the
# architecture (forward + backward), their total over the tokens trained on, and the model FLOP
# utilisation, achieved FLOP/s over the peak of PEAK_FLOPS; scoring's FLOPs per token likewise.
TRAIN_FLOPS_PER_TOKEN = "train/flops_per_token"
TRAIN_FLOPS = "train/flops"
TRAIN_MFU = "train/mfu"
EVAL_FLOPS_PER_TOKEN = "eval/flops_per_token"


def ngram_count(order: int) -> str:
    """How many n-grams of an order an n-gram model keeps (`ngrams/order<k>`), logged at its fit."""
    return f"ngrams/order{order}"


def ngram_discount(order: int, which: str | None = None) -> str:
    """An n-gram model's discount of an order (`discount/order<k>`), or one of modified Kneser-Ney's
    three (`which`: D1, D2, D3plus -- not "D3+": MLflow metric names allow no "+")."""
    return f"discount/order{order}" + (f"/{which}" if which else "")


def oov_metric(split: str) -> str:
    """Share of a split's tokens that the vocabulary lacks (`data/<split>_oov_rate`)."""
    return f"data/{split}_oov_rate"


def eval_metric(name: str, figure: str) -> str:
    """lmbench-evaluate's figures of one text or split (`eval/<name>/<figure>`)."""
    return f"eval/{name}/{figure}"


# -- tags -----------------------------------------------------------------------------------------
RUN_NAME = "mlflow.runName"
PARENT_RUN_ID = "mlflow.parentRunId"
GIT_COMMIT = "mlflow.source.git.commit"
DESCRIPTION = "mlflow.note.content"  # a run's description, Markdown
EXPERIMENT_KIND = "mlflow.experimentKind"  # an experiment tag: which page the MLflow UI opens it on
MODEL_TRAINING = "custom_model_development"  # (the other kinds: genai_development, no_inferred_type)

FAMILY = "lmbench.family"
DATASET = "lmbench.dataset"
TOKENIZER = "lmbench.tokenizer"
VERSION = "lmbench.version"
PYTHON = "lmbench.python"
OUTPUT_DIR = "lmbench.output_dir"
PRECISION = "lmbench.precision"  # what trainer.precision resolved to
PEAK_FLOPS = "lmbench.peak_flops"  # the FLOP/s train/mfu divides by, and how it was found:
PEAK_FLOPS_METHOD = "lmbench.peak_flops_method"  # trainer.peak_flops, or the cached GEMM probe
CPU = "lmbench.cpu"  # the CPU's model name (/proc/cpuinfo), what time and speed figures depend on
GPUS = "lmbench.gpus"  # how many GPUs the run's TensorFlow saw (0: it trained on the CPU)
CUDA_VISIBLE_DEVICES = "lmbench.cuda_visible_devices"  # the GPUs a launcher gave the job, when it set them
EVAL_METHOD = "lmbench.eval_method"
COMPONENTS = "lmbench.components"  # a mixture's component runs
COMPONENT_FAMILIES = "lmbench.component_families"
INIT_FROM = "lmbench.init_from"
SOURCE_RUN_ID = "lmbench.source_run_id"  # the run whose model a run fine-tunes or evaluates


def scored_ids_tag(split: str) -> str:
    """`lmbench.scored_ids.<split>`: the digest of the token ids a run scored its split on
    (`scoring.ids_digest`); runs with equal digests can be compared token by token."""
    return f"lmbench.scored_ids.{split}"


# The artifact folder of a run's per-token scores: token_scores/<split>.npz (scoring.TokenScores)
TOKEN_SCORES = "token_scores"

ERROR = "lmbench.error"
FAILED_STEP = "lmbench.failed_step"
# A run the divergence guard ended (FAILED): the step it diverged at. Reports list such runs as
# diverged, never among figures; `lmbench.error` holds the paragraph the user was shown.
DIVERGED = "lmbench.diverged"
RESUMED_AT_STEP = "lmbench.resumed_at_step"
STOPPED_EARLY_AT_EPOCH = "lmbench.stopped_early_at_epoch"
# A run a validation observer stopped (a search's pruner): ends KILLED with these two tags.
STOPPED_AT_STEP = "lmbench.stopped_at_step"
# What ended training: the observer's reason, or the budget (FitResult.stop_reason: max_epochs,
# max_steps, max_tokens, max_time, early_stopping; one_pass for a counting model).
STOP_REASON = "lmbench.stop_reason"
ASGD_FROM_STEP = "lmbench.asgd_from_step"  # NT-ASGD: the optimizer step after which weights are averaged

# sweeps
ROLE = "lmbench.role"  # "sweep" on a sweep's parent run
SWEEP_ID = "lmbench.sweep_id"
SWEEP_DIR = "lmbench.sweep_dir"
JOB_NUM = "lmbench.job_num"
OVERRIDES = "lmbench.overrides"
COMMAND = "lmbench.command"
CONTINUED = "lmbench.continued"

# hyperparameter searches (lmbench.search): each trial's run is tagged with its Optuna trial number
TRIAL = "lmbench.trial"


def choice_tag(group: str) -> str:
    """A Hydra group choice (`lmbench.model=lstm_small`, `lmbench.experiment=quick`)."""
    return f"lmbench.{group}"


MODEL = choice_tag("model")

# lmbench-evaluate
KIND = "lmbench.kind"  # "evaluation" on lmbench-evaluate's runs
SOURCE = "lmbench.source"
EVALUATED_ON = "lmbench.evaluated_on"
# On an evaluation whose text had more unknown tokens than --max-oov-rate: which figures are not
# comparable and why ("OOV rate above --max-oov-rate 0.05: notes 25.0%").
NOT_COMPARABLE = "lmbench.not_comparable"
