"""Progress bars end on their final count, and a run cut short by max_steps says how much of the
epoch it trains."""

from __future__ import annotations

import re

from helpers import tiny_cfg

from lmbench.progress import progress_bar
from lmbench.training.run import run


def test_a_bar_draws_its_final_count_before_it_closes(capsys):
    with progress_bar(400, "epoch 1", "step") as bar:
        for _ in range(400):  # faster than the bar's refresh interval: only the first is drawn
            bar.update(1)
    assert "400/400" in capsys.readouterr().err


def test_a_run_stopped_inside_an_epoch_names_the_share_it_trains(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path, "trainer.max_steps=3", "trainer.progress=true")
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    err = capsys.readouterr().err
    assert re.search(r"\b\d+% of epoch 1: 100%\S* *\| *3/3 ", err), err[-2000:]
    assert "epoch 1:" not in err.replace("of epoch 1:", "")


def test_validate_every_n_steps_draws_a_validation_curve_per_step(tmp_path):
    """valid_step/* at steps 4, 8 and the epoch's end (the last step), valid/* per epoch as before;
    the report draws the per-step curve."""
    from helpers import only_run

    from lmbench.cli import report

    cfg = tiny_cfg(tmp_path, "trainer.validate_every_n_steps=4", "trainer.max_steps=10")
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    steps = [m.step for m in client.get_metric_history(r.info.run_id, "valid_step/ppl")]
    assert sorted(steps) == [4, 8, 10]
    assert [m.step for m in client.get_metric_history(r.info.run_id, "valid/ppl")] == [1]
    last = max(client.get_metric_history(r.info.run_id, "valid_step/ppl"), key=lambda m: m.step)
    assert last.value == r.data.metrics["valid/ppl"]  # the epoch's end is the curve's last point
    report.write_report(cfg.tracking.uri, tmp_path / "report", experiment="tiny")
    assert (tmp_path / "report" / "valid_ppl_steps.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_ending_inside_its_first_epoch_validates_four_times_unasked(tmp_path, capsys):
    """No trainer.validate_every_n_steps: a run that max_steps ends inside epoch 1 still gets a
    validation curve (steps 3, 6, 9 and its last), not a single point; the summary line says how
    much of the epoch it trained."""
    from helpers import only_run

    cfg = tiny_cfg(tmp_path, "trainer.max_steps=10")
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "valid_step/ppl")) == [3, 6, 9, 10]
    assert re.search(r"lstm-text_files: \d+% of epoch 1 \(10 steps\)", capsys.readouterr().out)


def test_how_long_names_whole_epochs_and_the_share_of_the_last():
    from lmbench.training.result import FitResult

    said = {s: FitResult(steps=s, steps_per_epoch=1327).how_long() for s in (400, 1327, 2654, 3000)}
    assert said == {
        400: "30% of epoch 1 (400 steps)", 1327: "1 epoch (1,327 steps)", 2654: "2 epochs (2,654 steps)",
        3000: "2 epochs + 26% of epoch 3 (3,000 steps)",
    }
    assert FitResult(epochs=1).how_long() == "counted"
