"""The presets in conf/experiment/ and searches in conf/hparams_search/ compose into valid jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import compose_hydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from lmbench.cli.search import SWEEPER, check_search
from lmbench.config import check_target
from lmbench.paths import CONF_DIR
from lmbench.search.settings import PRUNERS, read_settings
from lmbench.training.run import MODEL_SUPPLIED

PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def jobs_of(cfg) -> list[list[str]]:
    """The override lists of a preset's sweep (the basic sweeper's cartesian product)."""
    jobs = [[]]
    for key, values in cfg.hydra.sweeper.params.items():
        jobs = [job + [f"{key}={v}"] for job in jobs for v in str(values).split(",")]
    return jobs


def test_a_single_run_preset_builds_its_one_job():
    cfg = compose_hydra("experiment=awd_lstm_ptb")
    assert cfg.hydra.mode is None and cfg.tracking.experiment == "awd_lstm_ptb"
    check_target(cfg.model, "model", supplied=MODEL_SUPPLIED)
    check_target(cfg.optimizer, "optimizer", supplied=("global_clipnorm",))
    assert (cfg.model.hidden_size, cfg.model.last_layer_size, cfg.model.weight_drop) == (1150, 400, 0.5)
    assert (cfg.optimizer.learning_rate, cfg.trainer.bptt, cfg.trainer.clip_norm) == (30.0, 70, 0.25)
    assert cfg.trainer.nt_asgd and cfg.trainer.variable_bptt and cfg.trainer.lr_schedule == "constant"


def test_no_preset_by_default():
    cfg = compose_hydra()
    assert cfg.hydra.runtime.choices.get("experiment") is None
    assert cfg.hydra.runtime.choices.model == "lstm" and cfg.dataset.name == "ptb"
    assert cfg.hydra.mode is None  # `lmbench` alone is one run, not a sweep


SINGLE_RUNS = {"awd_lstm_ptb"}  # presets of one model's published recipe: one run, not a comparison


def test_every_preset_is_a_sweep_of_buildable_jobs():
    assert {"quick", "ptb_classic", "wikitext2", "shakespeare_char"} <= set(PRESETS)
    for preset in sorted(set(PRESETS) - SINGLE_RUNS):
        master = compose_hydra(f"experiment={preset}")
        assert master.hydra.mode == RunMode.MULTIRUN, preset
        assert master.tracking.experiment == preset
        jobs = jobs_of(master)
        families = set()
        for job in jobs:
            cfg = compose_hydra(f"experiment={preset}", *job)
            check_target(cfg.tokenizer, "tokenizer")
            check_target(cfg.model, "model", supplied=MODEL_SUPPLIED)
            check_target(cfg.optimizer, "optimizer", supplied=("global_clipnorm",))
            families.add(cfg.model._target_.rsplit(".", 1)[-1])
            if "Transformer" in cfg.model._target_:  # SGD at lr 20 is a recurrent recipe only
                assert cfg.optimizer._target_ == "keras.optimizers.Adam", (preset, job)
        assert families == {"NGramLM", "RecurrentLM", "TransformerLM"}, preset
    assert len(jobs_of(compose_hydra("experiment=shakespeare_char"))) == 6


def test_ptb_classic_uses_the_classic_models_and_budget():
    cfg = compose_hydra("experiment=ptb_classic", "+experiment/family=lstm")
    assert cfg.hydra.runtime.choices.model == "lstm_small"
    assert cfg.trainer.max_epochs == 13
    assert OmegaConf.select(cfg, "optimizer.learning_rate") == 20.0


@pytest.mark.parametrize("search", sorted(p.stem for p in (Path(CONF_DIR) / "hparams_search").glob("*.yaml")))
def test_searches_use_lmbenchs_optuna_sweeper_with_a_valid_space(search):
    cfg = compose_hydra(f"hparams_search={search}")
    assert cfg.hydra.sweeper._target_ == SWEEPER
    assert cfg.hydra.sweeper.storage is None  # chosen from the tracking URI: persistent
    assert cfg.hydra.sweeper.direction == "minimize"  # the CLI returns best_valid/ppl
    assert cfg.hydra.sweeper.study_name == search  # the study, its journal and its folder are named after it
    settings = read_settings(OmegaConf.to_container(cfg.hydra.sweeper, resolve=True))  # raises on a bad spec
    assert settings.pruner["name"] in PRUNERS
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key  # searches keys that exist
    check_search(cfg)
