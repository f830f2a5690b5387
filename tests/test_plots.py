"""The report's plots (lmbench/cli/plots.py), drawn from runs logged straight into a fresh MLflow
store and checked on the rendered figures: which points each line carries, where the names of the
trade-off plots land, what the time axis reads."""

from __future__ import annotations

from itertools import combinations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from mlflow import MlflowClient

from lmbench import tracking
from lmbench.cli import plots, report

# As `lmbench experiment=quick` leaves them (experiments/README.md): 30 % of an epoch, validated every
# 100 steps; the transformer and the LSTM have nearly the same size and bits/char.
QUICK = {  # name -> family, params, test bits/char, training seconds, valid ppl per 100 steps
    "interpolated-ptb-1": ("interpolated", 17.24e6, 1.2962, 10.0, []),
    "ngram-ptb-2": ("ngram", 3.84e6, 1.3083, 0.3, []),
    "rnn-ptb-3": ("rnn", 4.09e6, 1.4852, 25.9, [640.0, 435.0, 333.0, 289.7]),
    "transformer-ptb-4": ("transformer", 4.66e6, 1.4980, 37.4, [675.0, 460.0, 353.0, 307.1]),
    "lstm-ptb-5": ("lstm", 4.65e6, 1.5001, 38.8, [953.0, 650.0, 498.0, 433.3]),
}


def log_quick(tmp_path, epochs: int = 1, seconds: float = 1.0):
    """The runs of QUICK in a fresh store, each network validating `epochs` times per epoch and
    training `seconds` times as long: (store URI, the report's rows)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("quick", artifact_location=(tmp_path / "artifacts").as_uri())
    for name, (family, params, bpc, train_s, valid_steps) in QUICK.items():
        tags = {"lmbench.family": family, "lmbench.tokenizer": "word", "lmbench.dataset": "ptb"}
        run_id = client.create_run(exp, tags=tags, run_name=name).info.run_id
        for epoch in range(1, (epochs if valid_steps else 1) + 1):
            client.log_metric(run_id, "valid/ppl", (valid_steps or [150.0])[-1] / epoch, step=epoch)
        for step, ppl in zip((100, 200, 300, 400), valid_steps):
            client.log_metric(run_id, "valid_step/ppl", ppl, step=step)
        summary = {"test/bpc": bpc, "test/ppl": 2 ** (bpc * 4.5), "best_valid/ppl": 150.0, "model/params": params,
                   "time/train_s": train_s * seconds}
        for key, value in summary.items():
            client.log_metric(run_id, key, value, step=0)
        client.set_terminated(run_id, "FINISHED")
    return uri, report.compare(tracking.find_runs(uri, "quick")).rows


@pytest.fixture
def drawn(monkeypatch):
    """file name -> the figure write_plots saved under it (figures keep their artists once closed)."""
    figures = {}
    save = plots._save

    def keep(fig, *paths):
        figures.update({path.name: fig for path in paths})
        save(fig, *paths)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def rendered(fig):
    """`fig` drawn again as its file was (closing it took its canvas): its first axes and the renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return fig.axes[0], canvas.get_renderer()


def test_runs_shorter_than_an_epoch_are_lines_of_their_per_step_validation(tmp_path, drawn):
    uri, rows = log_quick(tmp_path)
    plots.write_plots(uri, rows, tmp_path)
    assert (tmp_path / "valid_ppl.png").read_bytes()[:4] == b"\x89PNG"
    ax = drawn["valid_ppl.png"].axes[0]
    assert ax.get_xlabel() == "training step"
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name, (_, _, _, _, valid_steps) in QUICK.items():
        line = lines[next(label for label in lines if label.startswith(name))]
        if valid_steps:  # a line through every logged point
            assert list(line.get_xdata()) == [100, 200, 300, 400] and list(line.get_ydata()) == valid_steps
        else:  # counted, not trained in steps: its level across the plot
            assert line.get_linestyle() == "--" and set(line.get_ydata()) == {150.0}


def test_runs_of_several_epochs_are_drawn_per_epoch(tmp_path, drawn):
    uri, rows = log_quick(tmp_path, epochs=3)
    plots.write_plots(uri, rows, tmp_path)
    ax = drawn["valid_ppl.png"].axes[0]
    assert ax.get_xlabel() == "epoch"
    rnn = next(line for line in ax.get_lines() if line.get_label().startswith("rnn-ptb-3"))
    assert list(rnn.get_xdata()) == [1, 2, 3] and list(rnn.get_ydata()) == pytest.approx([289.7, 144.85, 96.5667])
    assert drawn["valid_ppl_steps.png"].axes[0].get_xlabel() == "training step"  # still drawn per step too


@pytest.mark.parametrize("plot", ["bpc_vs_params.png", "bpc_vs_train_time.png"])
def test_every_point_is_named_and_no_name_covers_another_or_a_point(tmp_path, drawn, plot):
    uri, rows = log_quick(tmp_path)
    plots.write_plots(uri, rows, tmp_path)
    ax, renderer = rendered(drawn[plot])
    names = {text.get_text(): Text.get_window_extent(text, renderer) for text in ax.texts}
    assert sorted(names) == sorted(f"{name} (word)" for name in QUICK)
    for (a, box_a), (b, box_b) in combinations(names.items(), 2):
        assert not box_a.overlaps(box_b), f"{a!r} and {b!r} overlap"
    inside = ax.get_window_extent(renderer)
    [points] = ax.collections
    centres = ax.transData.transform(points.get_offsets())
    for name, box in names.items():
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, name
        assert not any(box.contains(x, y) for x, y in centres), f"{name!r} covers a point"


def test_training_time_ticks_are_plain_seconds_or_minutes(tmp_path, drawn):
    uri, rows = log_quick(tmp_path)
    plots.write_plots(uri, rows, tmp_path)
    ax, _ = rendered(drawn["bpc_vs_train_time.png"])
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ax.get_xlabel() == "training time (s), log scale"
    assert {"0.5", "1", "2", "5", "10", "20"} <= set(ticks), ticks  # not "500m"
    assert all(t.replace(".", "").isdigit() for t in ticks), ticks

    uri, rows = log_quick(tmp_path / "long", seconds=60.0)  # 18 s to 39 minutes
    plots.write_plots(uri, rows, tmp_path)
    ax, _ = rendered(drawn["bpc_vs_train_time.png"])
    assert ax.get_xlabel() == "training time (min), log scale"
    assert {"0.5", "1", "2", "5", "10", "20"} <= {t.get_text() for t in ax.get_xticklabels()}
