"""Comparison report: runs from MLflow as one table, paired intervals and plots.

    lmbench-report --parent RUN_ID            # the child runs of a sweep; also logged to the parent
    lmbench-report --experiment lmbench       # the finished runs of an experiment
    lmbench-report --filter "tags.lmbench.dataset = 'ptb'"
    lmbench-report --experiment quick --pair lstm transformer    # one more paired interval

Runs that differ only in their seed are one row: the mean ± sd of its runs (cli/groups.py). Every
row is compared with the best by test bits/char (and any `--pair`) by a paired bootstrap over the
test split's lines (cli/pairs.py, lmbench/stats.py), and a sentence says which differences are
significant at 95 %: the last line of the Markdown, on report.html and in the parent's description.

Writes `comparison.md`, `comparison.csv`, the plots (lmbench/cli/plots.py) and `report.html` (the
table, the notes and every plot on one self-contained page) into --out, and prints the Markdown
table. With --parent, the folder is logged to the parent run under `report/`, and the MLflow UI link
lmbench prints for a sweep opens `report/report.html` in the run's artifact view: the comparison on
the first screen (the parent's description is cut after two rows under "Show more").
The selectors combine; the store is --tracking-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db.

Runs are read through lmbench.tracking (the one module that imports MLflow) as plain records.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from lmbench import names, stats, tracking
from lmbench.cli import html_report, pairs, scaling
from lmbench.cli.groups import SPREAD, Row, ranked_by, table_rows
from lmbench.errors import exit_with

REPORT_HTML = "report.html"
REPORT_PAGE = f"report/{REPORT_HTML}"  # on a sweep's parent run: the page lmbench's UI link opens

COLUMNS = (  # (csv header, markdown header)
    ("run", "run"), ("family", "family"), ("model", "model"), ("settings", "settings"), ("n", "n"),
    ("params", "params"), ("tokenizer", "tokenizer"), ("dataset", "dataset"), ("valid_ppl", "valid ppl"),
    ("test_ppl", "test ppl"), ("test_word_ppl", "test word ppl"), ("test_bpc", "test bits/char"),
    ("train_s", "train time (s)"), ("tokens_per_s", "tokens/s"),
)
@dataclass
class Diverged:
    """A run the divergence guard ended: it has no figures to rank, only what went wrong."""

    run: str
    model: str
    at: str  # the step; or where else it diverged ("scoring": a token scored with probability 0)
    error: str  # the paragraph the run's user was shown (what to try)

    @classmethod
    def of(cls, r: tracking.RunRecord) -> Diverged:
        model = r.tags.get(names.MODEL, r.tags.get(names.FAMILY, "?"))
        return cls(r.name, model, r.tags[names.DIVERGED], r.tags.get(names.ERROR, ""))

    def said(self) -> str:
        return f"{self.run} ({self.model}) diverged " + (f"at step {self.at}" if self.at.isdigit() else f"in {self.at}")


@dataclass
class Comparison:
    rows: list[Row]  # finished runs grouped by seed, by test perplexity
    notes: list[str]
    diverged: list[Diverged]
    pairing: pairs.Pairing | None = None  # from the runs' token scores: intervals and the sentence


def compare(runs: list[tracking.RunRecord]) -> Comparison:
    """Finished runs grouped by seed and sorted by test ppl (bits/char across tokenizers), with notes on
    what not to compare. The paired intervals need the runs' token scores: `write_report` adds them."""
    runs = [r for r in runs if r.tags.get(names.ROLE) != "sweep" and r.tags.get(names.KIND) != "evaluation"]
    finished = [r for r in runs if r.status == "FINISHED"]
    rows = table_rows(finished)
    notes = []
    tokenizers = sorted({row.tokenizer for row in rows})
    if len(tokenizers) > 1:
        notes.append(
            f"Tokenizers differ ({', '.join(tokenizers)}): perplexities are per token of different units "
            "and are not comparable across them; compare test word ppl (per word of the raw text, whatever "
            "the tokenizer; runs logged before it have none) or test bits/char, by which the table is sorted."
        )
    datasets = sorted({row.dataset for row in rows})
    if len(datasets) > 1:
        notes.append(f"Datasets differ ({', '.join(datasets)}): compare runs within one dataset.")
    budget = _budget_note(finished) if any(row.family == "ngram" for row in rows) else None
    if budget:
        notes.append(budget)
    notes.extend(scaling.crossovers(scaling.series(rows)))  # runs of several training-data sizes
    diverged = [Diverged.of(r) for r in runs if _diverged(r)]
    if diverged:
        notes.append(f"Diverged, left out of the ranking: {'; '.join(d.said() for d in diverged)}. A diverged "
                     "run's lmbench.error tag says what to try.")
    left_out = [r for r in runs if r.status != "FINISHED" and not _diverged(r)]
    if left_out:
        listed = ", ".join(f"{r.name} ({r.status})" for r in left_out)
        notes.append(f"Not finished, left out: {listed}.")
    return Comparison(rows, notes, diverged)


