"""The config schema: the fixed groups and the root as dataclasses.

The fixed groups (`dataset`, `trainer`, `tracking`) are dataclasses typing the fields of the root,
which is registered in Hydra's ConfigStore as `lmbench_schema`, so a misspelt key or a wrong type in
a YAML file or on the command line fails at composition. The `_target_` groups (`tokenizer`,
`model`, `optimizer`) differ per implementation, so their keys are checked against the target's
signature (`targets.check_target`) before any work starts: adding a family needs no schema edit.

This module knows neither MLflow nor TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from lmbench.errors import ConfigError


@dataclass
class DatasetConfig:
    """Where a corpus's text comes from.

    Either `train`/`valid`/`test` name one file per split, or `file` names one file cut into
    train/valid/test by `split_fractions` at line boundaries (first lines to train, next to valid,
    the rest to test). Relative names are looked up in `data_dir` (else `$LMBENCH_DATA_DIR`), then in
    the cache, then downloaded from `url` + name and checked against `sha256[name]` (or, with
    `archive`, taken from the zip `url` + archive, checked against `sha256[archive]`).
    """

    name: str = MISSING
    subdir: Optional[str] = None  # folder of this corpus inside the data dir / cache
    train: Optional[str] = None
    valid: Optional[str] = None
    test: Optional[str] = None
    file: Optional[str] = None
    split_fractions: list[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])
    url: Optional[str] = None  # base URL; the file name is appended
    archive: Optional[str] = None  # a zip at url + archive that holds the split files (sha256[archive])
    sha256: dict[str, str] = field(default_factory=dict)
    unk_token: str = "<unk>"  # reused when the corpus has it (PTB, WikiText-2)
    data_dir: Optional[str] = None  # overrides $LMBENCH_DATA_DIR
    encoding_errors: str = "strict"  # strict: refuse invalid UTF-8; replace: U+FFFD per bad byte
    allow_binary: bool = False  # read binary data (a NUL byte, > 1 % control bytes) as characters (else: refused)
    # Train on less of the train split: its first `train_fraction` of lines, and at most
    # `max_train_tokens` tokens (cut at a line end). The vocabulary is still the whole train split's,
    # so every size is scored on the same valid/test ids (data/subset.py).
    train_fraction: float = 1.0
    max_train_tokens: Optional[int] = None


@dataclass
class TrainerConfig:
    max_epochs: int = 1
    max_steps: Optional[int] = None  # stop after this many optimizer steps in total
    max_tokens: Optional[int] = None  # stop once this many training tokens were trained on
    max_time: Optional[float] = None  # stop once training (scoring excluded) took this many seconds
    batch_size: int = 20  # parallel token streams
    bptt: int = 35  # tokens per truncated-BPTT window (context length for attention models)
    eval_batch_size: int = 10
    clip_norm: Optional[float] = 0.25  # global-norm gradient clipping; null disables
    lr_decay_factor: float = 4.0  # divide the learning rate by this on a validation plateau
    lr_decay_patience: int = 0  # epochs without improvement before decaying
    min_delta: float = 0.0  # improvement in valid loss (nats) that counts
    lr_schedule: str = "plateau"  # constant | plateau | cosine
    warmup_steps: int = 0  # linear warm-up from 0 (any schedule)
    min_lr_ratio: float = 0.0  # cosine: final learning rate as a fraction of the initial one
    early_stopping_patience: Optional[int] = None  # stop after this many epochs without improvement
    # A loss that is not finite ends the run at once; one still worse than a uniform guess (ln |V|)
    # after this many steps ends it too (training/divergence.py); null: only the non-finite check.
    divergence_grace_steps: Optional[int] = 100
    l1: float = 0.0  # L1 penalty on weight matrices (not biases or norms), added to the loss
    l2: float = 0.0  # L2 penalty likewise; for decoupled weight decay use optimizer=adamw
    checkpoint_every_n_steps: Optional[int] = 500  # plus one at every epoch end; null: epochs only
    # Also validate every this many steps inside an epoch (valid_step/* at the global step, for
    # curves per step); null: at epoch ends only, except that a run max_steps ends inside its first
    # epoch validates 4 times. Decay, early stopping, the best checkpoint: epochs.
    validate_every_n_steps: Optional[int] = None
    resume: Optional[bool] = None  # null: continue from checkpoints/last of the run folder if any
    precision: str = "auto"  # auto | float32 | mixed_bfloat16 (training/precision.py)
    progress: bool = True  # progress bars on stderr
    jit_compile: bool = False  # XLA-compile the train step
    # Windows per optimizer update: their gradients averaged (token-weighted), clipped once, applied
    # once. max_steps, schedules, logging, validation and checkpoints count updates (1: no accumulation).
    accumulate_steps: int = 1
    # Merity et al.'s variable-length BPTT: window lengths ~ N(bptt, 5) (N(bptt / 2, 5) for 5 % of
    # them), the learning rate scaled by length / bptt (training/windows.py)
    variable_bptt: bool = False
    # NT-ASGD (Merity et al. 2018): once an epoch's validation is worse than the best of the epochs
    # before the last `nonmono`, average the weights from then on (uniformly); validation, the best
    # checkpoint, the test and the bundle use the average (training/averaging.py).
    nt_asgd: bool = False
    nonmono: int = 5
    # The FLOP/s that train/mfu divides by; null: measured once per machine and precision by a GEMM
    # probe (training/peak.py) and cached.
    peak_flops: Optional[float] = None
    export_arpa: bool = False  # n-gram: also write the model as an ARPA file (model/model.arpa)
    # Fine-tune: start from this logged model's weights (run id, runs:/<id>/model, models:/<name>/<v>,
    # a run or bundle folder). Its model and tokenizer configs and its vocabulary replace the run's.
    init_from: Optional[str] = None
    # Data-parallel training of one network (training/distributed.py): a number of devices or `all`
    # (1: one device, no strategy); `auto` | `mirrored` (one machine) | `multi_worker` (TF_CONFIG, SLURM).
    devices: Any = 1
    strategy: str = "auto"


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db
    experiment: str = "lmbench"
    run_name: Optional[str] = None  # default: <model>-<dataset>-<short id>
    log_every_n_steps: int = 50
    log_model: bool = True
    # token_scores/{valid,test}.npz: every token's log-probability (4 bytes a token) and the line
    # boundaries, for paired comparisons between runs (lmbench/scoring.py: TokenScores).
    log_token_scores: bool = True
    # A tracking server that stops answering mid-run: training goes on, writes are kept and tried
    # again every `retry_every_s`; at the run's end it gets `final_wait_s` to come back.
    retry_every_s: float = 30.0
    final_wait_s: float = 30.0


@dataclass
class SweepConfig:
    # After the jobs: the sweep's n-gram interpolated with its networks (model=interpolated, weights
    # by EM on valid), as one more child run, so the table says whether a network adds anything.
    interpolate: bool = False
    # Set by lmbench's search sweeper (hydra/sweeper=lmbench_optuna), never by hand: the Optuna
    # trial this job is, whose study the job reports its validations to (lmbench/search/).
    trial: Optional[int] = None
    # Declared by a launcher preset (conf/launcher/) whose jobs run on other machines: where they
    # run (SLURM's nodes, a Ray cluster's address); null: on this machine. A tracking store on this
    # machine's disk is then refused before the sweep starts (cli/sweep.check_launcher_store).
    jobs_run_on: Optional[str] = None


@dataclass
class FullHeadConfig:
    """`model.head` with `kind: full`: the exact softmax over the whole vocabulary.

    Training and scoring compute it in blocks of at most `chunk_positions` positions by
    `chunk_logits // positions` tokens of the vocabulary, so the logits of a window
    ([positions, |V|]) and their gradient never exist at once (lmbench/models/heads.py)."""

    kind: str = "full"
    chunk_positions: int = 1024  # positions per block (a training window of 20 x 35 is one block)
    chunk_logits: int = 1024 * 1024  # logits per block: 4 MB in float32 (the fastest on 2 Xeon cores)
    keep_logits_mb: float = 128.0  # a window's logits up to this size are kept for the gradient, not recomputed

    def check(self) -> None:
        _check_chunks(self)


def _check_chunks(config) -> None:
    for key in ("chunk_positions", "chunk_logits"):
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.head.{key} must be an integer >= 1, got {value!r}")
    keep = config.keep_logits_mb
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not math.isfinite(keep) or keep < 0:
        raise ConfigError(
            f"model.head.keep_logits_mb must be a number of MB >= 0 (0: always recompute), got {keep!r}"
        )


@dataclass
class AdaptiveHeadConfig:
    """`model.head` with `kind: adaptive`: the adaptive softmax (Grave et al. 2017; lmbench/models/
    adaptive.py). Tokens ranked by training frequency; the `cutoffs[0]` most frequent are scored by
    the head, each following cutoff starts a tail cluster, whose scores come from the hidden state
    projected to input_dim // factor**(i+1) dimensions. The defaults are fairseq's for WikiText-103.
    Checked here without the vocabulary; the layer checks `cutoffs[-1] < |V|` when it is built.
    Every softmax in it (the head's, each cluster's) is computed in blocks as the full head's is."""

    kind: str = "adaptive"
    cutoffs: list[int] = field(default_factory=lambda: [20000, 60000])
    factor: float = 4.0
    chunk_positions: int = 1024  # the head's and each cluster's softmax: blocks as model/head=full's
    chunk_logits: int = 1024 * 1024
    keep_logits_mb: float = 128.0

    def check(self) -> None:
        _check_chunks(self)
        cutoffs, factor = self.cutoffs, self.factor
        if not isinstance(cutoffs, (list, tuple)) or not cutoffs:
            raise ConfigError(
                f"model.head.cutoffs must be a non-empty list of token ranks, e.g. [20000, 60000], got {cutoffs!r}"
            )
        if any(isinstance(c, bool) or not isinstance(c, int) for c in cutoffs):
            raise ConfigError(f"model.head.cutoffs must be whole numbers, got {list(cutoffs)}")
        if cutoffs[0] <= 0 or any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
            raise ConfigError(
                f"model.head.cutoffs={list(cutoffs)} must be strictly increasing and each > 0 (and < the "
                "vocabulary size): the head scores the cutoffs[0] most frequent tokens, and each following "
                "cutoff starts a tail cluster, the last one ending at the vocabulary size"
            )
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor < 1:
            raise ConfigError(
                f"model.head.factor={factor!r} must be a finite number >= 1: tail cluster i projects the hidden "
                "state to input_dim // factor**(i+1) dimensions (fairseq and PyTorch use 4; 1 keeps the full width)"
            )


