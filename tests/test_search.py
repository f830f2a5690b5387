"""Hyperparameter searches (lmbench.search, hydra/sweeper=lmbench_optuna): the study's storage, the
search space and settings checked before any training, pruning from periodic validation, a search
continued after a real SIGKILL, and two workers sharing one study.

The searches run `python -m lmbench hparams_search=lstm_ptb ...` in a subprocess on the tiny corpus
of test_training, a few steps per trial, with the store in tmp_path/mlflow.db (test_sweep.lmbench).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import lmbench, sweep_runs, write_corpus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from lmbench.errors import ConfigError
from lmbench.search.settings import read_settings
from lmbench.search.space import parse_space
from lmbench.search.storage import StudyStorage, choose_storage, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)  # "Using an existing study" at every poll
TINY = ("model.hidden_size=16", "model.embedding_dim=16", "model.num_layers=1")


def test_the_study_lives_beside_a_sqlite_store_or_in_the_postgresql_database(tmp_path):
    here = tmp_path.resolve()
    assert choose_storage(None, "sqlite:///mlflow.db", "lstm_ptb", tmp_path) == StudyStorage(
        "journal", str(here / "optuna" / "lstm_ptb.journal"))
    assert choose_storage(None, "sqlite:////data/runs/mlflow.db", "a b/c", tmp_path) == StudyStorage(
        "journal", "/data/runs/optuna/a_b_c.journal")  # named after the search, made a file name
    postgres = "postgresql+psycopg2://lm:secret@db.example:5432/mlflow"
    assert choose_storage(None, postgres, "s", tmp_path) == StudyStorage("rdb", postgres, "optuna")
    assert str(choose_storage(None, postgres, "s", tmp_path)) == (
        "database postgresql+psycopg2://lm:***@db.example:5432/mlflow (schema optuna)")
    assert choose_storage(None, "postgresql://db/mlflow", "s", tmp_path).kind == "rdb"
    for elsewhere in ("http://127.0.0.1:5000", "mlruns", "mysql+pymysql://db/mlflow", "databricks"):
        assert choose_storage(None, elsewhere, "s", tmp_path) == StudyStorage(
            "journal", str(here / "optuna" / "s.journal")), elsewhere  # the launch folder
    # hydra.sweeper.storage wins: a URL is a database, anything else a journal file
    assert choose_storage("sqlite:///o.db", postgres, "s", tmp_path) == StudyStorage("rdb", "sqlite:///o.db")
    assert choose_storage("studies/x.journal", postgres, "s", tmp_path) == StudyStorage(
        "journal", str(here / "studies" / "x.journal"))


def test_optuna_database_storage_works_beside_sqlalchemy_2(tmp_path):
    """What hydra-optuna-sweeper 1.3's optuna<3 could not do: a persistent RDB study."""
    storage = StudyStorage("rdb", f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=open_storage(storage))
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.5) ** 2, n_trials=3)
    again = optuna.load_study(study_name="s", storage=open_storage(storage))
    assert [t.value for t in again.trials] == [t.value for t in study.trials] and len(again.trials) == 3


def test_the_trials_table_shows_numbers_at_4_significant_digits():
    """Optuna samples 3.549789049598131; the table shows 3.55, and trained tokens as a whole count."""
    from lmbench.search.report import markdown, trial_rows
    from lmbench.tracking import RunRecord

    lr, dropout = "optimizer.learning_rate", "model.dropout"
    space = {lr: FloatDistribution(2.0, 40.0, log=True), dropout: FloatDistribution(0.0, 0.5)}
    study = optuna.create_study()
    sampled = {(3.549789049598131, 0.31105438551991593): 9.612345678, (17.4221019247619, 0.3927): 123.456}
    for params, value in sampled.items():
        trial = optuna.trial.create_trial(params=dict(zip((lr, dropout), params)), distributions=space, value=value)
        study.add_trial(trial)
    runs = [RunRecord(str(k) * 32, f"lstm-{k}", "FINISHED", "1", {"lmbench.trial": str(k)}, {},
                      {"train/tokens": 25600.0}) for k in (1, 0)]
    table = markdown(trial_rows(study, runs)).splitlines()
    assert table[0].split(" | ")[2:8] == ["value", "best", dropout, lr, "steps", "trained_tokens"]
    rows = [line.strip("| ").split(" | ") for line in table[2:]]
    assert [row[2:] for row in rows] == [
        ["9.612", "yes", "0.3111", "3.55", "", "25600", "00000000"],
        ["123.5", "", "0.3927", "17.42", "", "25600", "11111111"],
    ]


