"""One network trained data-parallel over several devices or machines (`trainer.devices`,
`trainer.strategy`), with `tf.distribute` and lmbench's own loop (not Keras' `fit`).

    trainer.devices=1 (default)      today's code path: no strategy object at all
    trainer.devices=N | all          MirroredStrategy over N GPUs of this machine (all: every GPU);
                                     without a GPU, N logical CPU devices (below)
    trainer.strategy=multi_worker    MultiWorkerMirroredStrategy over the workers TF_CONFIG names,
                                     or SLURM's tasks (SlurmClusterResolver); each worker gives its
                                     first `devices` GPUs (all: every GPU), or its CPU

The step (`train_step`) is the single-device step of `steps.make_train_step` split by streams: the
global batch of `trainer.batch_size` streams is cut into equal consecutive slices, replica r taking
streams [r*b, (r+1)*b) of every window and carrying their states, so the token streams are exactly
those of one device. Each replica differentiates its mean loss divided by the number of replicas;
the gradients are all-reduced by a SUM (so the step's gradient is the single-device mean's), then
clipped by their global norm, identically on every replica, then applied. The stream states are
all-gathered after every step, so the loop, its checkpoints and a resume see the whole [batch, ...]
state as on one device (a resume may therefore use another number of replicas).

Keras 3's TensorFlow optimizer all-reduces by itself: `apply_gradients` called inside
`strategy.run` SUMs the gradients over the replicas (`TFOptimizer._backend_update_step` ->
`_all_reduce_sum_gradients`, checked: per-replica gradients 1 and 2 move an SGD(1.0) weight by 3).
That reduction comes after anything lmbench could do to the gradients, and the global-norm clip
needs the reduced gradients, so lmbench all-reduces itself and turns the optimizer's own reduction
off for its optimizer (`_reduce_once`); a second SUM would multiply the step by the replicas.

The embedding's gradient is sparse (`tf.IndexedSlices`: one row per position of the window). It is
all-reduced as it is: TensorFlow reduces IndexedSlices by gathering (concatenating) the replicas'
rows and indices rather than summing a dense [|V|, d] table (tensorflow issue 53160: the fallback it
warns about on NCCL), so what travels is batch x bptt x d per step, not |V| x d, and the update stays
a scatter into the table. The concatenated rows are those of one device in the same order, so the
global norm (which TensorFlow takes over the rows) is the single-device one.

Scoring is the single-device code (`NeuralLM.score`) on the first replica's copy of the weights,
which every replica holds equal: exact, and the same on every worker.

Dropout: every replica holds the same seed generator state, so Keras alone would draw the same mask
on every replica for its own streams. lmbench's masks over streams (its `Dropout` layer, locked
dropout) fold the replica's id into the seed, so every stream has its own mask, as on one device;
the masks one device shares over the whole batch (weight drop, embedding dropout: one a window) stay
shared by the replicas (models/regularization.py). A run with dropout therefore draws its masks from
one device's distribution -- the same expected loss and gradient, every stream its own mask -- but
not one device's draws: it is not that run number for number (with dropout 0 it is).

Logical CPU devices: TensorFlow sees a CPU as one device, so `trainer.devices=N` without a GPU splits
it into N logical devices (`tf.config.set_logical_device_configuration`), which must happen before
TensorFlow runs its first op; `run.prepare` calls `configure` first thing. They share the same cores:
this is for testing the distributed path, not for speed. The strategy is process-wide, as
TensorFlow's device configuration is: `active()` gives it to the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass

import tensorflow as tf
from hydra.utils import get_object

from lmbench.config.checks import check_devices
from lmbench.errors import ConfigError, LmbenchError
from lmbench.models.neural import NeuralLM
from lmbench.training.result import Idle
from lmbench.training.steps import window_losses

log = logging.getLogger(__name__)
# Collectives (all-reduce, all-gather) give up after this long: a worker that died ends the others'
# step with an error instead of a hang (tensorflow issue 35878). Steps of a healthy run are far shorter.
COLLECTIVE_TIMEOUT_S = float(os.environ.get("LMBENCH_COLLECTIVE_TIMEOUT_S", "45"))
START_TIMEOUT_S = 1800.0  # the workers' first meeting, after each has read (maybe tokenized) the corpus


class WorkerLost(LmbenchError):
    """A collective failed or timed out: another replica's process is gone or unreachable."""


@dataclass
class Replicas:
    strategy: tf.distribute.Strategy
    count: int  # replicas in sync, every worker's together
    worker: int = 0  # this process's index among the workers (0: the chief)
    workers: int = 1

    @property
    def is_chief(self) -> bool:
        return self.worker == 0

    def describe(self) -> str:
        where = f", worker {self.worker} of {self.workers}" if self.workers > 1 else ""
        kind = "MultiWorkerMirroredStrategy" if self.workers > 1 else type(self.strategy).__name__
        return f"{self.count} replicas ({kind}{where})"


