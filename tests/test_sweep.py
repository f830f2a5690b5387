"""Sweeps through the real CLI: one MLflow parent run per multirun, every job a nested child run.

The sweeps run `python -m lmbench -m ...` in a subprocess on a tiny corpus the test writes, with the
tracking URI left to its default, so the callback and the jobs must agree on the store by themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import lmbench, sweep_runs
from hydra.types import RunMode
from omegaconf import OmegaConf

from lmbench.cli.sweep import job_env, job_tags
from lmbench.tracking import with_retry


def test_four_parallel_jobs_all_arrive_under_one_parent(tmp_path):
    proc = lmbench(
        tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "model=ngram,lstm", "seed=1,2",
        "trainer.max_steps=12", "tracking.log_every_n_steps=1", "tracking.experiment=sweep",
    )
    client, parent, children = sweep_runs(tmp_path, "sweep")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Every run went to the one store in the launch folder, none to Default or a stray mlflow.db.
    assert sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments()) == 5
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*.db")] == [Path("mlflow.db")]

    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lmbench.sweep_id"] == parent.info.run_id
    assert len(children) == 4
    jobs = set()
    for r in children:
        tags, run_id = r.data.tags, r.info.run_id
        assert r.info.status == "FINISHED"
        assert tags["lmbench.sweep_id"] == parent.info.run_id
        overrides = dict(
            o.split("=", 1) for o in tags["lmbench.overrides"].split() if o.split("=")[0] in ("model", "seed")
        )
        jobs.add((overrides["model"], overrides["seed"]))
        assert tags["lmbench.family"] == tags["lmbench.model"] == overrides["model"]
        assert r.data.params["seed"] == overrides["seed"]
        for key in ("valid/ppl", "best_valid/ppl", "test/ppl", "test/bpc", "model/params", "time/train_s"):
            assert key in r.data.metrics, (key, tags["lmbench.overrides"])
        assert r.data.metrics["model/params"] > 0  # counted once the network has its weights
        assert [m.step for m in client.get_metric_history(run_id, "valid/ppl")] == [1]
        if overrides["model"] == "lstm":  # one train/loss per step, none lost to a locked store
            assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == list(range(1, 13))
    assert jobs == {("ngram", "1"), ("ngram", "2"), ("lstm", "1"), ("lstm", "2")}

    # The sweep ends with the comparison table, logged to the parent, and the UI command.
    assert "| run | family | model |" in proc.stdout
    assert proc.stdout.count(f"mlflow ui --backend-store-uri {store}") == 1  # once, not after every job
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/comparison.md", "report/comparison.csv", "report/valid_ppl.png", "report/comparison.json",
            "report/report.html"} <= report
    # The printed link opens report.html in the parent's artifact view; its description ranks the runs.
    assert f"/runs/{parent.info.run_id}/artifacts/report/report.html" in proc.stdout
    parent = client.get_run(parent.info.run_id)
    assert parent.data.tags["mlflow.note.content"].startswith("**Test perplexity, best first:** ngram ")
    assert client.get_experiment_by_name("sweep").tags["mlflow.experimentKind"] == "custom_model_development"


def test_optuna_search_records_each_trial_as_a_child_run(tmp_path):
    lmbench(
        tmp_path,
        "hparams_search=lstm_ptb",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner.name=none",
        "trainer.max_steps=6",
        "model.hidden_size=16",
        "model.embedding_dim=16",
        "model.num_layers=1",
        "tracking.experiment=search",
    )
    client, parent, trials = sweep_runs(tmp_path, "search")
    assert parent.info.status == "FINISHED"
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    assert sorted(r.data.tags["lmbench.trial"] for r in trials) == ["0", "1", "2"]
    learning_rates = {float(r.data.params["optimizer.learning_rate"]) for r in trials}
    assert len(learning_rates) == 3 and all(2.0 <= lr <= 40.0 for lr in learning_rates)
    assert all(0.0 <= float(r.data.params["model.dropout"]) <= 0.5 for r in trials)

    # The value Optuna minimised is each trial's logged best_valid/ppl; the study is in a journal
    # file beside the MLflow store, named after the search.
    folder = tmp_path / "multirun" / "search" / "lstm_ptb"
    result = yaml.safe_load((folder / "search" / "optimization_results.yaml").read_text())
    best = min(trials, key=lambda r: r.data.metrics["best_valid/ppl"])
    assert result["best_value"] == pytest.approx(best.data.metrics["best_valid/ppl"])
    assert float(result["best_params"]["optimizer.learning_rate"]) == pytest.approx(
        float(best.data.params["optimizer.learning_rate"])
    )
    assert (tmp_path / "optuna" / "lstm_ptb.journal").is_file()
    assert sorted(p.name for p in folder.glob("trial_*")) == ["trial_0", "trial_1", "trial_2"]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
    assert {"search/optimization_results.yaml", "search/trials.md", "search/trials.csv",
            "search/optimization_history.png", "search/trials.json"} <= logged


def test_a_sweep_that_stops_early_ends_its_parent_failed(tmp_path):
    proc = lmbench(
        tmp_path,
        "-m",
        "optimizer=sgd",
        "optimizer.learning_rate=fast,1",
        "trainer.max_steps=2",
        "tracking.experiment=broken",
        ok=False,
    )
    assert "optimizer" in proc.stderr  # the first job's config error stops the sweep
    _, parent, children = sweep_runs(tmp_path, "broken")
    assert parent.info.status == "FAILED"
    assert "stopped before all its jobs finished" in parent.data.tags["lmbench.error"]
    assert children == []  # the job failed before it started a run


def test_a_sweep_launched_again_into_its_folder_continues_under_its_parent(tmp_path):
    # Job 1 reads a valid file that is missing at first: the sweep stops after job 0, its parent
    # FAILED. Once the file exists, the same command continues that sweep: same parent, now
    # FINISHED; job 0 (an n-gram: no checkpoint) runs again, and the report counts it once.
    later = tmp_path / "later_valid.txt"
    command = (
        "-m",
        "model=ngram",
        "model.order=2",
        f"dataset.valid={tmp_path / 'valid.txt'},{later}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "tracking.experiment=again",
    )
    first = lmbench(tmp_path, *command, ok=False, splits=("train", "test"))
    assert "later_valid.txt" in first.stderr
    _, parent, children = sweep_runs(tmp_path, "again")
    assert parent.info.status == "FAILED" and len(children) == 1

    later.write_text((tmp_path / "valid.txt").read_text(encoding="utf-8"), encoding="utf-8")
    second = lmbench(tmp_path, *command, splits=("train", "test"))
    assert f"MLflow parent run {parent.info.run_id} continuing" in second.stdout
    client, again, children = sweep_runs(tmp_path, "again")  # asserts there is still one parent
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert again.data.tags["lmbench.continued"] == "1"
    assert sorted(c.data.tags["lmbench.job_num"] for c in children) == ["0", "0", "1"]
    assert all(c.info.status == "FINISHED" for c in children)
    report = (tmp_path / "sweep" / "report" / "comparison.csv").read_text().splitlines()
    assert len(report) == 3  # header + one row per job
    newest_job0 = max((c for c in children if c.data.tags["lmbench.job_num"] == "0"), key=lambda c: c.info.start_time)
    assert newest_job0.info.run_id in {row.split(",")[0] for row in report[1:]}


def hydra_job(mode: str, env_set: dict[str, str]):
    return OmegaConf.create(
        {
            "mode": RunMode[mode],
            "runtime": {"choices": {"model": "lstm_small", "experiment": None, "dataset": "ptb"}},
            "job": {"num": 3, "env_set": env_set},
            "overrides": {"task": ["model=lstm_small", "seed=7"]},
        }
    )


def test_single_runs_have_no_parent_and_sweep_jobs_find_theirs():
    env = job_env("abc123", "sqlite:////x/mlflow.db")
    assert env["LMBENCH_SWEEP_PARENT_RUN"] == "abc123" and env["MLFLOW_TRACKING_URI"] == "sqlite:////x/mlflow.db"

    parent, tags = job_tags(hydra_job("RUN", {}))
    assert parent is None
    assert tags == {"lmbench.model": "lstm_small"}

    parent, tags = job_tags(hydra_job("MULTIRUN", env))
    assert parent == "abc123"
    assert tags["lmbench.sweep_id"] == "abc123"
    assert tags["lmbench.overrides"] == "model=lstm_small seed=7"
    assert tags["lmbench.job_num"] == "3"

    # A sweep with tracking disabled passes no parent: its jobs have none either.
    assert job_tags(hydra_job("MULTIRUN", {}))[0] is None


def test_writes_retry_while_the_store_is_locked():
    calls = []

    def flaky(fail_times: int, message: str):
        calls.append(1)
        if len(calls) <= fail_times:
            raise RuntimeError(message)
        return "ok"

    assert with_retry(flaky, 2, "(sqlite3.OperationalError) database is locked", first_wait=0) == "ok"
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(RuntimeError, match="locked"):
        with_retry(flaky, 10, "database is locked", attempts=4, first_wait=0)
    assert len(calls) == 4

    calls.clear()
    with pytest.raises(RuntimeError, match="no such table"):
        with_retry(flaky, 1, "no such table: runs", first_wait=0)
    assert len(calls) == 1  # other errors are not retried


def test_sweep_interpolate_adds_the_ngram_mixed_with_the_networks_as_one_more_child(tmp_path):
    """sweep.interpolate=true (the quick preset sets it): after the jobs, one more child run mixes
    the sweep's n-gram with its networks by EM on valid; the table has its row."""
    proc = lmbench(
        tmp_path,
        "-m",
        "model=ngram,lstm",
        "seed=1,2",
        "trainer.max_steps=30",
        "tracking.experiment=mix",
        "sweep.interpolate=true",
    )
    client, parent, children = sweep_runs(tmp_path, "mix")
    assert parent.info.status == "FINISHED" and len(children) == 5  # 4 jobs and the mixture
    [mixture] = [r for r in children if r.data.tags["lmbench.family"] == "interpolated"]
    parts = {r.info.run_id: r for r in children if r is not mixture}
    components = mixture.data.tags["lmbench.components"].split(",")
    assert len(components) == 3 and all(c in parts for c in components)
    assert [parts[c].data.tags["lmbench.family"] for c in components] == ["ngram", "lstm", "lstm"]
    m = mixture.data.metrics
    assert sum(m[f"interp/weight_{k}"] for k in range(3)) == pytest.approx(1.0)
    best_part = min(parts[c].data.metrics["best_valid/ppl"] for c in components)
    assert m["valid/ppl"] <= best_part * (1 + 1e-6)  # EM on valid never loses to a component there
    assert mixture.data.tags["lmbench.sweep_id"] == parent.info.run_id
    assert "| interpolated |" in proc.stdout  # a row of the printed table
    table = proc.stdout[proc.stdout.index("| run |"):]
    assert "model.components" not in table and "model=interpolated" not in table  # the model column says it