# The output layers a neural family can end in, by `model.head.kind`. Each config class has a
# `kind` field and a `check()` that refuses bad values; lmbench.models.heads maps the same kinds
# to the layers that implement them.
HEAD_KINDS: dict[str, type] = {"full": FullHeadConfig, "adaptive": AdaptiveHeadConfig}


def head_config(head: Mapping | None):
    """The checked config of a family's `head` argument (None: the full softmax).

    Accepts a dict or a DictConfig (as Hydra passes it); a misspelt key, an unknown kind or a bad
    value is a ConfigError naming the valid choices."""
    if head is None:
        return FullHeadConfig()
    if isinstance(head, DictConfig):
        head = OmegaConf.to_container(head, resolve=True)
    if not isinstance(head, Mapping):
        raise ConfigError(f"model.head must be a mapping such as {{kind: full}}, got {head!r}")
    kind = head.get("kind", "full")
    if kind not in HEAD_KINDS:
        raise ConfigError(f"model.head.kind={kind!r} is not one of {', '.join(HEAD_KINDS)}")
    cls = HEAD_KINDS[kind]
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(head) - set(valid))
    if unknown:
        raise ConfigError(
            f"model.head.{unknown[0]} is not an option of the {kind} head; valid keys: {', '.join(valid)}"
        )
    config = cls(**head)
    config.check()
    return config


