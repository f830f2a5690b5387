"""A counting model's run loads no TensorFlow (and, untracked, no MLflow): `import tensorflow` alone
costs 4.7 s and 745 MB, the n-gram's fit and scoring on PTB 0.3 s (experiments/README.md,
"An n-gram command without TensorFlow"). `training.run.run_kind` sends a counting model on one
device to `CountingRun`, everything else to `network.NetworkRun`.

The command runs in a subprocess whose exit prints which of the heavy packages `sys.modules` holds
then; `-X importtime` would not do: a network's TensorFlow import is made with stderr closed
(training/native.py), so it would hide the very import it should show.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_cfg, write_corpus

from lmbench.models.ngram import NGramLM
from lmbench.training.counting_run import CountingRun
from lmbench.training.run import run, run_kind

HEAVY = ("tensorflow", "keras", "mlflow")
PROBE = f"""
import atexit, sys
atexit.register(lambda: print("heavy imports:", *sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r}),
                              file=sys.stderr))
sys.argv[0] = "lmbench"
from lmbench.cli.main import main
main()
"""


def ngram_command(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`lmbench model=ngram` on the tiny corpus in a subprocess: the process, and which of HEAVY it
    had imported when it exited."""
    paths = write_corpus(tmp_path)
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "model=ngram", "dataset=text_files",
         *(f"dataset.{split}={path}" for split, path in paths.items()), "trainer.progress=false", *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("heavy imports:")]
    return proc, set(line.split(":", 1)[1].split())


def test_an_untracked_ngram_command_imports_neither_tensorflow_nor_mlflow(tmp_path):
    proc, heavy = ngram_command(tmp_path, "tracking=none", "trainer.export_arpa=true")
    assert heavy == set()
    assert re.search(r"ngram-text_files: counted, .* \| valid ppl [\d.]+ \| test ppl [\d.]+", proc.stdout)
    bundle = next((tmp_path / "outputs").glob("*/*/model"))  # the bundle and its ARPA form, written all the same
    assert (bundle / "lmbench_model.json").is_file()
    assert (bundle / "model.arpa").read_text().startswith("\n\\data\\\nngram 1=")


def test_a_tracked_ngram_command_imports_mlflow_and_no_tensorflow(tmp_path):
    proc, heavy = ngram_command(tmp_path, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert heavy == {"mlflow"}
    assert "MLflow run " in proc.stdout


@pytest.mark.parametrize(
    "overrides, counting",
    [
        ((), True),
        (("trainer.devices=2",), False),  # several devices: the distributed set-up, as before
        (("trainer.init_from=/nowhere",), False),  # a fine-tune: refused by finetune, as before
    ],
)
def test_run_kind_sends_only_a_counting_model_on_one_device_to_the_counting_run(tmp_path, overrides, counting):
    cfg = tiny_cfg(tmp_path, *overrides, model=("model=ngram",))
    assert (type(run_kind(cfg)) is CountingRun) == counting
    assert NGramLM.is_network is False


def test_a_network_and_a_mixture_take_the_network_run(tmp_path):
    from lmbench.training.network import NetworkRun

    assert type(run_kind(tiny_cfg(tmp_path / "lstm"))) is NetworkRun
    mixture = tiny_cfg(tmp_path / "mix", model=("model=interpolated", "model.components=[a,b]"))
    assert type(run_kind(mixture)) is NetworkRun  # a builder function: its components may be networks


def test_a_counting_run_gives_the_figures_of_the_network_path(tmp_path, monkeypatch):
    """The n-gram's figures do not depend on which kind of run fitted it: the same config through
    `CountingRun` and through `NetworkRun` (the code every n-gram run took before) agree exactly."""
    from lmbench.training.network import NetworkRun

    cfg = tiny_cfg(tmp_path, "tracking=none", model=("model=ngram",))
    counted = run(cfg, output_dir=tmp_path / "counting", launch_dir=tmp_path)
    monkeypatch.setattr("lmbench.training.run.run_kind", lambda cfg: NetworkRun())
    networked = run(cfg, output_dir=tmp_path / "network", launch_dir=tmp_path)
    keep = [k for k in counted if not k.startswith("time/") and "tokens_per_s" not in k]  # not timings
    assert {k: counted[k] for k in keep} == {k: networked[k] for k in keep}
    assert counted["test/ppl"] > 1
