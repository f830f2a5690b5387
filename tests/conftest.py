"""Shared fixtures: the real Hydra config, and a download/token-id cache that stays in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lmbench.config import register_configs
from lmbench.paths import CONF_DIR


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


# PostgreSQL and `mlflow server`, started once per session by the tests that ask for them.
from services import postgres, tracking_server  # noqa: E402, F401