_active: Replicas | None = None


def active() -> Replicas | None:
    """The replicas this process trains on, or None: one device, today's code path."""
    return _active


def is_chief() -> bool:
    return _active is None or _active.is_chief


def own_folder(output_dir):
    """The run folder for this process: the chief's is the run's; another worker keeps its own
    checkpoints (to resume from, with or without a shared filesystem) under <run folder>/workers/<i>,
    and writes no bundle and nothing to MLflow."""
    return output_dir if is_chief() else output_dir / "workers" / str(_active.worker)


def scope():
    """The strategy's scope (variables created inside are mirrored), or nothing for one device."""
    return _active.strategy.scope() if _active is not None else contextlib.nullcontext()


def configure(cfg, counting: bool = False) -> Replicas | None:
    """Set up the devices and the strategy that `cfg` (the trainer node) asks for, before any
    TensorFlow op; None for one device. Refuses, with one paragraph, what cannot be. A `counting`
    model (the n-gram, a mixture) gets no strategy (`_counting`)."""
    global _active
    check_devices(cfg)
    _active = None
    gpus = tf.config.list_physical_devices("GPU")
    if counting:
        return _counting(cfg, gpus)
    if cfg.strategy == "multi_worker":
        _check_split(cfg, None)
        replicas = _multi_worker(cfg, gpus)
    else:
        wanted = (len(gpus) or 1) if cfg.devices == "all" else cfg.devices
        if wanted == 1 and cfg.strategy == "auto":
            return None
        _check_split(cfg, wanted)
        logging.getLogger("tensorflow").setLevel(logging.WARNING)  # at INFO: a line per collective
        replicas = Replicas(tf.distribute.MirroredStrategy(_local_devices(wanted, gpus)), wanted)
    _check_split(cfg, replicas.count)
    log.info("training on %s", replicas.describe())
    _active = replicas
    return replicas


def counted(cfg) -> bool:
    """Whether the run's model (`cfg`: the whole config) is counted, not trained: the n-gram, a
    mixture. A fine-tune is a network's."""
    try:
        return not cfg.trainer.init_from and not issubclass(get_object(cfg.model._target_), NeuralLM)
    except Exception:  # an unknown target: run.prepare's check_target refuses it, in one paragraph
        return False


def _counting(cfg, gpus: list) -> None:
    """A counting model counts its training split once, on the CPU, whatever the devices: one line
    says so. multi_worker: the chief (worker 0) counts and records alone, as one process, without
    meeting the others; any other worker raises `Idle` at once (run() ends it with status 0), so
    that the same command on every machine (srun) runs the n-gram once. Locally the CPU is still
    split, quietly, so that a network job later in this process (a sweep's) finds its devices."""
    if cfg.strategy == "multi_worker":
        worker, workers = _worker_index()
        if worker:
            raise Idle(
                f"worker {worker} of {workers}: trainer.strategy=multi_worker does not apply to a counting model "
                "(the n-gram): the chief (worker 0) counts it alone, in one pass on its CPU, and records the run; "
                "this worker has nothing to do and stops."
            )
        log.info("trainer.strategy=multi_worker does not apply to counting: this chief counts and records alone, "
                 "in one pass on its CPU; the other workers stop at once")
        return None
    if cfg.devices == 1 and cfg.strategy == "auto":
        return None
    log.info("trainer.devices=%s does not apply to counting: a counting model counts on the CPU, in one pass",
             cfg.devices)
    with contextlib.suppress(ConfigError):
        _local_devices((len(gpus) or 1) if cfg.devices == "all" else cfg.devices, gpus)
    return None


def _worker_index() -> tuple[int, int]:
    """(this process's index among the workers, the workers) as TF_CONFIG or SLURM give them;
    (0, 1) when neither does."""
    if os.environ.get("TF_CONFIG"):
        spec = json.loads(os.environ["TF_CONFIG"])
        return int(spec.get("task", {}).get("index", 0)), len(spec.get("cluster", {}).get("worker", [])) or 1
    if os.environ.get("SLURM_JOB_ID"):
        return int(os.environ.get("SLURM_PROCID", "0")), int(os.environ.get("SLURM_NTASKS", "1"))
    return 0, 1