def test_search_spaces_in_hydras_sweep_grammar():
    space = parse_space({
        "optimizer.learning_rate": "tag(log, interval(2.0, 40.0))",
        "model.dropout": "interval(0, 0.5)",
        "model.num_layers": "tag(int, interval(1, 3))",
        "model.hidden_size": "range(100, 400, 100)",
        "optimizer": "choice(sgd, adam)",
        "trainer.bptt": "35",
    })
    assert space.distributions == {
        "optimizer.learning_rate": FloatDistribution(2.0, 40.0, log=True),
        "model.dropout": FloatDistribution(0.0, 0.5),
        "model.num_layers": IntDistribution(1, 3),
        "model.hidden_size": IntDistribution(100, 300, step=100),  # Hydra's range leaves the stop out
        "optimizer": CategoricalDistribution(["sgd", "adam"]),
    }
    assert space.fixed == {"trainer.bptt": "35"}
    assert space.overrides({"model.dropout": 0.25, "optimizer": "adam"}) == [
        "model.dropout=0.25", "optimizer=adam", "trainer.bptt=35"]


SETTINGS = {"study_name": "s", "direction": "minimize", "n_trials": 4, "n_jobs": 1, "storage": None,
            "sampler": {"name": "tpe", "seed": 1}, "pruner": {"name": "median", "n_startup_trials": 2},
            "params": {"model.dropout": "interval(0.0, 0.5)"}}


@pytest.mark.parametrize("change, message", [
    ({"pruner": {"name": "medain"}},
     "hydra.sweeper.pruner.name='medain' is not a pruner lmbench knows; valid: median, successive_halving, "
     "hyperband, none"),
    ({"pruner": {"name": "median", "patience": 3}}, "the median pruner takes no patience; it takes: interval_steps"),
    ({"pruner": {"name": "median", "n_startup_trials": -1}}, "hydra.sweeper: Number of startup trials cannot be"),
    ({"sampler": {"name": "cmaes"}}, "sampler.name='cmaes' is not a sampler lmbench knows; valid: tpe, random"),
    ({"params": {"model.dropout": "interval(0.5, 0.1)"}}, "`model.dropout=interval(0.5, 0.1)` is empty"),
    ({"params": {"optimizer.learning_rate": "tag(log, interval(0.0, 1.0))"}}, "its low end must be > 0"),
    ({"params": {"model.dropout": "interval(0.1"}}, "cannot read `model.dropout=interval(0.1`"),
    ({"params": {"model.dropout": "glob(*)"}}, "is a Glob, which Optuna cannot sample"),
    ({"params": {"model.dropout": "0.1"}}, "hydra.sweeper.params searches nothing"),
    ({"n_trials": 0}, "hydra.sweeper.n_trials must be a whole number >= 1, got 0"),
    ({"direction": "down"}, "hydra.sweeper.direction='down'; valid: minimize, maximize"),
])
def test_a_bad_search_is_one_paragraph(change, message):
    with pytest.raises(ConfigError) as info:
        read_settings({**SETTINGS, **change})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_command_line_ranges_join_the_space_and_plain_values_leave_it():
    settings = read_settings(SETTINGS, ["model.hidden_size=choice(8,16)", "trainer.max_steps=5"])
    assert set(settings.space.distributions) == {"model.dropout", "model.hidden_size"}
    settings = read_settings({**SETTINGS, "params": {**SETTINGS["params"], "optimizer.learning_rate": "interval(1,2)"}},
                             ["model.dropout=0.0"])
    assert set(settings.space.distributions) == {"optimizer.learning_rate"}
    # another pruner's settings (the yaml's median ones) do not stop `pruner.name=none`
    assert read_settings({**SETTINGS, "pruner": {"name": "none", "n_startup_trials": 2}}).pruner == {"name": "none"}


