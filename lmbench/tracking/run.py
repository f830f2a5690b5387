"""One MLflow run, as the trainer sees it.

A `Tracker` owns one MLflow run. Disabled tracking (`tracking=none`) gives the same object with
every call a no-op, so the trainer never branches on it. Whatever was logged stays logged when a run
fails: `finish("FAILED", reason)` ends the run with that status and the reason as a tag.

A tracking server that goes away mid-run does not stop training: the write that found it gone, and
every write after it, are kept in memory in order (`Unlogged`) and sent again, oldest first, once
the server answers (tried at most every `retry_every_s` seconds, so training is not slowed by the
retries); `finish` gives it a last `final_wait_s`, then says what it could not log.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lmbench import names
from lmbench.errors import ConfigError
from lmbench.interrupts import held
from lmbench.paths import redact
from lmbench.tracking.uri import ui_hint, unreachable

T = TypeVar("T")
log = logging.getLogger(__name__)
MAX_UNLOGGED = 100_000  # writes kept while the store is unreachable; older ones beyond are dropped


@dataclass
class Unlogged:
    """Writes the store did not take (it could not be reached), oldest first, to be sent again."""

    writes: list[tuple[str, int, Callable[[], Any]]] = field(default_factory=list)  # (what, how many, call)
    dropped: Counter = field(default_factory=Counter)  # what -> how many, beyond MAX_UNLOGGED
    since: float | None = None  # when the store was found unreachable
    retry_at: float = 0.0

    def keep(self, what: str, count: int, call: Callable[[], Any]) -> None:
        if len(self.writes) >= MAX_UNLOGGED:
            oldest, n, _ = self.writes.pop(0)
            self.dropped[oldest] += n
        self.writes.append((what, count, call))

    def summary(self) -> str:
        counts = Counter(self.dropped)
        for what, n, _ in self.writes:
            counts[what] += n
        return ", ".join(f"{n} {what}" for what, n in counts.most_common())


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _mlflow():
    """MLflow and `store` (which imports it), imported once a run is tracked: their import costs
    1-2 s and 170 MB, which a run with tracking=none (a Tracker that is not enabled) does not pay.
    Every method that writes does so only after `start` or `resume` (`active`)."""
    import mlflow

    from lmbench.tracking import store

    return mlflow, store


def git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class Tracker:
    def __init__(
        self, enabled: bool, uri: str, experiment: str, log_every_n_steps: int = 50,
        retry_every_s: float = 30.0, final_wait_s: float = 30.0,
    ):
        self.enabled = enabled
        self.uri = uri
        self.experiment = experiment
        if int(log_every_n_steps) < 1:
            raise ConfigError(f"tracking.log_every_n_steps must be >= 1, got {log_every_n_steps}")
        self.log_every_n_steps = int(log_every_n_steps)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.last_run_id: str | None = None  # the run this tracker logged to, also after finish
        self._logged_upto: dict[str, int] = {}  # after a resume: last step already in the store
        self._client = None  # MLflow's client, set when the run starts
        self._unlogged = Unlogged()
        self.artifact_uri: str | None = None  # where the run's artifacts go, once it has started
        self.retry_every_s, self.final_wait_s = float(retry_every_s), float(final_wait_s)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(
        self, run_name_prefix: str, tags: dict[str, str], params: dict[str, Any], parent_run_id: str | None = None
    ) -> None:
        """Start a new run; with `parent_run_id` (a sweep's parent run, still running) it is nested."""
        if not self.enabled:
            return
        mlflow, store = _mlflow()
        with_retry = store.with_retry
        mlflow.set_tracking_uri(self.uri)
        self._client = store.store_client(self.uri)
        self.experiment_id = store.ensure_experiment(self.uri, self.experiment)
        with held():  # a signal is raised once the run exists with its tags and params, to be ended KILLED
            run = with_retry(mlflow.start_run, experiment_id=self.experiment_id, parent_run_id=parent_run_id)
            self.run_id = self.last_run_id = run.info.run_id
            self.artifact_uri = run.info.artifact_uri
            with_retry(mlflow.set_tags, {**tags, names.RUN_NAME: f"{run_name_prefix}-{self.run_id[:8]}"})
            # MLflow takes at most 100 params per request; log_params batches, values are strings.
            with_retry(mlflow.log_params, {k: ("null" if v is None else v) for k, v in params.items()})

    def resume(self, run_id: str, resumed_at_step: int) -> None:
        """Continue an earlier run (killed or interrupted) as the same MLflow run.

        Steps the killed process had already logged past its last checkpoint are recomputed by
        the resumed one; they are skipped, so every (metric, step) is in the store exactly once.
        """
        if not self.enabled:
            return
        mlflow, store = _mlflow()
        with_retry = store.with_retry
        mlflow.set_tracking_uri(self.uri)
        client = self._client = store.store_client(self.uri)
        with held():
            run = client.get_run(run_id)  # MlflowException if the store does not have it
            self.experiment_id = run.info.experiment_id
            self._logged_upto = {
                key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics
            }
            with_retry(mlflow.start_run, run_id=run_id)
            self.run_id = self.last_run_id = run_id
            self.artifact_uri = run.info.artifact_uri
            with_retry(mlflow.set_tag, names.RESUMED_AT_STEP, str(resumed_at_step))

    def finish(self, status: str = "FINISHED", reason: str | None = None, step: int | None = None) -> None:
        """End the run; what the store could not take by then is said in one paragraph on stderr."""
        if not self.active:
            return
        tags = {names.ERROR: reason[:5000]} if reason else {}
        if step is not None:
            tags[names.FAILED_STEP] = str(step)
        with held():  # a Ctrl-C or SIGTERM now is raised once the run has its status, not before
            if tags:
                self.set_tags(tags)
            deadline = time.monotonic() + self.final_wait_s
            while not self._flush(now=True) and time.monotonic() < deadline:
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            mlflow, _ = _mlflow()
            self._write("end of run", lambda: mlflow.end_run(status=status))
            if self._unlogged.writes or self._unlogged.dropped:
                self._report_unlogged(status)
            self.run_id = None

    def _report_unlogged(self, status: str) -> None:
        gone = time.strftime("%H:%M:%S", time.localtime(self._unlogged.since))
        print(
            f"lmbench: warning: the tracking store {redact(self.uri)} stopped answering at {gone} and did not "
            f"come back within {self.final_wait_s:.0f} s of the run's end; not logged to run {self.run_id}: "
            f"{self._unlogged.summary()}. Everything logged before stays in the store (the run shows as "
            f"RUNNING there, not {status}); the run folder keeps the model and config.yaml.",
            file=sys.stderr, flush=True,
        )

    # -- logging -------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.active:
            at = 0 if step is None else step
            now = int(time.time() * 1000)  # the time of the value, also when it is sent later
            Metric = _mlflow()[0].entities.Metric
            fresh = [Metric(k, float(v), now, at) for k, v in metrics.items() if at > self._logged_upto.get(k, -1)]
            if fresh:
                run_id = self.run_id
                self._write("metric values", lambda: self._client.log_batch(run_id, metrics=fresh), len(fresh))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.active:
            RunTag = _mlflow()[0].entities.RunTag
            run_id, batch = self.run_id, [RunTag(k, str(v)) for k, v in tags.items()]
            self._write("tags", lambda: self._client.log_batch(run_id, tags=batch), len(batch))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            path, run_id = Path(path), self.run_id
            write = self._client.log_artifacts if path.is_dir() else self._client.log_artifact
            self._write(f"artifact {path.name}", lambda: write(run_id, str(path), artifact_path=artifact_path))

    @property
    def active(self) -> bool:
        """Whether calls log anything: tracking is on and the run has started and not finished."""
        return self.enabled and self.run_id is not None

    def call(self, what: str, log_call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """`log_call(*args, **kwargs)` inside this run (MLflow's active run), as every write (kept
        while the store is unreachable); nothing when the run is not active. For what MLflow logs
        itself (a pyfunc model)."""
        if self.active:
            self._write(what, lambda: log_call(*args, **kwargs))

    def _write(self, what: str, call: Callable[[], Any], count: int = 1) -> None:
        """`call()`, retried while sqlite is locked; kept for later while the store is unreachable
        (other errors are raised). `count` items of kind `what` (for the final message)."""
        if self._unlogged.writes:  # keep the order: nothing overtakes a write still kept
            self._unlogged.keep(what, count, call)
            self._flush()
            return
        try:
            with held():  # never interrupted half-way (see lmbench/interrupts.py)
                _mlflow()[1].with_retry(call)
        except OSError as ex:  # a full or read-only artifact store
            raise self._in_store(ex) from None
        except Exception as ex:
            if not unreachable(self.uri, ex):
                raise
            self._unlogged.since = time.time()
            self._unlogged.retry_at = time.monotonic() + self.retry_every_s
            log.warning("tracking store %s unreachable; keeping writes and retrying every %.0f s",
                        redact(self.uri), self.retry_every_s)
            self._unlogged.keep(what, count, call)

    def _in_store(self, ex: OSError) -> OSError:
        """`ex` naming, as the file it could not write (`filename2`, as a copy's error does), the
        run's artifact store when it names nothing there: a copy names its source first, a plain
        write names no file at all, and the user must hear where the store is, not a temporary file."""
        store = self.artifact_uri or ""
        local = store[len("file://"):] if store.startswith("file://") else store
        if ex.filename2 is not None or (ex.filename is not None and local and str(ex.filename).startswith(local)):
            return ex
        located = OSError(ex.errno, ex.strerror, ex.filename)
        located.filename2 = local or None  # not through the constructor, which drops it without a filename
        return located

    def _flush(self, now: bool = False) -> bool:
        """Send the kept writes, oldest first, if it is time to try (or `now`); True when none is left."""
        pending = self._unlogged
        if pending.writes and not now and time.monotonic() < pending.retry_at:
            return False
        while pending.writes:
            try:
                with held():
                    _mlflow()[1].with_retry(pending.writes[0][2])
            except Exception as ex:
                if not unreachable(self.uri, ex):
                    raise
                pending.retry_at = time.monotonic() + self.retry_every_s
                return False
            pending.writes.pop(0)
        if pending.since is not None:
            log.warning("tracking store %s answers again; the kept writes are logged", redact(self.uri))
            pending.since = None
        return True

    def ui_hint(self) -> str:
        """How to open this run (started, finished or not) in the MLflow UI."""
        return ui_hint(self.uri, self.experiment_id, self.last_run_id)