@dataclass
class RecipeConfig:
    """A family's training recipe (`conf/recipes.yaml`; lmbench/config/recipes.py): what the
    optimizer group's default option and the trainer's clipping, warm-up and schedule read."""

    optimizer: str = MISSING  # a Keras optimizer class, e.g. keras.optimizers.Adam
    learning_rate: float = MISSING
    weight_decay: Optional[float] = None  # decoupled (AdamW); never on norms, biases, embeddings
    clip_norm: Optional[float] = None
    warmup_steps: int = 0
    lr_schedule: str = "plateau"


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    tokenizer: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    sweep: SweepConfig = field(default_factory=SweepConfig)
    recipe: str = MISSING  # the name in `recipes` this run trains on (default: the model family's)
    recipes: dict[str, RecipeConfig] = field(default_factory=dict)
    seed: int = 1234
    cache_dir: Optional[str] = None  # default: $LMBENCH_CACHE_DIR, else ~/.cache/lmbench


def register_configs() -> None:
    """Register the root schema, which `conf/config.yaml` lists first in its defaults.

    Its typed fields check every group's YAML and every override as it is merged in, so the fixed
    groups need no schema entry of their own: none is registered inside the selectable groups,
    where `lmbench --help` would list it as an option. The search sweeper plugin, which sits above
    this layer, is registered by the commands (`lmbench.cli.plugins.register_configs`).
    """
    ConfigStore.instance().store(name="lmbench_schema", node=Config)
