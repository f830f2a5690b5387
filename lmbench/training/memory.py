"""Will the network fit? An estimate of its memory before any weight exists, and allocation
failures said in one paragraph.

`model.hidden_size=200000` (a 2-layer LSTM of 320 billion weights) used to end, after minutes, in
TensorFlow's ResourceExhaustedError traceback, or with the kernel's OOM killer (exit 137) once the
process had taken the machine's memory. `check_fits` refuses it at once, before the model is built
(its output layer is built with the model), with the figure and the machine's memory.

The estimate is a lower bound of what training adds to the process (`estimate`): the weights
(float32 variables, also under mixed_bfloat16), the dense gradients (an input embedding's is the
rows a step read), the optimizer's slots (per parameter, by optimizer kind: `SLOTS`), the bfloat16
copies of the dense weights a mixed-precision step computes with, and the activations one training
step keeps for its backward pass (the family's `planned`: the largest tensors of each layer, in the
compute dtype). TensorFlow's own workspace, traced graphs and XLA's compilations come on top, so a
refused model cannot fit; a model that passes may still not (then `allocation_failures` says so).
Measured against real runs' peak memory: docs/architecture.md, "Will it fit?".

The memory compared with: on the CPU what the kernel says is available (MemAvailable in
/proc/meminfo), less where a cgroup (a container, a SLURM job) allows less; on a GPU the device's
memory not used by this process's TensorFlow (`nvidia-smi`'s total, less
`tf.config.experimental.get_memory_info`'s current).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from lmbench.errors import ConfigError
from lmbench.models.neural import NeuralLM, Planned
from lmbench.training import machine
from lmbench.training.machine import available_host, size_text

# Optimizer slots per parameter, by the optimizer class's name (Keras'); an optimizer not listed
# counts none (the estimate stays a lower bound). SGD has one with momentum, RMSprop one more with
# momentum and one more when centered, Adam one more with amsgrad.
SLOTS = {"Adam": 2, "AdamW": 2, "Adamax": 2, "Nadam": 2, "Adadelta": 2, "Ftrl": 2, "Lamb": 2, "Lion": 1,
         "Adagrad": 1, "RMSprop": 1, "Adafactor": 1, "SGD": 0}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Estimate:
    planned: Planned
    weights: int  # bytes, float32
    gradients: int
    slots: int
    casts: int  # bfloat16 copies of the dense weights (mixed_bfloat16)
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.slots + self.casts + self.activations

    def parts(self) -> str:
        named = (("weights", self.weights), ("gradients", self.gradients), ("optimizer state", self.slots),
                 ("bfloat16 copies", self.casts), ("activations", self.activations))
        return ", ".join(f"{name} {size_text(size)}" for name, size in named if size)


def optimizer_slots(optimizer_cfg: DictConfig) -> int:
    name = str(optimizer_cfg.get("_target_", "")).rpartition(".")[2]
    slots = SLOTS.get(name, 0)
    if name == "SGD" and float(optimizer_cfg.get("momentum", 0) or 0) > 0:
        slots += 1
    if name == "RMSprop":
        slots += (float(optimizer_cfg.get("momentum", 0) or 0) > 0) + bool(optimizer_cfg.get("centered", False))
    if name in ("Adam", "AdamW") and optimizer_cfg.get("amsgrad", False):
        slots += 1
    return slots


def estimate(cfg: DictConfig, vocab_size: int, policy: str) -> Estimate | None:
    """What training the network of `cfg.model` adds to the process, in bytes; None for a model
    that is no network (the n-gram) or a family that does not plan its memory."""
    target = get_object(cfg.model._target_)
    node = OmegaConf.to_container(cfg.model, resolve=True)  # less keys for Hydra or lmbench: _target_, _recipe_
    options = {k: v for k, v in node.items() if not (k.startswith("_") and k.endswith("_"))}
    if isinstance(target, type) and issubclass(target, NeuralLM):
        cls, options = target, target.options_of(vocab_size, options)
    elif callable(getattr(target, "planned_model", None)):  # a factory of a network (model=pretrained)
        cls, options = target.planned_model(vocab_size, options)
    else:
        return None
    bf16 = policy == "mixed_bfloat16"
    try:
        planned = cls.planned(options, int(cfg.trainer.batch_size), int(cfg.trainer.bptt),
                              compute_bytes=2 if bf16 else 4)
    except NotImplementedError:
        return None
    tokens_read = int(cfg.trainer.batch_size) * int(cfg.trainer.bptt)
    embedding_grad = min(planned.embedding, tokens_read * max(1, planned.embedding // vocab_size))
    return Estimate(
        planned, weights=4 * planned.params, gradients=4 * (planned.dense + embedding_grad),
        slots=4 * optimizer_slots(cfg.optimizer) * planned.params, casts=2 * planned.dense if bf16 else 0,
        activations=(2 if bf16 else 4) * planned.activations,
    )


def available_gpu() -> tuple[str, int] | None:
    """(the device, its memory not used by this process's TensorFlow), for the first GPU; None
    without a GPU or where the figure cannot be had."""
    if not tf.config.list_logical_devices("GPU") or shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
        name, total = out[0].rsplit(",", 1)
        used = tf.config.experimental.get_memory_info("GPU:0")["current"]
        return f"GPU 0 ({name.strip()})", int(float(total)) * 2**20 - int(used)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, RuntimeError, KeyError):
        return None


def check_fits(cfg: DictConfig, vocab_size: int, policy: str) -> Estimate | None:
    """Refuse (ConfigError), before the model is built, a network whose training cannot fit in the
    memory of the machine (or of its GPU); the estimate otherwise."""
    found = estimate(cfg, vocab_size, policy)
    if found is None:
        return None
    gpu = available_gpu()
    where, free = gpu if gpu is not None else ("this machine", available_host())
    needs = (f"at least {size_text(found.total)} ({found.parts()}; {found.planned.params:,} parameters, "
             f"batch {cfg.trainer.batch_size} x bptt {cfg.trainer.bptt}, {policy})")
    if free is not None and found.total > free:
        bf16 = "" if policy == "mixed_bfloat16" else ", trainer.precision=mixed_bfloat16"
        raise ConfigError(
            f"the model cannot fit: training it needs {needs}, and {where} has {size_text(free)} available. "
            "Make the model smaller (model.hidden_size, embedding_dim, num_layers, d_model, d_ff; for a large "
            f"vocabulary model/head=adaptive), or train with a smaller trainer.batch_size or bptt{bf16}, or on a "
            "machine with more memory"
        )
    held = _resident()
    log.info("memory: training needs %s by the estimate; %s has %s available%s", needs, where,
             "?" if free is None else size_text(free),
             "" if held is None else f", the process holds {size_text(held)}")
    return found


def _resident() -> int | None:
    """This process's resident memory now, in bytes (/proc/self/statm)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# What a failed allocation raises: Python's own, and TensorFlow's on the CPU and on a GPU.
ALLOCATION_ERRORS = (MemoryError, tf.errors.ResourceExhaustedError)


def allocation_failures():
    """Inside this block, a failed allocation (Python's or TensorFlow's) is raised as ConfigError,
    in one paragraph."""
    return machine.allocation_failures(ALLOCATION_ERRORS)
