"""Progress bars end on their final count, and a run cut short by max_steps says how much of the
epoch it trains."""

from __future__ import annotations

import re

from test_training import tiny_cfg

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