@pytest.mark.parametrize("override, message", [
    ("hydra.sweeper.pruner.name=medain", "is not a pruner lmbench knows"),
    ("model.dropout=interval(0.5,0.1)", "is empty: the low end must be below the high end"),
    ("model.dropot=interval(0.1,0.5)", "the search varies model.dropot, which is no key of the config"),
])
def test_a_bad_search_stops_before_any_run_or_training(tmp_path, override, message):
    proc = lmbench(tmp_path, "hparams_search=lstm_ptb", override, ok=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lmbench: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna").exists()  # no run, no study
    assert not list(tmp_path.glob("multirun/**/trial_*"))


def study_of(tmp_path: Path, name: str = "lstm_ptb") -> optuna.Study:
    """The search's study, where lmbench keeps it for the store tmp_path/mlflow.db."""
    storage = open_storage(choose_storage(None, "sqlite:///mlflow.db", name, tmp_path))
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def runs_by_trial(children) -> dict[int, list]:
    by_trial: dict[int, list] = {}
    for r in children:
        by_trial.setdefault(int(r.data.tags["lmbench.trial"]), []).append(r)
    return by_trial


def test_a_trial_whose_validation_lags_is_pruned_and_its_run_keeps_what_it_logged(tmp_path):
    # Trial 0 learns (lr 5), trial 1 barely moves (lr 1e-5): after one finished trial (median
    # pruner, n_startup_trials=1), trial 1's first periodic validation is worse than trial 0's
    # there, so the pruner stops it at step 2.
    space = "choice(5.0,0.00001)"
    learning_rates = parse_space({"optimizer.learning_rate": space}).distributions["optimizer.learning_rate"].choices
    study = study_of(tmp_path)
    for lr in learning_rates:
        study.enqueue_trial({"optimizer.learning_rate": lr})
    proc = lmbench(
        tmp_path, "hparams_search=lstm_ptb", f"optimizer.learning_rate={space}", "model.dropout=0.0",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner.n_startup_trials=1", "trainer.max_steps=8",
        "trainer.validate_every_n_steps=2", "tracking.log_every_n_steps=1", *TINY, "tracking.experiment=prune",
    )
    assert "Trial 1: pruned" in proc.stdout
    trials = study_of(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert list(trials[0].intermediate_values) == [2, 4, 6, 8] and list(trials[1].intermediate_values) == [2]
    assert trials[1].intermediate_values[2] > trials[0].intermediate_values[2]

    client, parent, children = sweep_runs(tmp_path, "prune")
    runs = {k: v[0] for k, v in runs_by_trial(children).items()}
    complete, pruned = runs[0], runs[1]
    assert complete.info.status == "FINISHED" and "test/ppl" in complete.data.metrics
    assert complete.data.metrics["train/tokens"] == 8 * 4 * 8  # steps x batch_size x bptt
    assert pruned.info.status == "KILLED"
    assert pruned.data.tags["lmbench.stopped_at_step"] == "2"
    assert pruned.data.tags["lmbench.stop_reason"].startswith("pruned by Optuna's median pruner at step 2 (valid ppl")
    assert float(pruned.data.params["optimizer.learning_rate"]) == 1e-5
    # what it logged stays: its training curve, its validation, the tokens it trained on; no test
    assert [m.step for m in client.get_metric_history(pruned.info.run_id, "train/loss")] == [1, 2]
    [valid] = client.get_metric_history(pruned.info.run_id, "valid_step/ppl")
    assert valid.step == 2 and valid.value == pytest.approx(trials[1].intermediate_values[2])
    assert pruned.data.metrics["train/tokens"] == 2 * 4 * 8
    assert "test/ppl" not in pruned.data.metrics
    table = (tmp_path / "multirun" / "search" / "lstm_ptb" / "search" / "trials.md").read_text()
    assert "| 0 | complete |" in table and "| 1 | pruned |" in table


def search_process(tmp_path: Path, *overrides: str, log: str) -> subprocess.Popen:
    """`python -m lmbench hparams_search=lstm_ptb ...` started in the background (as test_sweep.lmbench
    runs it), its output into tmp_path/<log>."""
    paths = write_corpus(tmp_path)
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = open(tmp_path / log, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "lmbench", "hparams_search=lstm_ptb", *overrides, "dataset=text_files",
         *(f"dataset.{split}={path}" for split, path in paths.items()),
         "trainer.batch_size=4", "trainer.bptt=8", "trainer.eval_batch_size=2", "trainer.progress=false"],
        cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
    )


def wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the search ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


def trials_in(tmp_path: Path, state: TrialState) -> list[optuna.trial.FrozenTrial]:
    if not (tmp_path / "optuna" / "lstm_ptb.journal").exists():
        return []
    return study_of(tmp_path).get_trials(states=(state,))


def test_a_search_killed_midway_continues_with_the_same_command(tmp_path):
    command = ("hydra.sweeper.n_trials=2", "hydra.sweeper.pruner.name=none", "trainer.max_steps=4",
               "trainer.validate_every_n_steps=2", *TINY, "tracking.experiment=resume")
    first = search_process(tmp_path, *command, log="first.log")
    try:  # killed once the second trial has trained and reported its first validation
        wait_for(lambda: trials_in(tmp_path, TrialState.COMPLETE) and any(
            t.intermediate_values for t in trials_in(tmp_path, TrialState.RUNNING)), "second trial's validation", first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    before = study_of(tmp_path).trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    _, parent, killed = sweep_runs(tmp_path, "resume")
    [killed_run] = runs_by_trial(killed)[1]
    assert killed_run.info.status == "RUNNING"  # SIGKILL: nothing could end it

    second = search_process(tmp_path, *command, log="second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    out = (tmp_path / "second.log").read_text()
    assert f"MLflow parent run {parent.info.run_id} continuing" in out
    assert "1 of 2 trials finished; trials [1] died with their process and are queued again" in out

    after = study_of(tmp_path).trials
    states = [t.state for t in after]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert after[0].value == before[0].value and after[0].params == before[0].params  # kept, not rerun
    assert after[2].params == before[1].params and after[2].user_attrs["lmbench.requeued_from"] == 1
    client, again, children = sweep_runs(tmp_path, "resume")  # still one parent
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    by_trial = runs_by_trial(children)
    assert all(len(by_trial[n]) == 1 and by_trial[n][0].info.status == "FINISHED" for n in (0, 2))  # each once
    [dead] = by_trial[1]  # the killed trial's run is ended, saying why
    assert dead.info.status == "FAILED" and "search process running this trial died" in dead.data.tags["lmbench.error"]
    best = min(t.value for t in after if t.state == TrialState.COMPLETE)
    result = yaml.safe_load((tmp_path / "multirun" / "search" / "lstm_ptb" / "search" / "optimization_results.yaml")
                            .read_text())
    assert result["best_value"] == pytest.approx(best) and best <= before[0].value


@pytest.mark.parametrize("first_worker", [
    pytest.param((), id="two-processes"),
    # two trials at a time through joblib: loky's workers each import TensorFlow (about 100 s here)
    pytest.param(("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"), id="joblib",
                 marks=pytest.mark.slow),
])
def test_two_workers_on_one_study_lose_no_trial_and_run_none_twice(tmp_path, first_worker):
    # Worker B starts once worker A has begun; together they run the study's trials, each once.
    n = 5 if first_worker else 4
    command = (f"hydra.sweeper.n_trials={n}", "hydra.sweeper.pruner.name=none", "trainer.max_steps=4", *TINY,
               "tracking.experiment=workers")
    a = search_process(tmp_path, *command, *first_worker, log="a.log")
    workers = [a]
    try:
        wait_for(lambda: trials_in(tmp_path, TrialState.RUNNING), "first trial", a)
        b = search_process(tmp_path, *command, log="b.log")
        workers.append(b)
        assert b.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()[-3000:]
        assert a.wait(timeout=600) == 0, (tmp_path / "a.log").read_text()[-3000:]
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
    trials = study_of(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n  # the count is shared: none extra
    assert {t.user_attrs["lmbench.owner"]["pid"] for t in trials} == {a.pid, b.pid}  # both worked
    client, parent, children = sweep_runs(tmp_path, "workers")  # one parent for both workers
    by_trial = runs_by_trial(children)
    assert sorted(by_trial) == list(range(n)) and all(len(runs) == 1 for runs in by_trial.values())
    for t in trials:
        [run] = by_trial[t.number]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["best_valid/ppl"] == pytest.approx(t.value)
        assert float(run.data.params["optimizer.learning_rate"]) == pytest.approx(t.params["optimizer.learning_rate"])
    assert len({t.params["optimizer.learning_rate"] for t in trials}) == n  # no point drawn twice


def test_a_study_lives_in_the_mlflow_postgresql_database_without_touching_its_schema(postgres, tmp_path):
    """A PostgreSQL MLflow store: the study goes into the same database, in its own schema, and
    MLflow's store (its own alembic_version) still opens and works afterwards."""
    import sqlalchemy
    from mlflow import MlflowClient

    from lmbench.tracking.store import ensure_experiment

    uri = postgres.uri("optuna")  # a database of its own, so that other tests' stores stay apart
    ensure_experiment(uri, "before the study")  # MLflow creates its schema first, as a sweep does
    storage = choose_storage(None, uri, "pg search", tmp_path)
    assert storage == StudyStorage("rdb", uri, "optuna")
    study = optuna.create_study(study_name="pg search", storage=open_storage(storage))
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.5) ** 2, n_trials=3)
    again = optuna.load_study(study_name="pg search", storage=open_storage(storage))
    assert [t.value for t in again.trials] == [t.value for t in study.trials] and len(again.trials) == 3

    engine = sqlalchemy.create_engine(uri)
    with engine.connect() as connection:
        schemas = dict(connection.execute(sqlalchemy.text(
            "SELECT table_name, table_schema FROM information_schema.tables "
            "WHERE table_name IN ('studies', 'trials', 'experiments', 'runs')"
        )).all())
    engine.dispose()
    assert schemas == {"studies": "optuna", "trials": "optuna", "experiments": "public", "runs": "public"}
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment_by_name("before the study") is not None
    ensure_experiment(uri, "after the study")  # the store's migrations still see their own revision
    assert client.get_experiment_by_name("after the study") is not None
