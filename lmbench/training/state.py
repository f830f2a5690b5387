"""Where a network's training stands (`TrainState`, written into every checkpoint), and what must
not change for a run to continue from one (`config_digest`). Apart from `checkpoints`, which
reads and writes them with TensorFlow, because a run of a counting model uses both and no
TensorFlow."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 1  # the epoch in progress (1-based)
    step_in_epoch: int = 0  # windows of `epoch` already trained
    best_valid_loss: float | None = None
    stale_epochs: int = 0  # epochs without improvement since the last lr decay
    early_stop_count: int = 0  # epochs without improvement, for early stopping
    learning_rate: float | None = None
    train_seconds: float = 0.0
    train_tokens: int = 0
    window_loss: float = 0.0  # train loss accumulated since the last logged step
    window_tokens: int = 0
    run_id: str | None = None
    config_digest: str = ""
    valid_losses: list[float] = field(default_factory=list)
    finished_training: bool = False
    stop_reason: str | None = None  # the budget that ended training (result.STOP_REASONS)
    # NT-ASGD (training/averaging.py): the global step averaging started after, and the updates
    # averaged since (the average itself is in ARRAYS_FILE); None: not averaging
    averaging_from_step: int | None = None
    averaged_updates: int = 0


def config_digest(container: dict) -> str:
    """What must not change between a run and its resumption (data, tokenizer, model, the model
    fine-tuned from)."""
    keep = {k: container.get(k) for k in ("dataset", "tokenizer", "model", "seed")}
    if isinstance(keep["dataset"], dict):  # the subset keys only when they cut: older checkpoints keep their digest
        unset = {"train_fraction": 1.0, "max_train_tokens": None}
        keep["dataset"] = {k: v for k, v in keep["dataset"].items() if k not in unset or v != unset[k]}
    init_from = (container.get("trainer") or {}).get("init_from")
    if init_from:  # only when set, so checkpoints of runs that do not fine-tune keep their digest
        keep["init_from"] = init_from
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]