def _check_split(cfg, count: int | None) -> None:
    """What the data-parallel step cannot do; `count`: the replicas (None: not known yet)."""
    if count is not None and cfg.batch_size % count:
        raise ConfigError(
            f"trainer.batch_size={cfg.batch_size} streams cannot be split evenly over {count} replicas: "
            "each replica trains an equal share of the global batch's streams, so that the run is the "
            f"single-device run. Choose a batch size that {count} divides (e.g. "
            f"{cfg.batch_size - cfg.batch_size % count or count}), or another number of devices."
        )
    if cfg.jit_compile:
        raise ConfigError(
            "trainer.jit_compile=true is for one device: the data-parallel step (trainer.devices > 1 or "
            "trainer.strategy=mirrored|multi_worker) runs its collectives outside XLA. Set trainer.jit_compile=false."
        )
    changed = {"accumulate_steps": cfg.accumulate_steps != 1, "nt_asgd": bool(cfg.nt_asgd),
               "variable_bptt": bool(cfg.variable_bptt)}
    together = [k for k, set_ in changed.items() if set_]
    if together:
        raise ConfigError(
            f"trainer.{', trainer.'.join(together)} and several devices are not yet trained together: the "
            "data-parallel step is one window an update, without weight averaging or variable windows. "
            "Train on one device (trainer.devices=1), or leave those at their defaults "
            "(accumulate_steps=1, nt_asgd=false, variable_bptt=false)."
        )
    if cfg.strategy == "multi_worker" and cfg.max_time is not None:
        raise ConfigError(
            "trainer.max_time cannot stop a multi-worker run: each worker's clock would stop it at another "
            "step, and the others would wait for it. Use trainer.max_steps or trainer.max_tokens."
        )


def _local_devices(wanted: int, gpus: list) -> list[str]:
    """This machine's first `wanted` GPUs; without a GPU, `wanted` logical CPU devices."""
    if gpus:
        if wanted > len(gpus):
            raise ConfigError(
                f"trainer.devices={wanted}, but TensorFlow sees {len(gpus)} GPU(s) on this machine "
                "(CUDA_VISIBLE_DEVICES limits them). Use trainer.devices=all for every GPU it sees."
            )
        return [f"/gpu:{i}" for i in range(wanted)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    if wanted > 1:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * wanted)
        except RuntimeError:  # TensorFlow ran an op already: its devices are fixed
            if len(tf.config.list_logical_devices("CPU")) < wanted:
                raise ConfigError(
                    f"trainer.devices={wanted} on a machine without a GPU splits the CPU into {wanted} logical "
                    "devices, which TensorFlow allows only before its first operation, and this process "
                    "has already run one. Start the run in a new process (the lmbench command does)."
                ) from None
    return [f"/cpu:{i}" for i in range(wanted)]


def _multi_worker(cfg, gpus: list) -> Replicas:
    """MultiWorkerMirroredStrategy over TF_CONFIG's workers, or SLURM's tasks."""
    if os.environ.get("TF_CONFIG"):
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    elif os.environ.get("SLURM_JOB_ID"):
        # One task per node; its GPUs are those SLURM gave the task (no CUDA_VISIBLE_DEVICES rewrite: too late)
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
            gpus_per_node=len(gpus), gpus_per_task=len(gpus), auto_set_gpu=False
        )
    else:
        raise ConfigError(
            "trainer.strategy=multi_worker needs to know its workers: set TF_CONFIG (a JSON cluster spec and "
            "this process's task, one process per machine), or launch under SLURM with one task per node "
            "(srun). Recipes: docs/machines.md. On one machine, trainer.devices=N is enough."
        )
    if gpus and cfg.devices != "all":  # each worker gives its first `devices` GPUs
        if cfg.devices > len(gpus):
            raise ConfigError(f"trainer.devices={cfg.devices}, but this worker sees {len(gpus)} GPU(s)")
        tf.config.set_visible_devices(gpus[: cfg.devices], "GPU")
    elif not gpus and cfg.devices not in (1, "all"):
        raise ConfigError(
            f"trainer.devices={cfg.devices} with trainer.strategy=multi_worker on workers without a GPU: each "
            "worker is one replica (its CPU); leave trainer.devices at 1"
        )
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # at INFO: a line per collective
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_S)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    workers = len(resolver.cluster_spec().as_dict().get("worker", [])) or 1
    return Replicas(strategy, strategy.num_replicas_in_sync, _worker_index()[0], workers)


def _reduce_once(optimizer) -> None:
    """Turn off the all-reduce that Keras' TensorFlow optimizer does inside `apply_gradients` (see
    the module docstring): the gradients it gets are already reduced and clipped."""
    if not hasattr(optimizer, "_all_reduce_sum_gradients"):
        raise ConfigError(
            f"{type(optimizer).__name__} is not a Keras 3 TensorFlow optimizer (no _all_reduce_sum_gradients): "
            "lmbench cannot train it on several devices"
        )
    optimizer._all_reduce_sum_gradients = list  # grads_and_vars as they come


