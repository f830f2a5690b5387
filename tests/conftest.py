"""Shared fixtures: the real Hydra config, a download/token-id cache that stays in tmp_path, and
PostgreSQL with an `mlflow server` in front of it for the session (started by tests/helpers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hydra import compose, initialize_config_dir

from lmbench.cli.plugins import register_configs
from lmbench.paths import CONF_DIR

# train/mfu divides by a peak FLOP/s that lmbench measures once per cache dir (1-3 s of GEMMs, and
# nearly every test has a cache dir of its own): the tests take a figure from the environment, as a
# cluster's jobs may, here and in every lmbench they start. tests/test_flops.py unsets it to
# measure for real.
os.environ.setdefault("LMBENCH_PEAK_FLOPS", "1e11")

if TYPE_CHECKING:
    from helpers import MlflowServer, Postgres


@pytest.fixture
def compose_config():
    """compose_config(*overrides) -> the root config composed from conf/, as `lmbench` does."""
    register_configs()

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder, also set as $LMBENCH_CACHE_DIR so no test writes to ~/.cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("LMBENCH_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def float32_policy_between_tests():
    """Each test starts under Keras' float32 policy, as a fresh `lmbench` process does: a run under
    trainer.precision=auto or mixed_bfloat16 leaves its policy set process-wide."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


# PostgreSQL and `mlflow server`, started once per session by the tests that ask for them (helpers
# is imported in them, not here: it loads MLflow, which takes seconds).
@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    from helpers import postgres_cluster

    with postgres_cluster(("mlflow", "optuna")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tracking_server(postgres, tmp_path_factory) -> Iterator[MlflowServer]:
    """One `mlflow server` over PostgreSQL for the session; tests keep apart by experiment name."""
    from helpers import mlflow_server

    with mlflow_server(postgres.uri("mlflow"), tmp_path_factory.mktemp("server") / "artifacts") as server:
        yield server


# The longest files start first. pytest-xdist hands out whole files (`--dist loadfile`) in this
# order as workers free up, so a long file handed out last keeps one core busy while the other
# idles (the tracking files, alphabetically last, ended the 2026-12-07 run on one worker).
LONG_FILES = ("test_packaging.py", "test_distributed.py", "test_sweep.py", "test_tracking_server.py",
              "test_resume.py", "test_search.py", "test_tracking_auth.py", "test_use.py", "test_families.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