def _diverged(r: tracking.RunRecord) -> bool:
    return r.status == "FAILED" and names.DIVERGED in r.tags


def _budget_note(runs: list[tracking.RunRecord]) -> str | None:
    """A warning, for a table with an n-gram, when networks were stopped before one epoch
    (trainer.max_steps): the n-gram has counted its whole training split, so the table compares
    budgets, not trained models."""
    short = []
    for r in runs:
        p = r.params
        try:
            steps, tokens = int(p["trainer.max_steps"]), int(p["data.train_tokens"])
            per_step = int(p["trainer.batch_size"]) * int(p["trainer.bptt"])
        except (KeyError, ValueError):
            continue  # no step limit (or an n-gram's "null"), or a run from before these params
        if r.tags.get(names.FAMILY) != "ngram" and steps * per_step < tokens:
            short.append(steps * per_step / tokens)
    if not short:
        return None
    return (
        f"Networks trained on {min(short):.0%}"
        + (f"-{max(short):.0%}" if max(short) > min(short) else "")
        + " of one epoch (trainer.max_steps) while the n-gram counted all of its training split: this ranks "
        "what each network learns on a small budget against a fully estimated n-gram, which leads such budgets; "
        "it does not rank trained models."
    )


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None or math.isnan(value) else format(value, spec)


