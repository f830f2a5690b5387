"""The report's plots: every run in one colour across all of them.

    valid_ppl.png           validation perplexity per epoch        (log scale); when no run
                            validated at more than one epoch's end (runs shorter than an epoch,
                            e.g. experiment=quick), the per-step curves below instead, so that each
                            run is a line, not one dot
    valid_ppl_steps.png     validation perplexity per training step, for runs that validated
                            inside epochs (trainer.validate_every_n_steps); a run without steps
                            (the n-gram) is its level, a dashed line
    train_loss.png          training loss per logged step
    test_bpc.png            test bits/char, best first              (comparable across tokenizers)
    bpc_vs_params.png       test bits/char against parameters       the trade-offs families are
    bpc_vs_train_time.png   test bits/char against training time    compared for
    scaling_tokens.png      test bits/char against training-data    runs of several data sizes
                            tokens, one line per model              (cli/scaling.py)
    scaling_flops.png       ... against training FLOPs               (networks; the n-gram's levels)

Each point of the two trade-off plots carries its run's name, placed where it overlaps no other
name and no point. A row of several seeds (report.py) is drawn at its mean, with error bars of ±
one sd (a band along the training-loss curve). Files only (the Agg backend), also on machines
without a display.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    EngFormatter,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    ScalarFormatter,
)
from matplotlib.transforms import Bbox  # noqa: E402

from lmbench import names, stats, tracking
from lmbench.cli import scaling

DPI = 100
MARKER_SIZE = 60  # scatter points, in points squared


def colours(rows: list) -> dict[str, Any]:
    """One colour per run, by its place in the table, the same in every plot."""
    palette = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    return {r.run_id: palette(i % palette.N) for i, r in enumerate(rows)}


def write_plots(uri: str, rows: list, out: Path) -> None:
    c = colours(rows)
    per_epoch = histories(uri, rows, names.split_metric(names.VALID, names.PPL))
    per_step = histories(uri, rows, names.split_metric(names.VALID_STEP, names.PPL))
    # A run validates per epoch at each epoch's end: runs shorter than an epoch are one dot each
    # there, so valid_ppl.png shows their per-step curves where they have some.
    dots = all(len(h) <= 1 for h in per_epoch.values())
    stepped = any(per_step.values())
    if stepped:
        also = [out / "valid_ppl.png"] if dots else []
        _save(plot_valid_per_step(rows, per_step, c), out / "valid_ppl_steps.png", *also)
    if not (dots and stepped):
        hint = "\n(one point per run: trainer.validate_every_n_steps=N draws each run's curve)" if dots else ""
        valid = plot_curves(rows, per_epoch, c, "epoch", "validation perplexity", f"valid/ppl per epoch{hint}", True)
        _save(valid, out / "valid_ppl.png")
    train_loss = histories(uri, rows, names.TRAIN_LOSS)
    _save(plot_curves(rows, train_loss, c, "step", "training loss (nats/token)", f"{names.TRAIN_LOSS} per step", False),
          out / "train_loss.png")
    _save(plot_bpc(rows, c), out / "test_bpc.png")
    _save(plot_tradeoff(rows, "params", "parameters", c), out / "bpc_vs_params.png")
    _save(plot_tradeoff(rows, "train_s", "training time", c), out / "bpc_vs_train_time.png")
    lines = scaling.series(rows)
    if lines:  # runs of several training-data sizes (experiment=scaling)
        _save(plot_scaling(lines, "tokens"), out / "scaling_tokens.png")
        if any(p.flops for s in lines for p in s.points):
            _save(plot_scaling(lines, "flops"), out / "scaling_flops.png")


def plot_scaling(lines: list[scaling.Series], x: str) -> Figure:
    """Test bits/char against the training data's tokens (`x="tokens"`) or the training FLOPs
    (`x="flops"`), both log scale: one line per series, ± one sd over seeds as error bars. A counting
    model has no FLOPs: on the FLOPs plot the n-gram is a dashed level per size, labelled with it, and
    each network point names its data size."""
    palette = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8, 5))
    named: list[tuple[tuple[float, float], str]] = []  # (point, its data size), placed at the end
    for i, line in enumerate(lines):
        colour = palette(i % palette.N)
        points = line.points
        if x == "flops" and not any(p.flops for p in points):
            if line.family == scaling.NGRAM:
                for p in points:
                    ax.axhline(p.bpc, color=colour, linestyle="--", linewidth=0.8, alpha=0.6)
                    ax.annotate(f"{line.name}, {p.tokens:,} tok", (0.0, p.bpc), xycoords=("axes fraction", "data"),
                                xytext=(3, 2), textcoords="offset points", ha="left", va="bottom",
                                fontsize="x-small", color=colour)
            continue
        points = [p for p in points if x == "tokens" or p.flops]
        xs = [p.tokens if x == "tokens" else p.flops for p in points]
        ys = [p.bpc for p in points]
        style = "--" if line.family == scaling.NGRAM else "-"
        ax.plot(xs, ys, style, marker="o", color=colour, label=line.name)
        if x == "flops":  # which data size each point is: the line joins them by size, not by FLOPs
            size = EngFormatter(places=0, sep="")
            named += [((px, py), f"{size(p.tokens)} tok") for p, px, py in zip(points, xs, ys)]
        x_sd = [p.flops_sd for p in points] if x == "flops" else None
        if any(p.bpc_sd for p in points) or (x_sd and any(x_sd)):
            ax.errorbar(xs, ys, yerr=[p.bpc_sd for p in points], xerr=x_sd, fmt="none", ecolor=colour, capsize=3)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # ticks inside a decade too
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())
    what = "training tokens (the subset of the train split)" if x == "tokens" else "training FLOPs"
    ax.set(xlabel=f"{what}, log scale", ylabel="test bits per character (lower is better)",
           title=f"test bits/char against {'training data' if x == 'tokens' else 'training compute'}")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    if named:  # where no other name or point is (several sizes share one budget's FLOPs)
        place_labels(ax, [p for p, _ in named], [label for _, label in named])
    return fig


def histories(uri: str, rows: list, key: str) -> dict[str, list[tuple[int, float, float]]]:
    """row's run id -> (step, mean, sd) of what its runs logged under `key` at each step (sd 0 where
    one run logged it)."""
    curves = {}
    for r in rows:
        at: dict[int, list[float]] = {}
        for run_id in r.run_ids:
            for step, value in tracking.metric_history(uri, run_id, key):
                at.setdefault(step, []).append(value)
        curves[r.run_id] = [(step, *_mean_sd(at[step])) for step in sorted(at)]
    return curves


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean, sd = stats.mean_sd(values)
    return mean, sd or 0.0


def _spread(ax, xs, ys, sds, colour, band: bool = False) -> None:
    """± one sd around a row's curve or points where it is several seeds: bars, or for a dense
    curve a band."""
    if not any(sds):
        return
    if band:
        ax.fill_between(xs, [y - e for y, e in zip(ys, sds)], [y + e for y, e in zip(ys, sds)],
                        color=colour, alpha=0.2, linewidth=0)
    else:
        ax.errorbar(xs, ys, yerr=sds, fmt="none", ecolor=colour, capsize=3)


def _save(fig: Figure, *paths: Path) -> None:
    for path in paths:
        fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_valid_per_step(rows: list, curves: dict[str, list], colours: dict[str, Any]) -> Figure:
    """Validation perplexity against training steps: a line per run that validated in steps."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        if curves[r.run_id]:
            steps, values, sds = zip(*curves[r.run_id])
            ax.plot(steps, values, marker="o", label=_label(r), color=colours[r.run_id])
            _spread(ax, steps, values, sds, colours[r.run_id])
        elif r.valid_ppl is not None:  # counted, not trained in steps: its level
            ax.axhline(r.valid_ppl, linestyle="--", label=f"{_label(r)}, no steps", color=colours[r.run_id])
    _plain_log_y(ax)
    ax.set(xlabel="training step", ylabel="validation perplexity", title="validation perplexity per training step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_curves(
    rows: list, curves: dict[str, list], colours: dict[str, Any], xlabel: str, ylabel: str, title: str, log_y: bool
) -> Figure:
    """A metric's history, a line per run."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        if curves[r.run_id]:
            steps, values, sds = zip(*curves[r.run_id])
            few = len(steps) < 30
            ax.plot(steps, values, marker="o" if few else None, label=_label(r), color=colours[r.run_id])
            _spread(ax, steps, values, sds, colours[r.run_id], band=not few)
    if log_y:
        _plain_log_y(ax)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole numbers
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _plain_log_y(ax) -> None:
    ax.set_yscale("log")
    for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        set_formatter(ScalarFormatter())  # 150, not 1.5 x 10^2


def plot_tradeoff(rows: list, attribute: str, what: str, colours: dict[str, Any]) -> Figure:
    """Test bits/char (lower is better) against a cost (`params` or `train_s`), each run a named point."""
    points = [r for r in rows if r.test_bpc is not None and getattr(r, attribute)]
    seconds_per_unit, unit = time_unit([r.train_s for r in points]) if attribute == "train_s" else (1.0, "")
    xs = [getattr(r, attribute) / seconds_per_unit for r in points]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter(xs, [r.test_bpc for r in points], c=[colours[r.run_id] for r in points], s=MARKER_SIZE, zorder=3)
    for r, x in zip(points, xs):
        if r.sd.get("test_bpc") or r.sd.get(attribute):
            x_sd = r.sd.get(attribute, 0.0) / seconds_per_unit
            ax.errorbar(x, r.test_bpc, yerr=r.sd.get("test_bpc", 0.0), xerr=x_sd, fmt="none",
                        ecolor=colours[r.run_id], capsize=3, zorder=2)
    log_x = bool(xs) and max(xs) > 10 * min(xs)  # a log axis only where the costs span decades
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.5, 1, 2, 5, 10, ...
    # Parameters with SI prefixes (4.2M, not 4.2 x 10^6); times as plain numbers of one unit (0.5 s,
    # where an SI formatter writes "500m").
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}") if unit else EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(0.12)  # room for the names beside the outermost points
    xlabel = f"{what} ({unit})" if unit else what
    ax.set(
        xlabel=xlabel + (", log scale" if log_x else ""),
        ylabel="test bits per character (lower is better)",
        title=f"test bits/char against {what}",
    )
    ax.grid(True, alpha=0.3, which="both")
    fig.tight_layout()  # before the names are placed: it moves the axes, and with them the points
    place_labels(ax, list(zip(xs, [r.test_bpc for r in points])), [_label(r) for r in points])
    return fig


def time_unit(seconds: list[float]) -> tuple[float, str]:
    """(seconds per unit, unit) for a time axis: seconds up to 5 minutes, then minutes up to 5 hours."""
    longest = max(seconds, default=0.0)
    return (1.0, "s") if longest < 300 else (60.0, "min") if longest < 5 * 3600 else (3600.0, "h")


# Where a name may go around its point, in the order tried: each ring nearer first, and in a ring
# right, left, above, below, then the diagonals. A name beyond the first ring gets a line to its point.
DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))
PLACES = [(distance, d) for distance in (6, 16, 28, 42) for d in DIRECTIONS]  # distances in points
HA = {1: "left", 0: "center", -1: "right"}
VA = {1: "bottom", 0: "center", -1: "top"}


def place_labels(ax, points: list[tuple[float, float]], labels: list[str]) -> None:
    """Annotate each point (data coordinates) with its label at the first place where the label
    stays inside the axes and overlaps no point and no label placed before it; where none is left,
    at the last place tried. Call it once the figure's layout is final: it measures in pixels."""
    if not points:
        return
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    radius = math.sqrt(MARKER_SIZE) / 2 * fig.dpi / 72  # a marker's radius in pixels
    centres = ax.transData.transform(points)
    taken = [Bbox.from_bounds(x - radius, y - radius, 2 * radius, 2 * radius) for x, y in centres]
    for point, label in zip(points, labels):
        for distance, (dx, dy) in PLACES:
            note = ax.annotate(
                label, point, xytext=(dx * distance, dy * distance), textcoords="offset points",
                ha=HA[dx], va=VA[dy], fontsize="small",
                arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if distance > PLACES[0][0] else None,
            )
            note.update_positions(renderer)
            box = Text.get_window_extent(note, renderer)  # the name alone: an annotation's box spans its line
            free = _contains(inside, box) and not any(box.overlaps(other) for other in taken)
            if free or (distance, (dx, dy)) == PLACES[-1]:
                break
            note.remove()
        taken.append(box)


