"""Value ranges of a composed config, checked before any work: no data read, no TensorFlow loaded.

The schema (schema.py) has checked types at composition; these are the ranges it cannot express.
`lmbench` calls `check_values` right after Hydra composed the config (cli/main.py), and `run`
again (training/run.py), for configs that did not come through the command line.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from lmbench.config.schema import head_config
from lmbench.errors import ConfigError


def check_values(cfg: DictConfig) -> None:
    """The trainer's and optimizer's value ranges and a network's output head."""
    check_trainer_values(cfg.trainer)
    check_optimizer_values(cfg.optimizer)
    check_dataset_values(cfg.dataset)
    model = cfg.get("model")
    if isinstance(model, DictConfig):
        check_model_rates(model)
        if "head" in model:
            head_config(model.head)


# A network's probabilities of dropping something (the recurrent family's AWD options among them):
# checked here too, so that a bad one stops the command before TensorFlow loads.
MODEL_RATES = ("dropout", "dropout_input", "dropout_hidden", "dropout_embedding", "weight_drop")


def check_model_rates(model: DictConfig) -> None:
    for key in MODEL_RATES:
        value = model.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ConfigError(f"model.{key} must be in [0, 1), got {value!r}")


SCHEDULES = ("constant", "plateau", "cosine")  # trainer.lr_schedule


def check_trainer_values(cfg) -> None:
    """Refuse trainer values out of range (the schema has checked their types); needs no data, so
    `run` calls it before any corpus is read."""
    if cfg.max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be >= 1, got {cfg.max_epochs}")
    if cfg.max_steps is not None and cfg.max_steps < 0:  # 0: no training, the model scored as it is
        raise ConfigError(f"trainer.max_steps must be >= 0 (0: score without training) or null, got {cfg.max_steps}")
    for key in ("max_tokens", "checkpoint_every_n_steps", "early_stopping_patience", "validate_every_n_steps"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"trainer.{key} must be >= 1 or null, got {value}")
    for key in ("max_time", "peak_flops"):
        value = getattr(cfg, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"trainer.{key} must be a number > 0, or null, got {value}")
    if cfg.divergence_grace_steps is not None and cfg.divergence_grace_steps < 0:
        raise ConfigError(
            f"trainer.divergence_grace_steps must be >= 0, or null for the non-finite check only, got "
            f"{cfg.divergence_grace_steps}"
        )
    if cfg.eval_batch_size < 1:
        raise ConfigError(f"trainer.eval_batch_size must be >= 1, got {cfg.eval_batch_size}")
    if cfg.lr_schedule not in SCHEDULES:
        raise ConfigError(f"trainer.lr_schedule={cfg.lr_schedule!r}; valid: {', '.join(SCHEDULES)}")
    if cfg.warmup_steps < 0 or not 0.0 <= cfg.min_lr_ratio <= 1.0 or cfg.lr_decay_factor <= 0:
        raise ConfigError("trainer.warmup_steps must be >= 0, min_lr_ratio in [0, 1], lr_decay_factor > 0")
    if cfg.clip_norm is not None and not (math.isfinite(cfg.clip_norm) and cfg.clip_norm > 0):
        raise ConfigError(f"trainer.clip_norm must be > 0, or null for no clipping, got {cfg.clip_norm}")
    if cfg.l1 < 0 or cfg.l2 < 0:
        raise ConfigError("trainer.l1 and trainer.l2 must be >= 0")
    if cfg.min_delta < 0 or cfg.lr_decay_patience < 0:
        raise ConfigError(
            f"trainer.min_delta and trainer.lr_decay_patience must be >= 0, got {cfg.min_delta} and "
            f"{cfg.lr_decay_patience}"
        )
    if cfg.accumulate_steps < 1 or cfg.nonmono < 1:
        raise ConfigError(
            f"trainer.accumulate_steps (windows per optimizer update) and trainer.nonmono (NT-ASGD's "
            f"validations without improvement) must be >= 1, got {cfg.accumulate_steps} and {cfg.nonmono}"
        )
    check_devices(cfg)
    if cfg.batch_size < 1 or cfg.bptt < 1:
        raise ConfigError(f"trainer.batch_size and trainer.bptt must be >= 1, got {cfg.batch_size} and {cfg.bptt}")


STRATEGIES = ("auto", "mirrored", "multi_worker")  # trainer.strategy (training/distributed.py)


PRECISIONS = ("auto", "float32", "mixed_bfloat16")  # trainer.precision (training/precision.py)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r}; valid: {', '.join(PRECISIONS)}")


def check_devices(cfg) -> None:
    """`trainer.devices` (a number >= 1 or `all`) and `trainer.strategy`; configs written before
    they existed have neither (one device)."""
    devices, strategy = getattr(cfg, "devices", 1), getattr(cfg, "strategy", "auto")
    if strategy not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={strategy!r}; valid: {', '.join(STRATEGIES)}")
    if devices != "all" and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ConfigError(f"trainer.devices must be a number of devices >= 1 or `all`, got {devices!r}")


def check_dataset_values(cfg) -> None:
    """The share of the train split to train on (data/subset.py)."""
    if not 0.0 < cfg.train_fraction <= 1.0:
        raise ConfigError(
            f"dataset.train_fraction must be in (0, 1] (the first share of the train split's lines), got "
            f"{cfg.train_fraction}"
        )
    if cfg.max_train_tokens is not None and cfg.max_train_tokens < 1:
        raise ConfigError(f"dataset.max_train_tokens must be >= 1 or null, got {cfg.max_train_tokens}")


# The ranges of the values Keras optimizers take, by key: Keras itself accepts a negative learning
# rate (and trains, reporting a figure), a momentum of 2 or an epsilon of 0.
OPTIMIZER_RANGES = {  # key: (low, high, whether low is allowed); None: no bound
    "learning_rate": (0.0, None, False),
    "momentum": (0.0, 1.0, True),
    "beta_1": (0.0, 1.0, True),
    "beta_2": (0.0, 1.0, True),
    "rho": (0.0, 1.0, True),
    "epsilon": (0.0, None, False),
    "weight_decay": (0.0, None, True),
}


def check_optimizer_values(optimizer_cfg) -> None:
    """Refuse optimizer values outside their range (a finite number in the ranges above; the
    upper bounds are exclusive)."""
    for key, (low, high, low_ok) in OPTIMIZER_RANGES.items():
        value = optimizer_cfg.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # absent, or a schedule object: Keras checks those
        below = value < low or (value == low and not low_ok)
        if not math.isfinite(value) or below or (high is not None and value >= high):
            bounds = f"{'[' if low_ok else '('}{low}, {high if high is not None else 'inf'})"
            raise ConfigError(f"optimizer.{key} must be a finite number in {bounds}, got {value}")
