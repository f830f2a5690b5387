"""Every worker of a multi-worker run knows its MLflow run: only the chief (worker 0) logs, so the
chief hands its run id to the others with one collective (an all-gather of its bytes, the other
workers contributing zeros), right after it has started or reopened the run. Each other worker
prints the run in its own log line and writes it to its own folder (`<run folder>/workers/<i>/
mlflow_run.json`), so that a user reading a worker's log or folder finds the run. A collective,
not a file in the run folder: workers need not share a filesystem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from lmbench.training.distributed import START_TIMEOUT_S, Replicas, WorkerLost, lost_worker_message

RUN_FILE = "mlflow_run.json"
ID_BYTES = 64  # MLflow run ids are 32 hex digits; room for a store that makes longer ones


def share_run(replicas: Replicas | None, run_id: str | None) -> str | None:
    """The chief's run id, on every worker (None: the run is not tracked); `run_id` is this
    process's own (the chief's; None elsewhere). One process: `run_id` as it is."""
    if replicas is None or replicas.workers == 1:
        return run_id
    own = (run_id or "").encode("ascii")[:ID_BYTES] if replicas.is_chief else b""
    value = tf.constant(np.frombuffer(own.ljust(ID_BYTES, b"\0"), np.uint8).astype(np.int32)[None])
    # the chief may take a while to reach its store (it retries): the start's patience
    patient = tf.distribute.experimental.CommunicationOptions(timeout_seconds=START_TIMEOUT_S)
    strategy = replicas.strategy
    try:
        gathered = strategy.run(lambda: tf.distribute.get_replica_context().all_gather(value, axis=0, options=patient))
        first = strategy.experimental_local_results(gathered)[0].numpy()[0]  # replica 0: the chief's
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError) as ex:
        raise WorkerLost(lost_worker_message(replicas, ex)) from None
    return bytes(first.astype(np.uint8)).rstrip(b"\0").decode("ascii") or None


def record_run(replicas: Replicas | None, run_id: str | None, folder: Path, uri: str, experiment: str) -> None:
    """A worker other than the chief: one log line naming the chief's run, and the same in
    `folder` (the worker's own) as RUN_FILE."""
    if replicas is None or replicas.is_chief or run_id is None:
        return
    print(f"MLflow run {run_id} in {uri} (experiment '{experiment}'), logged by the chief (worker 0); this is "
          f"worker {replicas.worker} of {replicas.workers}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"run_id": run_id, "tracking_uri": uri, "experiment": experiment, "worker": replicas.worker}
    (folder / RUN_FILE).write_text(json.dumps(record, indent=1) + "\n")