def _params(n: float | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


# How each column is shown in Markdown; the numeric ones are right-aligned.
CELLS = {
    "params": _params,
    "valid_ppl": lambda v: _fmt(v, ".2f"),
    "test_ppl": lambda v: _fmt(v, ".2f"),
    "test_word_ppl": lambda v: _fmt(v, ".2f"),
    "test_bpc": lambda v: _fmt(v, ".4f"),
    "train_s": lambda v: _fmt(v, ".1f"),
    "tokens_per_s": lambda v: _fmt(v, ",.0f"),
}
NUMERIC = ("n", "params", "valid_ppl", "test_ppl", "test_word_ppl", "test_bpc", "train_s", "tokens_per_s")
# Columns shown only where a row has something in them.
OPTIONAL = {
    "settings": lambda r: bool(r.settings),
    "n": lambda r: r.n > 1,
    "test_word_ppl": lambda r: r.test_word_ppl is not None,
}
ALL_COLUMNS = tuple(name for name, _ in COLUMNS)
# The first screen of report.html, narrow enough for the MLflow UI's artifact pane (a third of a
# laptop's screen): what ranks the runs. Run names (the plots' legends) are in the full table below.
# Test word ppl joins them where tokenizers differ (ranking_columns).
RANKING_COLUMNS = ("family", "model", "n", "test_ppl", "test_bpc", "settings")
# The parent run's description in the MLflow UI, of which only a few lines show before "Show more".
DESCRIPTION_COLUMNS = ("family", "model", "settings", "n", "test_ppl", "test_bpc")


def _cell(r: Row, key: str) -> str:
    """A figure, as `mean ± sd` where the row is several seeds."""
    show = CELLS.get(key, str)
    text = show(getattr(r, key))
    return f"{text} ± {show(r.sd[key])}" if text and key in r.sd else text


def cells(c: Comparison, columns: tuple[str, ...]) -> tuple[list[str], list[list[str]], list[bool]]:
    """(headers, rows of formatted cells, which columns are numeric); the OPTIONAL columns only
    where a row has something in them."""
    headers = dict(COLUMNS)
    shown = [k for k in columns if k not in OPTIONAL or any(OPTIONAL[k](r) for r in c.rows)]
    rows = [[_cell(r, k) for k in shown] for r in c.rows]
    return [headers[k] for k in shown], rows, [k in NUMERIC for k in shown]


def ranking_columns(c: Comparison) -> tuple[str, ...]:
    """Where tokenizers differ, perplexities per token do not compare: test word ppl does."""
    if len({r.tokenizer for r in c.rows}) < 2:
        return RANKING_COLUMNS
    at = RANKING_COLUMNS.index("test_bpc")
    return (*RANKING_COLUMNS[:at], "test_word_ppl", *RANKING_COLUMNS[at:])


def _markdown_table(headers: list[str], rows: list[list[str]], numeric: list[bool]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "".join("---:|" if n else "---|" for n in numeric)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(c: Comparison, columns: tuple[str, ...] = ALL_COLUMNS) -> str:
    """The table, the notes, then the paired intervals and the sentence that ends the comparison."""
    headers, rows, numeric = cells(c, columns)
    lines = _markdown_table(headers, rows, numeric)
    if not rows:
        lines.append("| (no finished runs) |" + " |" * (len(headers) - 1))
    lines += [""] + [f"> {note}" for note in c.notes]
    if c.pairing is not None:
        if c.pairing.compared:
            lines += ["", *_markdown_table(*c.pairing.table())]
        lines += ["", f"**{c.pairing.head()}:** {c.pairing.verdict()}"]
    return "\n".join(lines)


def _counted(c: Comparison) -> str:
    runs = sum(r.n for r in c.rows)
    if not runs:
        return "no finished runs"
    grouped = f" in {len(c.rows)} rows (runs that differ only in seed: one row, mean ± sd)"
    by = "test bits/char (tokenizers differ)" if ranked_by(c.rows) == "test_bpc" else "test perplexity"
    return f"{runs} finished runs{grouped if runs > len(c.rows) else ''}, ranked by {by}, best first"


def html(c: Comparison, title: str, plots: list[Path]) -> str:
    """report.html: the ranking and the sentence first (the first screen in the MLflow UI), then
    the notes, the paired intervals, the diverged runs' paragraphs, the plots and every figure."""
    p = c.pairing
    return html_report.page(f"lmbench comparison: {title}", f"{_counted(c)}.", [
        html_report.table(*cells(c, ranking_columns(c))),
        html_report.verdict(p.head(), p.verdict()) if p else "",
        html_report.notes(c.notes),
        html_report.heading("Paired differences, 95 % intervals") + html_report.table(*p.table())
        if p and p.compared else "",
        html_report.explained([(d.said() + ":", d.error) for d in c.diverged if d.error]),
        html_report.images(plots),
        html_report.heading("Every figure"),
        html_report.table(*cells(c, ALL_COLUMNS)),
    ])


def description(c: Comparison, shown: int = 8) -> str:
    """The parent run's description: the ranking in a line or two (the UI shows about four lines
    before "Show more"), where the whole report is, then a compact table, the intervals and the
    sentence."""
    figure = ranked_by(c.rows)
    said = "Test bits/char" if figure == "test_bpc" else "Test perplexity"
    ranking = " · ".join(f"{r.label} {_cell(r, figure)}" for r in c.rows[:shown])
    more = f" · {len(c.rows) - shown} more" if len(c.rows) > shown else ""
    diverged = "".join(f"; {d.said()}" for d in c.diverged)
    return (f"**{said}, best first:** {ranking or 'no finished runs'}{more}{diverged}. "
            f"Table, notes and plots: Artifacts → `{REPORT_PAGE}`\n\n{markdown(c, DESCRIPTION_COLUMNS)}")


def table_columns(c: Comparison) -> dict[str, list]:
    """The table as columns (comparison.csv; MLflow's table artifact, which the UI's artifact view
    shows as a grid): a group's run ids space-separated, and the sd of each figure beside it."""
    columns = {"run_id": [" ".join(r.run_ids) for r in c.rows]}
    for name, _ in COLUMNS:
        columns[name] = [getattr(r, name) for r in c.rows]
        if name in SPREAD:
            columns[f"{name}_sd"] = [r.sd.get(name) for r in c.rows]
    return columns


def write_csv(c: Comparison, path: Path) -> None:
    columns = table_columns(c)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*(["" if v is None else v for v in values] for values in columns.values())))


def newest_per_job(runs: list[tracking.RunRecord]) -> list[tracking.RunRecord]:
    """Each job of a sweep once: a sweep launched again into its folder re-runs the jobs that had
    not finished, and a job without a checkpoint to resume from (an n-gram) gets a new run; its
    newest run (runs come newest first) stands for it. A search's trial is its own job: job numbers
    start again at every launch of a search, trial numbers never do."""
    seen, kept = set(), []
    for r in runs:
        trial = r.tags.get(names.TRIAL)
        job = (r.tags.get(names.SWEEP_ID), f"trial {trial}" if trial is not None else r.tags.get(names.JOB_NUM))
        if job[0] is None or job[1] is None or job not in seen:
            kept.append(r)
            seen.add(job)
    return kept


