"""The launcher presets in conf/launcher/: each selects its Hydra launcher from the command line
(`lmbench -m launcher=joblib ...`), which a group file's defaults list can do for a group chosen
there (not inside an experiment preset: Hydra issue 2946), and the joblib one really runs jobs
side by side."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import TINY_LSTM, compose_hydra, lmbench, sweep_runs
from omegaconf import OmegaConf

from lmbench.cli.sweep import check_launcher_store
from lmbench.errors import ConfigError

LAUNCHERS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    "ray": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
}
PLUGIN = {"joblib": "hydra_plugins.hydra_joblib_launcher", "submitit_local": "hydra_plugins.hydra_submitit_launcher",
          "submitit_slurm": "hydra_plugins.hydra_submitit_launcher", "ray": "hydra_plugins.hydra_ray_launcher"}


def test_no_launcher_preset_by_default():
    cfg = compose_hydra()
    assert cfg.hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@pytest.mark.parametrize("preset", sorted(LAUNCHERS))
def test_each_preset_selects_its_launcher(preset):
    if importlib.util.find_spec(PLUGIN[preset]) is None:
        pytest.skip(f"{PLUGIN[preset]} is not installed (pip install -e '.[{preset.split('_')[0]}]')")
    cfg = compose_hydra(f"launcher={preset}")
    assert cfg.hydra.launcher._target_ == LAUNCHERS[preset]
    assert cfg.hydra.runtime.choices["hydra/launcher"] == preset
    OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # every interpolation resolves


def test_slurm_settings_come_from_the_environment(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    defaults = compose_hydra("launcher=submitit_slurm").hydra.launcher
    assert (defaults.partition, defaults.timeout_min, defaults.cpus_per_task, defaults.mem_gb,
            defaults.gpus_per_node) == (None, 120, 4, 16, 1)
    for var, value in {"PARTITION": "gpu", "ACCOUNT": "lm", "TIME_MIN": "240", "CPUS": "8", "MEM_GB": "32",
                       "GPUS": "2"}.items():
        monkeypatch.setenv(f"LMBENCH_SLURM_{var}", value)
    composed = compose_hydra("launcher=submitit_slurm", "hydra.launcher.cpus_per_task=6")
    launcher = composed.hydra.launcher
    assert (launcher.partition, launcher.account, launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb,
            launcher.gpus_per_node) == ("gpu", "lm", 240, 6, 32, 2)  # the command line wins over the environment
    with pytest.raises(ConfigError, match="tracking server"):  # a file store is refused for SLURM
        check_launcher_store(composed, "sqlite:///mlflow.db")


def test_ray_preset_joins_the_cluster_named_by_ray_address(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    composed = compose_hydra("launcher=ray")
    launcher = composed.hydra.launcher
    assert launcher.ray.init.address == "127.0.0.1:6379" and launcher.ray.init.object_store_memory is None
    assert composed.sweep.jobs_run_on == "127.0.0.1:6379"
    with pytest.raises(ConfigError, match="tracking server"):
        check_launcher_store(composed, "sqlite:///mlflow.db")


def test_joblib_preset_runs_two_jobs_at_once(tmp_path):
    # Tiny LSTMs of a few seconds each: long enough that two started together overlap by seconds,
    # whatever the load (two n-gram jobs overlapped by 0.9 s; one worker at a time left a 0.24 s gap).
    proc = lmbench(tmp_path, "launcher=joblib", "model=lstm", *TINY_LSTM, "trainer.max_steps=30", "seed=1,2",
                   "tracking.experiment=par")
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr  # the launcher's own log line
    _, parent, children = sweep_runs(tmp_path, "par")
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    first, second = sorted(children, key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time - 1000  # side by side (ms), not one after the other


def test_a_run_records_the_gpus_it_was_given(monkeypatch):
    from lmbench.training.precision import device_tags

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device_tags() == {"lmbench.gpus": "0"}  # this machine has none; no launcher set any
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # what Ray or SLURM set for a job given GPU 3
    assert device_tags() == {"lmbench.gpus": "0", "lmbench.cuda_visible_devices": "3"}
