"""The `lmbench` command: Hydra composes the config, `run` does the work.

User errors (`LmbenchError`) print one paragraph and exit with status 2 -- in a sweep too, except a
diverged job, after which the sweep goes on (its report lists the run as diverged); Hydra's own
composition errors print Hydra's message and exit with status 1, but the command line is checked
first (`config.hints.command_line_problems`: unknown options and keys, wrong types), so that most
mistakes get lmbench's paragraph and status 2;
Ctrl-C prints how to continue the run (or sweep) and exits with status 130; SIGTERM (a scheduler's
preemption, `docker stop`) does the same with status 143 (lmbench/interrupts.py).

`sweep.seeds=N` is command-line sugar, rewritten before Hydra sees it into Hydra's range sweep
`seed=range(1,N+1)`: every job of the sweep once per seed 1..N, which the report then shows as one
row per job with mean ± sd (cli/groups.py). It is no config key (a preset cannot set it).
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lmbench import interrupts, names, tracking
from lmbench.cli.plugins import register_configs
from lmbench.cli.search import trial_reporter
from lmbench.cli.sweep import job_tags
from lmbench.config import check_values
from lmbench.config.hints import command_line_problems, override_key_hints
from lmbench.errors import ConfigError, LmbenchError, TrainingDiverged, exit_with
from lmbench.paths import CONF_MODULE, CONF_SEARCH_PATH
from lmbench.training.result import TrainingStopped
from lmbench.training.run import run


# The configs come from the package (`conf/` in the repository, lmbench.conf when installed);
# `--config-dir` or `hydra.searchpath=[file://...]` add a user's own folder in front of them.
@hydra.main(config_path=CONF_SEARCH_PATH, config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> float | None:
    interrupts.handle_signals()  # SIGTERM ends a run as Ctrl-C does, in every process that runs a job
    try:  # values out of range: one paragraph before TensorFlow loads (a network's run) or any data is read
        check_values(cfg)
    except LmbenchError as ex:
        exit_with("lmbench", ex)
    if cfg.tracking.enabled:  # a wrong, unreachable or refusing store: one paragraph, before TensorFlow loads
        try:
            tracking.check_store(tracking.resolve_uri(cfg.tracking.uri, Path.cwd()))  # MLflow loads here
        except LmbenchError as ex:
            exit_with("lmbench", ex)
    hydra_cfg = HydraConfig.get()
    parent_run_id, tags = job_tags(hydra_cfg)  # a job of a sweep nests under the sweep's parent run
    reporter = trial_reporter(cfg, hydra_cfg)  # a search's trial reports its validations to the study
    if reporter is not None:
        tags[names.TRIAL] = str(cfg.sweep.trial)
    try:
        with interrupts.signal_errors():  # also while the data loads, before run() has a run to end
            summary = run(
                cfg, output_dir=Path(hydra_cfg.runtime.output_dir), launch_dir=Path.cwd(),
                parent_run_id=parent_run_id, extra_tags=tags, observer=reporter,
            )
    except TrainingStopped:  # the run ended KILLED, tagged; the sweeper records the trial PRUNED
        raise reporter.pruned_error() from None
    except TrainingDiverged as ex:  # the run ended FAILED, tagged lmbench.diverged
        print(f"lmbench: error: {ex}", file=sys.stderr, flush=True)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.exit(2)
        if reporter is not None:
            raise  # a search's trial: the study records it FAIL and the search goes on
        return None  # a sweep goes on with its other jobs; its report lists this one as diverged
    except LmbenchError as ex:
        logging.getLogger("lmbench").debug("user error", exc_info=True)
        print(f"lmbench: error: {ex}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt as ex:  # the run is already marked KILLED and its checkpoint kept
        interrupts.caught()
        folder = ("hydra.sweep.dir", hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else (
            "hydra.run.dir", hydra_cfg.runtime.output_dir)
        continue_with = f"{folder[0]}={Path(folder[1]).resolve()}"
        print(f"\nlmbench: {interrupts.said(ex)}. Continue with the same command plus {continue_with}",
              file=sys.stderr, flush=True)
        sys.exit(interrupts.exit_status(ex))  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them; no traceback
    # A sweeper (e.g. Optuna) minimises the returned value.
    return summary.get(names.split_metric(names.BEST_VALID, names.PPL))


SEEDS = "sweep.seeds="


def seeds_as_sweep(args: list[str]) -> list[str]:
    """The command line with `sweep.seeds=N` written as `seed=range(1,N+1)`; ConfigError where it
    cannot be: N not a whole number >= 1, a seed given too, or no sweep (no -m, no multirun preset)."""
    given = [a for a in args if a.lstrip("+").startswith(SEEDS)]
    if not given:
        return args
    value = given[-1].lstrip("+")[len(SEEDS):]
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"sweep.seeds takes a whole number of seeds >= 1, not {value!r}")
    if any(a.lstrip("+~").startswith("seed=") for a in args):
        raise ConfigError("sweep.seeds=N sweeps seed=1..N: give either sweep.seeds or seed=..., not both")
    if not _multirun(args):
        raise ConfigError(
            f"sweep.seeds={value} runs every job of a sweep once per seed 1..{value}, and this command line is no "
            f"sweep: add -m (`lmbench -m model=lstm,transformer sweep.seeds={value}`), or use a preset that "
            f"sweeps (`lmbench experiment=quick sweep.seeds={value}`). For one run with another seed: seed=2."
        )
    return [a for a in args if a not in given] + [f"seed=range(1,{int(value) + 1})"]


def _multirun(args: list[str]) -> bool:
    """Whether Hydra would run these arguments as a sweep: -m, or a config (a preset, hydra.mode=...)
    that sets hydra.mode to MULTIRUN, found as Hydra finds it (composed in multirun mode)."""
    if "-m" in args or "--multirun" in args:
        return True
    overrides = [a for a in args if "=" in a and not a.startswith("-") and not a.lstrip("+").startswith(SEEDS)]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
            mode = GlobalHydra.instance().hydra.get_mode(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    return mode == RunMode.MULTIRUN


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # At exit Python's last garbage collection walks every object TensorFlow and Keras made: 8 s
    # after a tiny run's last line on two busy cores, 0.3 s with the heap frozen first. Nothing is
    # left to write by then (runs are ended, files closed; the atexit handlers registered earlier,
    # logging's and MLflow's, still run), and a SIGTERM's sender (docker stop: 10 s) sees us exit.
    atexit.register(gc.freeze)
    register_configs()
    try:  # Hydra reads sys.argv itself: the rewritten line is also what a sweep records as its command
        sys.argv[1:] = seeds_as_sweep(sys.argv[1:])
    except ConfigError as ex:
        exit_with("lmbench", ex)
    problems = command_line_problems(sys.argv[1:], CONF_MODULE)
    if problems:  # one paragraph each, instead of Hydra's message (search path, "use +key")
        for problem in problems:
            print(f"lmbench: error: {problem}", file=sys.stderr)
        sys.exit(2)
    try:
        _main()
    except SystemExit as ex:
        if ex.code == 1:  # Hydra refused the command line; add what its message leaves out
            for hint in override_key_hints(sys.argv[1:], CONF_MODULE):
                print(f"lmbench: {hint}", file=sys.stderr)
        raise
    except KeyboardInterrupt as ex:  # outside a job: between a sweep's jobs, in its callbacks
        interrupts.caught()
        print(f"\nlmbench: {interrupts.said(ex)}", file=sys.stderr, flush=True)
        sys.exit(interrupts.exit_status(ex))


if __name__ == "__main__":
    main()