def write_report(
    uri: str,
    out: Path,
    *,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    filter_string: str | None = None,
    options: pairs.Options = pairs.DEFAULTS,
) -> str:
    """Write the tables, plots and report.html into `out`; with a parent run, log them to it under
    `report/` and describe it with the ranking. Returns the Markdown table. `options`: the paired
    bootstrap's resamples, seed and blocks, and the pairs asked for besides each row against the best."""
    from lmbench.cli import plots  # matplotlib loads only when a report is drawn, not with every lmbench

    runs = newest_per_job(tracking.find_runs(uri, experiment, parent_run_id, filter_string))
    for r in runs:  # runs logged before the per-window rate had its own name: the overall rate came last
        if names.TRAIN_TOKENS_PER_SEC in r.metrics:
            r.metrics[names.TRAIN_TOKENS_PER_SEC] = tracking.last_logged(uri, r.run_id, names.TRAIN_TOKENS_PER_SEC)
    c = compare(runs)
    if len(c.rows) > 1:
        c.pairing = pairs.pair(c.rows, pairs.load_scores(uri, [i for r in c.rows for i in r.run_ids]), options)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(c)
    (out / "comparison.md").write_text(table + "\n")
    write_csv(c, out / "comparison.csv")
    before = _pngs(out)
    plots.write_plots(uri, c.rows, out)
    drawn = [p for p, mtime in _pngs(out).items() if before.get(p) != mtime]  # not an earlier report's
    title = tracking.get_run(uri, parent_run_id).name if parent_run_id else experiment or filter_string or "runs"
    (out / REPORT_HTML).write_text(html(c, title, drawn))
    if parent_run_id:
        tracking.log_artifacts(uri, parent_run_id, out, "report")
        tracking.describe_run(uri, parent_run_id, description(c))
        tracking.log_table(uri, parent_run_id, table_columns(c), "report/comparison.json")
    return table


def report_hint(uri: str, parent_run_id: str) -> str:
    """Where a sweep's comparison is in the MLflow UI (the command that serves a local store, and the
    page): `report.html` in the parent run's artifact view, the table on the first screen."""
    experiment_id = tracking.get_run(uri, parent_run_id).experiment_id
    return tracking.ui_hint(uri, experiment_id, parent_run_id, REPORT_PAGE)


def _pngs(folder: Path) -> dict[Path, int]:
    """The folder's PNGs and when each was written, in the order they were."""
    found = {p: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    return dict(sorted(found.items(), key=lambda item: (item[1], item[0].name)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lmbench-report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experiment", help="MLflow experiment name (default: lmbench; the parent's with --parent; all with --filter)"
    )
    parser.add_argument("--parent", metavar="RUN_ID", help="a sweep's parent run: report its child runs")
    parser.add_argument(
        "--filter", metavar="FILTER", help="MLflow search filter, e.g. \"tags.lmbench.dataset = 'ptb'\""
    )
    parser.add_argument("--tracking-uri", help="store (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/<parent run, experiment or 'runs'>)")
    parser.add_argument(
        "--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
        help="also compare these two (a row's model, label or run name), besides every row against the best",
    )
    parser.add_argument("--resamples", type=int, default=stats.RESAMPLES,
                        help=f"bootstrap resamples, 1000-10000 (default {stats.RESAMPLES})")
    parser.add_argument("--seed", type=int, default=stats.SEED, help=f"the bootstrap's seed (default {stats.SEED})")
    parser.add_argument("--block-tokens", type=int, default=stats.BLOCK_TOKENS,
                        help=f"resample lines in blocks of at least this many tokens (default {stats.BLOCK_TOKENS})")
    args = parser.parse_args(argv)
    if not 1000 <= args.resamples <= 10000:
        parser.error(f"--resamples takes 1000 to 10000, not {args.resamples}")
    if args.block_tokens < 1:
        parser.error(f"--block-tokens takes a whole number >= 1, not {args.block_tokens}")
    options = pairs.Options(args.resamples, args.seed, args.block_tokens, tuple(map(tuple, args.pair)))
    uri = tracking.resolve_uri(args.tracking_uri, Path.cwd())
    if args.experiment is None and args.parent is None and args.filter is None:
        args.experiment = "lmbench"  # the default experiment of `lmbench`
    try:
        parent = tracking.get_run(uri, args.parent) if args.parent else None
        label = parent.name if parent else args.experiment or "runs"
        out = args.out or Path("reports") / re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        table = write_report(uri, out, experiment=args.experiment, parent_run_id=args.parent,
                             filter_string=args.filter, options=options)
    except Exception as ex:  # an unknown experiment or run id, a bad filter, an unreachable store, --pair
        exit_with("lmbench-report", ex)
    print(table.rstrip())
    print(f"\nWritten to {out}/ ({REPORT_HTML}: the table and plots on one page; comparison.md, comparison.csv, "
          "the plots as PNGs)")
    if parent:
        print(f"Logged to run {parent.run_id}; in the MLflow UI:\n  {report_hint(uri, parent.run_id)}")


if __name__ == "__main__":
    main()
