"""Sweeps: one MLflow parent run per Hydra multirun, every job a child run nested under it.

`SweepCallback` (registered under `hydra.callbacks` in conf/config.yaml) runs in the launching
process. Before any job starts it creates the store's schema, the experiment and the parent run --
so that parallel jobs never race on a fresh store (ECOSYSTEM.md) -- and hands each job the parent's
id, the resolved tracking URI and the data folder as Hydra overrides of `hydra.job.env_set`
(`job_env`): the launcher composes every job's config from those overrides and Hydra sets the
variables around the job wherever it runs -- in this process, in joblib's reused worker processes,
in a submitit or Ray worker on another machine that shares no folder and inherits no environment.
The parent's id is also written into the sweep folder, for a sweep launched again there to continue
(below). After the last job the callback writes the comparison report, logs it to
the parent run, prints the table and the command that opens the MLflow UI, and ends the parent.
A sweep that dies (a job raised, Ctrl-C) ends its parent FAILED when the process exits.
Launched again into the same sweep folder (`hydra.sweep.dir`, as the presets do), the sweep
continues: the parent run named in the folder is set RUNNING again rather than a second parent
created, each job resumes its own run from its checkpoint (training/run.py), and the report
counts each job once, by its newest run.

This module is the Hydra-facing glue: it knows the store only through lmbench.tracking.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

from lmbench import names, tracking
from lmbench.cli.report import report_hint, write_report
from lmbench.cli.search import check_search, is_search
from lmbench.errors import ConfigError, DataError, LmbenchError, exit_with
from lmbench.paths import DATA_DIR_ENV

SWEEP_FILE = "lmbench_sweep.json"  # in hydra.sweep.dir: the parent run a continued sweep reuses
PARENT_RUN_ENV = "LMBENCH_SWEEP_PARENT_RUN"  # a job's parent run, set by Hydra around the job
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"  # read by MLflow and by tracking.resolve_uri
TAGGED_CHOICES = ("model", "experiment", "hparams_search")  # Hydra group choices recorded as tags


@dataclass(frozen=True)
class Sweep:
    parent_run_id: str
    uri: str
    experiment: str
    folder: str

    @classmethod
    def read(cls, folder: Path) -> Sweep | None:
        path = Path(folder) / SWEEP_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None

    def write(self) -> None:
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        (Path(self.folder) / SWEEP_FILE).write_text(json.dumps(self.__dict__, indent=2))


def job_tags(hydra_cfg: DictConfig) -> tuple[str | None, dict[str, str]]:
    """(parent run id or None, tags) for the job Hydra is running, from its HydraConfig.

    Every run is tagged with the config-group choices (`lmbench.model=lstm_small`), which the run's
    flattened parameters do not name. A job of a multirun is also tagged with the sweep's id (its
    parent run's id), its number and its own overrides -- the command line that repeats it alone.
    """
    choices = hydra_cfg.runtime.choices
    tags = {names.choice_tag(group): str(choices[group]) for group in TAGGED_CHOICES if choices.get(group)}
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, tags
    parent = hydra_cfg.job.env_set.get(PARENT_RUN_ENV)
    if not parent:  # tracking disabled for the sweep: no parent run
        return None, tags
    tags.update({
        names.SWEEP_ID: parent,
        names.JOB_NUM: str(hydra_cfg.job.num),
        names.OVERRIDES: " ".join(hydra_cfg.overrides.task),
    })
    return parent, tags


def job_env(parent_run_id: str, uri: str) -> dict[str, str]:
    """What every job of the sweep must see, wherever it runs: the parent run, the store the
    parent is in (a sqlite default is the launch folder's file, not the worker's), the data folder."""
    env = {PARENT_RUN_ENV: parent_run_id, TRACKING_URI_ENV: uri}
    if os.environ.get(DATA_DIR_ENV):
        env[DATA_DIR_ENV] = str(Path(os.environ[DATA_DIR_ENV]).resolve())
    return env


def pass_to_jobs(config: DictConfig, env: dict[str, str]) -> None:
    """Add `env` to every job's `hydra.job.env_set` through the sweep's Hydra overrides, from which
    the launcher composes each job's config (Hydra's `load_sweep_config`)."""
    def quoted(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    with read_write(config.hydra.overrides.hydra):
        for key, value in env.items():
            config.hydra.overrides.hydra.append(f"++hydra.job.env_set.{key}={quoted(value)}")


def check_launcher_store(config: DictConfig, uri: str) -> None:
    """Refuse a store on this machine's disk (sqlite, a folder) for a launcher whose jobs run on
    other machines, as its preset declares (`sweep.jobs_run_on`: conf/launcher/submitit_slurm.yaml,
    ray.yaml with a cluster's address): each job would write its own store there, or fail, and the
    sweep's parent run (created here) would see none of them."""
    where = config.sweep.get("jobs_run_on")
    local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
    if where and local:
        raise ConfigError(
            f"the tracking store {uri} is a file on this machine, but the launcher runs jobs on other machines "
            f"({where}), which cannot write to it (and sqlite must not be shared over a network "
            "filesystem). Start an MLflow tracking server and set MLFLOW_TRACKING_URI=http://<host>:<port> "
            "(docs/machines.md)"
        )


def check_folder(key: str, folder: str) -> None:
    """Hydra creates the run (or sweep) folder and fails with a traceback if it cannot; this says it
    in one paragraph first."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        exit_with("lmbench", DataError(
            f"{key}={folder} cannot be created ({ex.strerror}: {ex.filename}); name a folder that can be"
        ))
    if not os.access(path, os.W_OK):
        exit_with("lmbench", DataError(f"{key}={folder} is not writable; name a folder that is"))


class SweepCallback(Callback):
    """A sweep's parent run and report (above); and, for a single run too, a run folder that
    cannot be created is one paragraph, not Hydra's traceback."""

    def __init__(self) -> None:
        self._sweep: Sweep | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_folder("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_folder("hydra.sweep.dir", config.hydra.sweep.dir)
        if not config.tracking.enabled:
            return
        # The jobs resolve the store the same way (training/run.py): the launch folder is the cwd.
        try:
            uri = tracking.resolve_uri(config.tracking.uri, Path.cwd())
            check_launcher_store(config, uri)
            tracking.check_store(uri)
            if is_search(config):  # a bad search is one paragraph before any parent run or trial
                check_search(config)
        except LmbenchError as ex:  # Hydra would turn an exception here into a warning and go on
            exit_with("lmbench", ex)
        choices = config.hydra.runtime.choices
        label = choices.get("experiment") or choices.get("hparams_search") or "sweep"
        overrides = " ".join(config.hydra.overrides.task)
        tags = {
            names.ROLE: "sweep",  # reports leave parent runs out of their tables
            names.SWEEP_DIR: str(Path(config.hydra.sweep.dir).resolve()),
            names.OVERRIDES: overrides,
            names.COMMAND: " ".join(["lmbench", *sys.argv[1:]]),
        }
        previous = Sweep.read(Path(config.hydra.sweep.dir))
        if (
            previous is not None and previous.uri == uri and previous.experiment == config.tracking.experiment
            and tracking.reopen_run(uri, previous.parent_run_id, previous.experiment)
        ):
            parent, verb = previous.parent_run_id, "continuing"
        else:
            parent, verb = tracking.start_parent_run(uri, config.tracking.experiment, label, tags), "created"
        self._sweep = Sweep(parent, uri, config.tracking.experiment, tags[names.SWEEP_DIR])
        self._sweep.write()
        pass_to_jobs(config, job_env(parent, uri))
        atexit.register(self._abandon)
        print(f"Sweep: MLflow parent run {parent} {verb} in {uri} (experiment '{self._sweep.experiment}')", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = self._sweep
        if sweep is None:
            return
        atexit.unregister(self._abandon)
        self._sweep = None
        folder = Path(sweep.folder)
        try:
            if is_search(config):
                from lmbench.cli.search import report_search

                report_search(config, sweep.uri, sweep.parent_run_id, folder / "search")
            if config.sweep.interpolate:
                # The training layer (and TensorFlow) loads only here, not with every lmbench.
                from lmbench.cli.sweep_mixture import interpolate_sweep

                interpolate_sweep(config, sweep.uri, sweep.parent_run_id, folder)
            table = write_report(sweep.uri, folder / "report", parent_run_id=sweep.parent_run_id)
            print(f"\n{table}\nReport (report.html, Markdown, CSV, plots): {folder / 'report'}", flush=True)
        finally:  # every job has finished, whether or not the report could be written
            tracking.end_run(sweep.uri, sweep.parent_run_id, "FINISHED")
        hint = report_hint(sweep.uri, sweep.parent_run_id)  # report.html in the parent's artifact view
        print(f"Sweep {sweep.parent_run_id} done. Its comparison (table and plots) in the MLflow UI:\n  {hint}",
              flush=True)

    def _abandon(self) -> None:
        """At exit of a sweep that did not reach on_multirun_end: end the parent run FAILED."""
        if self._sweep is not None:
            tracking.end_run(
                self._sweep.uri, self._sweep.parent_run_id, "FAILED",
                {names.ERROR: "the sweep stopped before all its jobs finished"},
            )
