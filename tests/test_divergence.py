"""The divergence guard: a run that blows up ends FAILED with one paragraph (step, loss, recipe, what
to try) and exit status 2; in a sweep the other jobs go on and the run is listed as diverged."""

from __future__ import annotations

import math

import pytest
from helpers import lmbench, only_run, sweep_runs, tiny_cfg

from lmbench.errors import TrainingDiverged
from lmbench.training.divergence import MARGIN, WINDOW, DivergenceGuard, explain
from lmbench.training.run import run

TINY_RNN = ("model=rnn", "model.hidden_size=16", "model.embedding_dim=16", "model.num_layers=1")
# SGD far past what a tanh RNN takes: the loss climbs far above ln |V| and stays there (not NaN).
BLOW_UP = ("optimizer=sgd", "optimizer.learning_rate=300", "trainer.clip_norm=null")


def test_a_non_finite_loss_stops_at_once_even_in_the_grace_period():
    guard = DivergenceGuard(vocab_size=100, grace_steps=1000)
    guard.check(1, 4.6, epoch=1)
    with pytest.raises(TrainingDiverged) as info:
        guard.check(2, math.nan, epoch=1)
    assert info.value.step == 2 and "became nan at step 2" in str(info.value)


def test_a_loss_worse_than_uniform_stops_only_after_the_grace_period_and_a_full_window():
    guard = DivergenceGuard(vocab_size=100, grace_steps=30)  # ln 100 = 4.61
    for step in range(1, 31):
        guard.check(step, 50.0, epoch=1)  # in the grace period: training may start badly
    with pytest.raises(TrainingDiverged) as info:
        guard.check(31, 50.0, epoch=1)
    assert info.value.step == 31 and info.value.loss == pytest.approx(50.0)
    text = str(info.value)
    assert f"steps {31 - WINDOW + 1}-31" in text and "ln |V| = 4.61" in text and "100-token" in text


def test_a_slow_learner_near_uniform_is_not_stopped_and_null_grace_checks_only_nan():
    near = DivergenceGuard(vocab_size=100, grace_steps=5)
    for step in range(1, 200):
        near.check(step, math.log(100) * (MARGIN - 0.01), epoch=1)
    never = DivergenceGuard(vocab_size=100, grace_steps=None)
    for step in range(1, 200):
        never.check(step, 1e6, epoch=1)


def test_the_paragraph_names_the_recipe_and_what_to_try(compose_config):
    ex = TrainingDiverged("the training loss became nan at step 7 (epoch 1)", 7)
    own = explain(ex, compose_config("model=transformer"))
    assert own.startswith("training diverged: the training loss became nan at step 7")
    assert "Adam at learning rate 0.001, clip_norm 1.0, 200 warm-up steps (the transformer recipe" in own
    assert "lower optimizer.learning_rate" in own
    chosen = explain(ex, compose_config("model=rnn", "optimizer=sgd", "optimizer.learning_rate=20"))
    assert "SGD at learning rate 20" in chosen and "not the rnn recipe's Adam at 0.002" in chosen
    assert "drop the optimizer overrides" in chosen


def test_a_blown_up_run_ends_failed_tagged_with_what_it_logged(tmp_path):
    cfg = tiny_cfg(
        tmp_path, *BLOW_UP, "trainer.divergence_grace_steps=20", "trainer.max_steps=200",
        "tracking.log_every_n_steps=5", model=TINY_RNN,
    )
    with pytest.raises(TrainingDiverged) as info:
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    step = info.value.step
    assert 20 < step < 200  # stopped after the grace period, long before the budget
    client, r = only_run(cfg.tracking.uri)
    assert r.info.status == "FAILED"
    assert r.data.tags["lmbench.diverged"] == str(step) == r.data.tags["lmbench.failed_step"]
    error = r.data.tags["lmbench.error"]
    assert error == str(info.value) and "worse than a uniform guess" in error and "not the rnn recipe's" in error
    logged = [h.step for h in client.get_metric_history(r.info.run_id, "train/loss")]
    assert logged == list(range(5, step, 5))  # every window before the stop stays logged
    assert "test/ppl" not in r.data.metrics  # no figure for a diverged model


def test_the_cli_prints_one_paragraph_and_exits_2(tmp_path):
    proc = lmbench(
        tmp_path, *TINY_RNN, *BLOW_UP, "trainer.divergence_grace_steps=20", "trainer.max_steps=200", ok=False,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lmbench: error:")]
    assert len(errors) == 1 and "training diverged" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_sweep_goes_on_past_a_diverged_job_and_lists_it_as_diverged(tmp_path):
    proc = lmbench(
        tmp_path, "-m", *TINY_RNN, "optimizer=sgd", "trainer.clip_norm=null", "optimizer.learning_rate=300,0.5",
        "trainer.divergence_grace_steps=20", "trainer.max_steps=60", "tracking.experiment=sweep",
    )
    _, parent, children = sweep_runs(tmp_path, "sweep")
    by_lr = {float(r.data.params["optimizer.learning_rate"]): r for r in children}
    assert by_lr[300].info.status == "FAILED" and "lmbench.diverged" in by_lr[300].data.tags
    assert by_lr[0.5].info.status == "FINISHED" and "test/ppl" in by_lr[0.5].data.metrics
    assert parent.info.status == "FINISHED"
    assert "training diverged" in proc.stderr
    table = proc.stdout.split("Report (Markdown", 1)[0]
    assert "diverged at step" in table  # listed as diverged, not as a row of figures
