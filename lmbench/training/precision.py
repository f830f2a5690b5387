"""`trainer.precision`: which Keras dtype policy a network trains under.

`auto` (the default) trains under `mixed_bfloat16` where the hardware computes bfloat16 natively --
an x86 CPU with AVX512_BF16 or AMX-BF16, or GPUs of compute capability 8.0 and up -- and in
`float32` elsewhere (emulated bfloat16 is slower than float32). Evaluation is float32 either way
(`NetworkTrainer._evaluate`, through `NeuralLM.computing_in_float32`). bfloat16 is the default because
one-epoch perplexities stay within the float32 seed spread while steps are faster; the
measurements are in experiments/README.md, the benchmark is `benchmarks/train_throughput.py
--mixed-bf16`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import tensorflow as tf

from lmbench import names
from lmbench.config.checks import check_precision

CPU_BF16_FLAGS = re.compile(r"\b(avx512_bf16|amx_bf16)\b")


def native_bfloat16() -> bool:
    """Whether the devices TensorFlow will train on compute bfloat16 natively."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = [tf.config.experimental.get_device_details(g) for g in gpus]
        return all(tuple(d.get("compute_capability", (0, 0))) >= (8, 0) for d in details)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: no cheap way to know, so the safe choice
        return False
    return bool(CPU_BF16_FLAGS.search(cpuinfo))


def device_tags() -> dict[str, str]:
    """The devices this process trains on, for the run's tags: how many GPUs TensorFlow sees and,
    when set, CUDA_VISIBLE_DEVICES -- which GPU(s) of the machine a launcher gave the job."""
    tags = {names.GPUS: str(len(tf.config.list_physical_devices("GPU")))}
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        tags[names.CUDA_VISIBLE_DEVICES] = os.environ["CUDA_VISIBLE_DEVICES"]
    return tags


def resolve(precision: str) -> str:
    """The Keras policy name for `trainer.precision`."""
    check_precision(precision)
    if precision == "auto":
        return "mixed_bfloat16" if native_bfloat16() else "float32"
    return precision
