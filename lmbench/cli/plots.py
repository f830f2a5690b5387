"""The report's plots: every run in one colour across all of them.

    valid_ppl.png           validation perplexity per epoch        (log scale)
    valid_ppl_steps.png     validation perplexity per training step, for runs that validated
                            inside epochs (trainer.validate_every_n_steps); a run without steps
                            (the n-gram) is its level, a dashed line
    train_loss.png          training loss per logged step
    test_bpc.png            test bits/char, best first              (comparable across tokenizers)
    bpc_vs_params.png       test bits/char against parameters       the trade-offs families are
    bpc_vs_train_time.png   test bits/char against training time    compared for

Files only (the Agg backend), also on machines without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import EngFormatter, LogLocator, MaxNLocator, NullFormatter, ScalarFormatter  # noqa: E402

from lmbench import names, tracking


def colours(rows: list) -> dict[str, Any]:
    """One colour per run, by its place in the table, the same in every plot."""
    palette = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    return {r.run_id: palette(i % palette.N) for i, r in enumerate(rows)}


def write_plots(uri: str, rows: list, out: Path) -> None:
    c = colours(rows)
    valid_ppl = names.split_metric(names.VALID, names.PPL)
    plot_history(uri, rows, valid_ppl, out / "valid_ppl.png", "epoch", "validation perplexity", log_y=True, colours=c)
    plot_valid_per_step(uri, rows, out / "valid_ppl_steps.png", c)
    plot_history(
        uri,
        rows,
        names.TRAIN_LOSS,
        out / "train_loss.png",
        "step",
        "training loss (nats/token)",
        log_y=False,
        colours=c,
    )
    plot_bpc(rows, out / "test_bpc.png", c)
    plot_tradeoff(rows, "params", "parameters", out / "bpc_vs_params.png", c)
    plot_tradeoff(rows, "train_s", "training time (s)", out / "bpc_vs_train_time.png", c)


def plot_valid_per_step(uri: str, rows: list, path: Path, colours: dict[str, Any]) -> None:
    """Validation perplexity against training steps; written only when some run has such points."""
    key = names.split_metric(names.VALID_STEP, names.PPL)
    curves = {r.run_id: tracking.metric_history(uri, r.run_id, key) for r in rows}
    if not any(curves.values()):
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        if curves[r.run_id]:
            steps, values = zip(*curves[r.run_id])
            ax.plot(steps, values, marker="o", label=_label(r), color=colours[r.run_id])
        elif r.valid_ppl is not None:  # counted, not trained in steps: its level
            ax.axhline(r.valid_ppl, linestyle="--", label=f"{_label(r)}, no steps", color=colours[r.run_id])
    ax.set_yscale("log")
    for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        set_formatter(ScalarFormatter())
    ax.set(xlabel="training step", ylabel="validation perplexity", title="validation perplexity per training step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_tradeoff(rows: list, attribute: str, xlabel: str, path: Path, colours: dict[str, Any]) -> None:
    """Test bits/char (lower is better) against a cost, each run a labelled point."""
    points = [r for r in rows if r.test_bpc is not None and getattr(r, attribute)]
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in points:
        x = getattr(r, attribute)
        ax.scatter([x], [r.test_bpc], color=colours[r.run_id], s=60, label=_label(r), zorder=3)
        ax.annotate(r.model, (x, r.test_bpc), xytext=(5, 4), textcoords="offset points", fontsize="small")
    xs = [getattr(r, attribute) for r in points]
    log_x = bool(xs) and max(xs) > 10 * min(xs)  # a log axis only where the costs span decades
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.5, 1, 2, 5, 10, ...
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 4.2M and 10 (s), not 4.2 x 10^6
    ax.xaxis.set_minor_formatter(NullFormatter())
    if points:
        ax.legend(fontsize="small")
    ax.set(
        xlabel=xlabel + (" (log scale)" if log_x else ""),
        ylabel="test bits per character (lower is better)",
        title=f"test bits/char against {xlabel}",
    )
    ax.grid(True, alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _label(r) -> str:
    return f"{r.run} ({r.tokenizer})"


def plot_history(
    uri: str, rows: list, key: str, path: Path, xlabel: str, ylabel: str, log_y: bool, colours: dict[str, Any]
) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        history = tracking.metric_history(uri, r.run_id, key)
        if history:
            steps, values = zip(*history)
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, label=_label(r), color=colours[r.run_id])
    if log_y:
        ax.set_yscale("log")
        for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_formatter(ScalarFormatter())  # 150, not 1.5 x 10^2
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole numbers
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{key} per {xlabel}")
    ax.grid(True, alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_bpc(rows: list, path: Path, colours: dict[str, Any]) -> None:
    scored = sorted((r for r in rows if r.test_bpc is not None), key=lambda r: r.test_bpc)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.4 * max(1, len(scored))))
    ax.barh([_label(r) for r in scored], [r.test_bpc for r in scored], color=[colours[r.run_id] for r in scored])
    for i, r in enumerate(scored):
        ax.annotate(f"{r.test_bpc:.3f}", (r.test_bpc, i), xytext=(3, 0), textcoords="offset points", va="center")
    ax.invert_yaxis()  # best at the top
    ax.margins(x=0.15)  # room for the value labels
    ax.set(xlabel="test bits per character (lower is better)", title="test bits/char")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
