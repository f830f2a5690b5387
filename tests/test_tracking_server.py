"""lmbench against a real tracking server: `mlflow server` over PostgreSQL, artifacts served by the
server (tests/helpers.py starts both on 127.0.0.1). Nothing is shared between the process that
trains and the one that reads but the server's URL: each works in its own folder with its own
cache, and the run folder is deleted before its model is used.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import corpus_args, run_cli
from mlflow import MlflowClient

from lmbench import names

TINY_RNN = ("model.hidden_size=16", "model.embedding_dim=16", "model.num_layers=1")
pytestmark = pytest.mark.usefixtures("tracking_server")


def no_local_store(folder: Path) -> None:
    """Nothing of the store was written beside the job: no sqlite file, no local artifact folder."""
    assert not list(folder.rglob("*.db")) and not list(folder.rglob("mlruns"))


def test_a_run_and_its_model_go_through_the_server(tracking_server, tmp_path):
    uri = tracking_server.url
    trainer_dir, reader_dir = tmp_path / "trainer", tmp_path / "reader"
    run_cli(trainer_dir, uri, *corpus_args(tmp_path / "data"), "model=lstm", *TINY_RNN, "trainer.max_steps=10",
            "tracking.log_every_n_steps=1", "tracking.experiment=server-run")
    no_local_store(trainer_dir)
    shutil.rmtree(trainer_dir)  # the reader finds the model through the server, or not at all

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("server-run").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)] == list(range(1, 11))
    test_ppl = run.data.metrics["test/ppl"]

    # lmbench-evaluate and lmbench-generate from another folder and cache, the model downloaded.
    out = run_cli(reader_dir, uri, run.info.run_id, "--split", "test", "--no-log", module="lmbench.cli.evaluate")
    assert f"{test_ppl:.2f}" in out.stdout
    out = run_cli(reader_dir, uri, f"runs:/{run.info.run_id}/model", "--prompt", "the cat", "--tokens", "5",
                  "--seed", "1", module="lmbench.cli.generate")
    assert out.stdout.startswith("the cat")

    # The MLflow model, loaded by MLflow itself in a fresh process, scores the test text to the run's figure.
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "print(json.dumps(float(m.predict([open(sys.argv[2]).read()]).iloc[0]['ppl'])))\n"
    )
    out = run_cli(reader_dir / "pyfunc", uri, "-c", script, f"runs:/{run.info.run_id}/model",
                  str(tmp_path / "data" / "test.txt"), module="")
    assert json.loads(out.stdout.strip().splitlines()[-1]) == pytest.approx(test_ppl, rel=1e-6)


def test_eight_parallel_jobs_all_arrive_in_the_server_store(tracking_server, tmp_path):
    """8 joblib jobs at once into the PostgreSQL store through the server: every child run, every
    logged step and every model arrives, and the report reaches the parent."""
    uri, experiment = tracking_server.url, f"eight-{tmp_path.name}"
    steps = 6
    proc = run_cli(tmp_path / "launch", uri, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=8",
                   "model=ngram,rnn", "seed=1,2,3,4", *corpus_args(tmp_path / "data"),
                   f"trainer.max_steps={steps}", "tracking.log_every_n_steps=1", f"tracking.experiment={experiment}")
    no_local_store(tmp_path / "launch")
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(names.ROLE) == "sweep"]
    children = [r for r in runs if r.data.tags.get(names.PARENT_RUN_ID) == parent.info.run_id]
    assert len(runs) == 9 and len(children) == 8, proc.stdout[-3000:]
    assert parent.info.status == "FINISHED"
    jobs = {(r.data.tags[names.MODEL], r.data.params["seed"]) for r in children}
    assert jobs == {(m, str(s)) for m in ("ngram", "rnn") for s in range(1, 5)}
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.tags[names.SWEEP_ID] == parent.info.run_id
        assert {"test/ppl", "best_valid/ppl", "model/params"} <= set(r.data.metrics)
        if r.data.tags[names.MODEL] == "rnn":  # one train/loss per step, none lost under the load
            history = client.get_metric_history(r.info.run_id, names.TRAIN_LOSS)
            assert sorted(m.step for m in history) == list(range(1, steps + 1))
    models = client.search_logged_models(experiment_ids=[experiment_id])
    assert sorted(m.source_run_id for m in models) == sorted(r.info.run_id for r in children)
    assert {str(m.status) for m in models} == {"READY"}
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/comparison.md", "report/comparison.csv", "report/valid_ppl.png"} <= report


@pytest.mark.slow  # submitit starts each job as a fresh process: about a minute idle
def test_a_submitit_sweep_nests_its_jobs_under_one_parent(tracking_server, tmp_path):
    """hydra/launcher=submitit_local: each job a process submitit starts (its own environment and
    working folder), the parent run, store and data folder reaching it through Hydra's env_set."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    uri, experiment = tracking_server.url, f"submitit-{tmp_path.name}"
    run_cli(tmp_path / "launch", uri, "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
            "model=ngram", "seed=1,2", *corpus_args(tmp_path / "data"), f"tracking.experiment={experiment}")
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(names.ROLE) == "sweep"]
    children = [r for r in runs if r.data.tags.get(names.PARENT_RUN_ID) == parent.info.run_id]
    assert len(runs) == 3 and sorted(r.data.params["seed"] for r in children) == ["1", "2"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/comparison.md"}
