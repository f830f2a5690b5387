"""lmbench built as a wheel and installed NOT editable into a fresh venv runs from an unrelated folder.

The venv sees the environment's packages after its own (as `--system-site-packages` would) so that
TensorFlow, MLflow and Hydra are not installed again; lmbench itself is built from a clean copy of
this tree (the files git would commit: no build folders, no run outputs) and installed with
`--no-deps`. The test checks that the lmbench that runs is the venv's copy, not this checkout and
not an editable install the environment may hold, and that its configs come from inside that copy
(`lmbench/conf`).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LMBENCH_DATA_DIR", "/nonexistent"))

pytestmark = pytest.mark.packaging


def clean_copy(target: Path) -> Path:
    """The tree as git would commit it (tracked and untracked files, minus ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=False,
    )
    if listed.returncode != 0:  # not a git checkout (e.g. an unpacked sdist): copy minus the usual
        shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", "outputs", "multirun", "mlruns", "mlflow.db"))
        return target
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is not copied
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def make_venv(venv: Path) -> Path:
    """A new venv that also sees this interpreter's site-packages (after its own), as
    `--system-site-packages` would for a base interpreter -- and also when this one is itself a venv."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in site.getsitepackages() if Path(p).is_dir()]
    if site.ENABLE_USER_SITE and site.getusersitepackages() in sys.path:
        outer.append(site.getusersitepackages())
    (Path(own) / "_outer_site_packages.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in outer))
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> SimpleNamespace:
    """The clean copy (`source`), the `wheel` built from it, the `venv` it is installed in, the
    `env` for commands run there, and an unrelated folder to run them from (`elsewhere`)."""
    root = tmp_path_factory.mktemp("packaging")
    source = clean_copy(root / "src")
    venv = root / "venv"
    python = make_venv(venv)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", LMBENCH_CACHE_DIR=str(root / "cache"),
               TF_CPP_MIN_LOG_LEVEL="3", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    pip = [str(python), "-m", "pip", "--no-cache-dir"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)], root, env)
    (wheel,) = (root / "dist").glob("lmbench-*.whl")
    run([*pip, "install", "--no-deps", str(wheel)], root, env)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return SimpleNamespace(source=source, wheel=wheel, venv=venv, env=env, elsewhere=elsewhere)


def test_the_wheel_carries_every_module_and_every_config(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    tree = installed.source
    modules = {p.relative_to(tree).as_posix() for p in (tree / "lmbench").rglob("*.py")}
    configs = {"lmbench/" + p.relative_to(tree).as_posix()
               for p in (tree / "conf").rglob("*") if p.suffix in (".yaml", ".py")}
    assert len(modules) > 30 and len(configs) > 30
    assert modules - names == set()
    assert configs - names == set()
    assert "lmbench/conf/config.yaml" in names and "lmbench/conf/model/lstm.yaml" in names
    assert not any(n.startswith(("conf/", "tests/", "benchmarks/")) for n in names)


def test_the_installed_copy_is_the_one_that_runs(installed):
    venv = installed.venv
    proc = run([str(venv / "bin" / "python"), "-c",
                "import lmbench, lmbench.conf; from lmbench.paths import CONF_DIR; print(lmbench.__file__); "
                "print(lmbench.conf.__file__); print(CONF_DIR); print(lmbench.__version__)"],
               installed.elsewhere, installed.env)
    package, conf, conf_dir, version = proc.stdout.split()
    inside = (venv / "lib").resolve()
    for path in (package, conf, conf_dir):
        assert Path(path).resolve().is_relative_to(inside), proc.stdout
    assert Path(conf_dir) == Path(conf).parent == Path(package).parent / "conf"
    assert version == installed.wheel.name.split("-")[1]


def test_a_users_config_folder_with_the_installed_copy(installed, tmp_path):
    lmbench, env, elsewhere = installed.venv / "bin" / "lmbench", installed.env, installed.elsewhere
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "my_lstm.yaml").write_text(
        "_target_: lmbench.models.recurrent.RecurrentLM\ncell: lstm\nembedding_dim: 24\nhidden_size: 24\n"
        "num_layers: 1\ndropout: 0.0\ntie_embeddings: true\n")
    proc = run([str(lmbench), "--config-dir", str(tmp_path), "model=my_lstm", "--cfg", "job"], elsewhere, env)
    assert "hidden_size: 24" in proc.stdout
    proc = run([str(lmbench), "--help"], elsewhere, env)
    assert proc.stdout.startswith("lmbench: ") and "schema" not in proc.stdout


needs_ptb = pytest.mark.skipif(not (DATA / "ptb" / "ptb.train.txt").is_file(),
                               reason=f"needs Penn Treebank in $LMBENCH_DATA_DIR ({DATA})")


@pytest.mark.corpus
@needs_ptb
def test_a_single_run_from_an_unrelated_folder(installed):
    elsewhere = installed.elsewhere
    proc = run([str(installed.venv / "bin" / "lmbench"), "trainer.max_steps=20", "tracking=none",
                "trainer.progress=false", "hydra.run.dir=single"], elsewhere, installed.env)
    assert "test ppl" in proc.stdout, proc.stdout
    assert (elsewhere / "single" / "lmbench.log").is_file()
    assert not (elsewhere / "mlflow.db").exists()


@pytest.mark.slow  # 6 min on 2 Zen 1 cores, a sixth of the suite; the single run above covers the wheel
@pytest.mark.corpus
@needs_ptb
def test_the_main_job_from_an_unrelated_folder(installed):
    elsewhere = installed.elsewhere
    store = elsewhere / "store" / "mlflow.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    proc = run([str(installed.venv / "bin" / "lmbench"), "experiment=quick", "trainer.max_steps=20",
                "trainer.progress=false", f"tracking.uri={uri}", "hydra.sweep.dir=quick"],
               elsewhere, installed.env, timeout=900)
    assert "Sweep" in proc.stdout and "done." in proc.stdout, proc.stdout

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("quick").experiment_id])
    assert sorted(r.data.tags.get("lmbench.family", "sweep") for r in runs) == [
        "interpolated", "lstm", "ngram", "rnn", "sweep", "transformer"]  # quick ends with KN-5 + the networks
    assert {r.info.status for r in runs} == {"FINISHED"}
