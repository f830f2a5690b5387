"""`sweep.interpolate=true`: after a sweep's jobs, its n-gram interpolated with its networks.

Mikolov et al.'s classic finding is that even networks that lose to KN-5 on their own improve it when
interpolated with it. This is one more child run of the sweep, `model=interpolated` over the
newest finished n-gram run and every finished network run of the sweep (weights by EM on valid),
composed from the sweep's own overrides, so that the comparison table answers "does a network add
anything to the n-gram on this text?". It runs in the launching process once every job has finished,
whichever launcher ran them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from lmbench import names, tracking
from lmbench.cli.report import newest_per_job
from lmbench.errors import LmbenchError
from lmbench.training.run import run

JOB = "interpolated"  # the job number the mixture's run is tagged with


def interpolate_sweep(config: DictConfig, uri: str, parent_run_id: str, folder: Path) -> None:
    """Run the mixture as a child of `parent_run_id`; a note instead when the sweep has no n-gram
    and network to mix or they cannot be mixed."""
    runs = newest_per_job(tracking.find_runs(uri, parent_run_id=parent_run_id))
    finished = [r for r in runs if r.status == "FINISHED" and r.tags.get(names.JOB_NUM) != JOB]
    ngrams = [r for r in finished if r.tags.get(names.FAMILY) == "ngram"]
    networks = [r for r in finished if r.tags.get(names.FAMILY) not in ("ngram", "interpolated", None)]
    if not ngrams or not networks:
        print("sweep.interpolate: the sweep has no finished n-gram and network runs to mix", flush=True)
        return
    components = [ngrams[0].run_id, *(r.run_id for r in networks)]
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    # What the jobs shared: not the swept values (model=ngram,lstm; seed=1,2), not the model's keys.
    overrides = [
        o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith(("model", "hydra"))
    ]
    mixture = ["model=interpolated", f"model.components=[{','.join(components)}]"]
    cfg = compose(config_name="config", overrides=[*overrides, *mixture])
    # Tagged like a job of the sweep: its overrides are the shared ones and its model choice (the
    # components are the tag lmbench.components), so the table's settings column compares it fairly.
    tags = {
        names.SWEEP_ID: parent_run_id,
        names.JOB_NUM: JOB,
        names.OVERRIDES: " ".join([*overrides, mixture[0]]),
        names.MODEL: "interpolated",
    }
    print(
        f"\nInterpolating the sweep's n-gram with its {len(networks)} network(s) (sweep.interpolate=true)", flush=True
    )
    tf_log = logging.getLogger("tensorflow")  # several networks scored in one process: TF would warn
    level = tf_log.level  # that their scoring steps were traced again
    tf_log.setLevel(logging.ERROR)
    try:
        run(cfg, output_dir=folder / JOB, launch_dir=Path.cwd(), parent_run_id=parent_run_id, extra_tags=tags)
    except LmbenchError as ex:  # e.g. networks of another tokenizer: the sweep itself succeeded
        print(f"sweep.interpolate: the mixture could not be built: {ex}", flush=True)
        return
    finally:
        tf_log.setLevel(level)
