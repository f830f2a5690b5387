"""The peak FLOP/s that MFU (model FLOPs utilization) divides by: the dense GEMM rate this machine
reaches with TensorFlow, measured once per machine and precision and cached.

MFU = (FLOPs per token x tokens) / seconds / peak, with the FLOPs per token the model's own count
(`NeuralLM.flops_per_token`). A vendor's datasheet peak is not known for a CPU in a VM and is rarely
reached by any real GEMM; the figure here is what TensorFlow's own matmul achieves on large square
matrices in the run's precision, so MFU says how much of the achievable rate a step uses, and 1.0
means a step as efficient as one large GEMM. A figure given in the config (`trainer.peak_flops`, e.g. a
datasheet's) wins over the measurement: `resolve_peak`.

The measurement: square GEMMs of a few sizes (`CPU_SIZES`, `GPU_SIZES`) in float32, or bfloat16 for
`mixed_bfloat16`; per size `WARMUP` untimed calls, then the fastest of `REPEATS` timed ones, each
call a chain of GEMMs long enough to hide the launch cost (`MIN_CALL_SECONDS`); the peak is the best
size's rate (the fastest call: load from other work only slows a call down). A size is not tried
once a smaller one took `MAX_GEMM_SECONDS` per GEMM (an emulated bfloat16). Under a second or two on
a 2-core CPU. On a GPU, float32 GEMMs run as TF32 where TensorFlow enables it (Ampere and later, its
default), as the training's do.

The cache: one JSON file, `<cache dir>/peak_flops.json`, one entry per machine key (`machine_key`:
CPU model, logical and usable CPUs, TensorFlow's thread settings, TensorFlow's version, the device,
the precision). Delete the file (or its entry) to measure again, e.g. after measuring on a busy
machine: the rate measured is the rate the machine gave at that moment.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import tensorflow as tf

from lmbench.errors import ConfigError
from lmbench.training.machine import cpu_model
from lmbench.training.precision import resolve

CACHE_FILE = "peak_flops.json"
CPU_SIZES = (1024, 2048)
GPU_SIZES = (2048, 4096, 8192)
WARMUP, REPEATS = 2, 5
MIN_CALL_SECONDS = 0.02
MAX_GEMM_SECONDS = 1.0
DTYPES = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16}
SHORT_NAMES = {"float32": "fp32", "mixed_bfloat16": "bf16"}


def device_name() -> str:
    """What the GEMMs run on: the first GPU TensorFlow sees (its name), else "CPU"."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)


def machine_key(policy: str) -> dict[str, str]:
    """What the peak depends on; a change of any of these measures again."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threading = tf.config.threading
    threads = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    return {
        "cpu": cpu_model(),
        "cpus": f"{os.cpu_count()} logical, {usable} usable",
        "tf_threads": "intra {}, inter {}".format(*(n or "default" for n in threads)),
        "tensorflow": tf.__version__,
        "device": device_name(),
        "precision": policy,
    }


def _gemm_seconds(n: int, dtype: tf.DType, chain: int, calls: int) -> list[float]:
    """Seconds of each of `calls` calls, each computing `chain` n x n GEMMs one after the other."""
    a = tf.cast(tf.random.stateless_normal([n, n], seed=[1, 2]), dtype)
    # Scaled by 1/sqrt(n), so that a chain of products keeps the values' size (no overflow to inf).
    b = tf.cast(tf.random.stateless_normal([n, n], seed=[3, 4]) / math.sqrt(n), dtype)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        _chained_gemms(a, b, tf.constant(chain))[0, 0].numpy()  # .numpy(): waits for a GPU
        times.append(time.perf_counter() - start)
    return times


@tf.function
def _chained_gemms(x, b, chain):
    # A graph loop: identical GEMMs side by side would be merged by Grappler's common subexpressions.
    return tf.while_loop(lambda i, x: i < chain, lambda i, x: (i + 1, tf.matmul(x, b)), (0, x))[1]


def measure(policy: str, sizes: tuple[int, ...]) -> tuple[float, str]:
    """(FLOP/s, how) of the best of `sizes`: the fastest of `REPEATS` timed calls after `WARMUP`."""
    dtype = DTYPES[policy]
    best, how = 0.0, ""
    for n in sorted(sizes):
        first = _gemm_seconds(n, dtype, 1, WARMUP)[-1]  # the first call also traces and plans
        chain = max(1, min(1000, math.ceil(MIN_CALL_SECONDS / max(first, 1e-9))))
        # The fastest call, not the median: other work on the machine only ever slows a call down,
        # and a peak measured low would make every MFU read high.
        rate = 2.0 * n**3 * chain / min(_gemm_seconds(n, dtype, chain, REPEATS))
        if rate > best:
            chained = f" x {chain} chained" if chain > 1 else ""
            best = rate
            how = f"{n}² GEMM {SHORT_NAMES[policy]} on {device_name()}, fastest of {REPEATS}{chained}"
        if first > MAX_GEMM_SECONDS:
            break
    return best, how


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measured again and rewritten
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    """Whole or not at all: a concurrent run reads the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def peak_flops(policy: str, cache_dir: Path, *, sizes: tuple[int, ...] | None = None) -> tuple[float, str]:
    """(FLOP/s, how it was found) for `policy` (a `trainer.precision` value) on this machine: read
    from `<cache_dir>/peak_flops.json`, or measured (`measure`) and written there."""
    policy = resolve(policy)
    path = Path(cache_dir) / CACHE_FILE
    machine = machine_key(policy)
    key = " | ".join(f"{k}={v}" for k, v in machine.items())
    entry = _read(path).get(key)
    if isinstance(entry, dict) and entry.get("flops_per_second", 0) > 0:
        return float(entry["flops_per_second"]), f"measured: {entry['method']} ({entry['measured_at']}), cached {path}"
    if sizes is None:
        sizes = CPU_SIZES if machine["device"] == "CPU" else GPU_SIZES
    rate, how = measure(policy, tuple(sizes))
    if not (rate > 0 and math.isfinite(rate)):
        raise RuntimeError(f"the GEMM probe measured {rate} FLOP/s ({how})")
    data = _read(path)  # again: another run may have written since
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data[key] = {"flops_per_second": rate, "method": how, "measured_at": when, "machine": machine}
    _write(path, data)
    return rate, f"measured: {how}, cached {path}"


ENV = "LMBENCH_PEAK_FLOPS"


def resolve_peak(configured: float | None, policy: str, cache_dir: Path) -> tuple[float, str]:
    """(FLOP/s, how): `trainer.peak_flops` when set, else `$LMBENCH_PEAK_FLOPS` when set (a figure
    per node type that a cluster's environment gives every job), else this machine's measured peak."""
    if configured is not None:
        return _positive(configured, "trainer.peak_flops"), "configured: trainer.peak_flops"
    if os.environ.get(ENV, "").strip():
        return _positive(os.environ[ENV].strip(), f"${ENV}"), f"configured: ${ENV}"
    return peak_flops(policy, cache_dir)


def _positive(value, where: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(f"{where} must be a positive number of FLOP/s (e.g. 2.5e11), got {value!r}")
    return number


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOPs utilization: the FLOP/s achieved (`flops` in `seconds`) as a fraction of `peak`."""
    if not (seconds > 0 and peak > 0):
        raise ValueError(f"mfu needs seconds > 0 and peak > 0, got {seconds} and {peak}")
    return flops / seconds / peak