def _reducible(grad, positions: int):
    """`grad` as it is all-reduced. A sparse gradient with one row per position of the replica's
    slice (a token embedding's) stays sparse: the replicas' rows are gathered, as one device's
    would be. Any other sparse gradient (a learned position table's: one row per position of the
    window, already summed over the streams) is made dense and summed: gathered, its rows would
    be counted once per replica by everything that reads rows apart -- the global norm, and Keras'
    sparse Adam, which squares rows before adding duplicates (its second moment) -- and differ
    from one device's. Such tables are small (context x d)."""
    rows = grad.values.shape[0] if isinstance(grad, tf.IndexedSlices) else None
    if rows is not None and rows != positions:  # None: rows chosen by the data (an adaptive head's), per position
        return tf.convert_to_tensor(grad)
    return grad


def _all_gather(ctx, t):
    """`t` of every replica, concatenated; bfloat16 states travel as float32 (collectives lack
    bfloat16; the round trip is exact)."""
    if t.dtype == tf.bfloat16:
        return tf.cast(ctx.all_gather(tf.cast(t, tf.float32), axis=0), t.dtype)
    return ctx.all_gather(t, axis=0)


def train_step(replicas: Replicas, model, optimizer, l1: float = 0.0, l2: float = 0.0, clip_norm: float | None = None):
    """`steps.make_train_step`'s step, data-parallel: (x, y, states) of the whole batch in, (the
    batch's mean loss, the whole batch's states) out."""
    strategy, n = replicas.strategy, replicas.count
    variables = model.trainable_variables
    penalised = [v for v in variables if len(v.shape) >= 2] if (l1 or l2) else []
    _reduce_once(optimizer)

    def own(t, start, size):
        """Rows [start, start + size) of `t`, with a static shape."""
        begin = tf.concat([[start], tf.zeros([len(t.shape) - 1], tf.int32)], axis=0)
        return tf.slice(t, begin, [size, *t.shape[1:]])

    def replica_step(x, y, states):
        ctx = tf.distribute.get_replica_context()
        size = x.shape[0] // n
        start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * size
        x, y = own(x, start, size), own(y, start, size)
        states = tf.nest.map_structure(lambda s: own(s, start, size), states)
        with tf.GradientTape() as tape:
            loss, total, states = window_losses(model, x, y, states, penalised, l1, l2)
            share = total / n  # summed over the replicas: the single-device loss of the whole batch
        grads = [_reducible(g, size * x.shape[1]) for g in tape.gradient(share, variables)]
        present = [i for i, g in enumerate(grads) if g is not None]
        reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
        if clip_norm is not None:
            reduced, _ = tf.clip_by_global_norm(reduced, clip_norm)
        optimizer.apply_gradients(zip(reduced, [variables[i] for i in present]))
        loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss / n)
        states = tf.nest.map_structure(lambda s: _all_gather(ctx, s), states)
        return loss, states

    @tf.function
    def step(x, y, states):
        out = strategy.run(replica_step, args=(x, y, states))
        return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], out)

    def guarded(x, y, states):
        try:
            return step(x, y, states)
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                tf.errors.AbortedError) as ex:
            raise WorkerLost(lost_worker_message(replicas, ex)) from None

    return guarded


def agree_on_start(step: int) -> None:
    """Every worker must continue from the same step: each resumes from its own checkpoint, and a
    worker killed while writing one keeps the one before. No-op for one process."""
    replicas = _active
    if replicas is None or replicas.workers == 1:
        return
    strategy = replicas.strategy
    value = tf.constant([step], tf.int64)
    # also the barrier where workers wait for each other's data (a corpus one has yet to tokenize)
    patient = tf.distribute.experimental.CommunicationOptions(timeout_seconds=START_TIMEOUT_S)
    gathered = strategy.run(lambda: tf.distribute.get_replica_context().all_gather(value, axis=0, options=patient))
    steps = strategy.experimental_local_results(gathered)[0].numpy()  # every replica's step
    low, high = int(steps.min()), int(steps.max())
    if low != high:
        raise ConfigError(
            f"the workers' checkpoints are at different steps ({low} and {high}; this is worker {replicas.worker}, at "
            f"step {step}): a worker was stopped while writing its checkpoint. Copy the chief's "
            "<run folder>/checkpoints into every other worker's <run folder>/workers/<index>/checkpoints, then "
            "restart every worker with the same command."
        )


def lost_worker_message(replicas: Replicas, ex: Exception) -> str:
    lines = [line.strip() for line in str(ex).splitlines() if line.strip()]
    telling = re.compile(r"unavailable|socket|connect|peer|abort|timed? ?out|deadline", re.I)
    said = [line for line in lines if telling.search(line)]
    first = (said or lines or [type(ex).__name__])[0][:300]
    return (
        f"a training step across {replicas.describe()} failed: another worker stopped answering or is gone "
        f"(TensorFlow: {type(ex).__name__}: {first}). Every worker's run ends here; the last checkpoint is kept. "
        "Restart every worker with the same command and hydra.run.dir: training continues from that checkpoint."
    )