def _contains(outer: Bbox, inner: Bbox) -> bool:
    return outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0 and inner.y1 <= outer.y1


def _label(r) -> str:
    """A run's name; a row of several seeds, its label and how many."""
    return f"{r.label} ({r.tokenizer}, {r.n} seeds)" if r.n > 1 else f"{r.run} ({r.tokenizer})"


def plot_bpc(rows: list, colours: dict[str, Any]) -> Figure:
    scored = sorted((r for r in rows if r.test_bpc is not None), key=lambda r: r.test_bpc)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.4 * max(1, len(scored))))
    spread = [r.sd.get("test_bpc", 0.0) for r in scored]
    ax.barh([_label(r) for r in scored], [r.test_bpc for r in scored], color=[colours[r.run_id] for r in scored],
            xerr=spread if any(spread) else None, capsize=3)
    for i, (r, sd) in enumerate(zip(scored, spread)):
        said = f"{r.test_bpc:.3f}" + (f" ± {sd:.3f}" if sd else "")
        ax.annotate(said, (r.test_bpc + sd, i), xytext=(3, 0), textcoords="offset points", va="center")
    ax.invert_yaxis()  # best at the top
    ax.margins(x=0.15)  # room for the value labels
    ax.set(xlabel="test bits per character (lower is better)", title="test bits/char")
    fig.tight_layout()
    return fig
