"""The report's rows: which runs count as one contender, their figures, and their settings.

Runs that differ only in their seed are one group: the report shows their mean ± sd and the
paired intervals draw their seeds (lmbench/stats.py). Two runs are in one group when they have the
same family, model, dataset and tokenizer, the same logged parameters (the whole composed config)
and the same command-line overrides, leaving out the seed and what cannot change a result (where
the run was tracked, progress bars, caches). Leaving out too little only splits a group; merging
runs that differ in anything else would average different models, so the key errs that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmbench import names, stats, tracking

# Row attribute -> the metric it is the mean of, over a group's runs.
FIGURES = {
    "params": names.PARAMS,
    "valid_ppl": names.split_metric(names.BEST_VALID, names.PPL),
    "test_ppl": names.split_metric(names.TEST, names.PPL),
    "test_bpc": names.split_metric(names.TEST, names.BPC),
    "test_word_ppl": names.split_metric(names.TEST, names.WORD_PPL),
    "train_s": names.TRAIN_SECONDS,
    "train_flops": names.TRAIN_FLOPS,
    "tokens_per_s": names.TRAIN_TOKENS_PER_SEC,
}
SPREAD = ("valid_ppl", "test_ppl", "test_word_ppl", "test_bpc", "train_s")  # shown as mean ± sd where n > 1
SPREAD_PLOTTED = ("train_flops",)  # an sd kept for the plots only


@dataclass
class Row:
    """One row of the table: a run, or the runs that differ only in seed (their means; `sd`)."""

    run_id: str  # the first run's: the row's key (its colour in the plots)
    run: str  # the runs' names
    family: str
    model: str
    params: float | None
    tokenizer: str
    dataset: str
    valid_ppl: float | None
    test_ppl: float | None
    test_bpc: float | None
    train_s: float | None
    tokens_per_s: float | None
    overrides: dict[str, str]  # the job's command-line overrides (sweeps, searches); a group's merged
    settings: str = ""  # those of them that differ between the compared rows
    test_word_ppl: float | None = None  # runs logged before word_ppl have none
    train_flops: float | None = None  # a network's training FLOPs (train/flops)
    data_tokens: int | None = None  # the training split's tokens it had (data.train_tokens: a subset's)
    n: int = 1  # runs in the group
    sd: dict[str, float] = field(default_factory=dict)  # attribute -> sample sd over the runs (n > 1)
    run_ids: tuple[str, ...] = ()
    run_names: tuple[str, ...] = ()
    label: str = ""  # unique in the table: the model, or more where models repeat (labels)

    def __post_init__(self):
        self.run_ids = self.run_ids or (self.run_id,)
        self.run_names = self.run_names or (self.run,)
        self.label = self.label or self.model

    @classmethod
    def of(cls, runs: list[tracking.RunRecord]) -> Row:
        """A group of runs (`group_runs`); one run is a group of one."""
        first, t = runs[0], runs[0].tags
        family = t.get(names.FAMILY, "?")
        means, sd = {}, {}
        for attribute, metric in FIGURES.items():
            values = [r.metrics[metric] for r in runs if metric in r.metrics]
            if values:
                means[attribute], spread = stats.mean_sd(values)
                if spread is not None and (attribute in SPREAD or attribute in SPREAD_PLOTTED):
                    sd[attribute] = spread
        return cls(
            run_id=first.run_id,
            run=", ".join(r.name for r in runs),
            family=family,
            model=t.get(names.MODEL, family),  # the config-group choice, e.g. lstm_small
            tokenizer=t.get(names.TOKENIZER, "?"),
            dataset=t.get(names.DATASET, "?"),
            overrides=merged_overrides(runs),
            n=len(runs),
            sd=sd,
            run_ids=tuple(r.run_id for r in runs),
            run_names=tuple(r.name for r in runs),
            data_tokens=_int(first.params.get("data.train_tokens")),
            **{attribute: means.get(attribute) for attribute in FIGURES},
        )


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def ranked_by(rows: list[Row]) -> str:
    """The figure the table ranks rows by: test ppl, or test bits/char when the rows' tokenizers
    differ, whose perplexities count different units."""
    return "test_bpc" if len({row.tokenizer for row in rows}) > 1 else "test_ppl"


def table_rows(finished: list[tracking.RunRecord]) -> list[Row]:
    """The table's rows: the runs grouped by seed, sorted by test ppl -- by test bits/char when the
    rows' tokenizers differ, whose perplexities count different units (rows without the figure
    last) -- each with the settings that differ between rows and a label unique in the table."""
    rows = [Row.of(g) for g in group_runs(finished)]
    key = ranked_by(rows)
    rows.sort(key=lambda row: (getattr(row, key) is None, getattr(row, key) or 0.0))
    varying = varying_overrides(rows)
    for row in rows:
        row.settings = " ".join(f"{k}={setting(row.overrides[k])}" for k in varying if k in row.overrides)
    for row, label in zip(rows, labels(rows)):
        row.label = label
    return rows


# Parameters and override keys that say nothing about what a run learns.
INERT = ("seed", "cache_dir", "trainer.progress", "trainer.resume", "sweep.trial")
INERT_PREFIXES = ("tracking.", "hydra")

# Override keys a table's settings leave out: tracking says nothing about the model, and a preset's
# family choice (`+experiment/family=lstm`) or a model choice (`model=lstm`) is the family and model
# columns already.
SILENT_OVERRIDES = ("tracking.", "hydra", "experiment/family")
SILENT_KEYS = ("model", "sweep.trial")  # the model column says it; a trial number is no setting


def overrides(line: str) -> dict[str, str]:
    """key -> value of a run's overrides, without Hydra's +/++/~, booleans as typed (a sweeper
    writes `False` where the command line said `false`)."""
    pairs = (o.lstrip("+~").split("=", 1) for o in line.split() if "=" in o)
    return {k: v.lower() if v in ("True", "False") else v for k, v in pairs}


def _inert(key: str) -> bool:
    return key in INERT or key.startswith(INERT_PREFIXES)


def group_key(r: tracking.RunRecord) -> tuple:
    t = r.tags
    said = {k: v for k, v in overrides(t.get(names.OVERRIDES, "")).items() if not _inert(k)}
    params = {k: v for k, v in r.params.items() if not _inert(k)}
    return (
        t.get(names.FAMILY), t.get(names.MODEL), t.get(names.DATASET), t.get(names.TOKENIZER),
        tuple(sorted(said.items())), tuple(sorted(params.items())),
    )


def group_runs(runs: list[tracking.RunRecord]) -> list[list[tracking.RunRecord]]:
    """The runs in groups that differ only in seed, in the order each group first appears, each
    group by seed."""
    groups: dict[tuple, list[tracking.RunRecord]] = {}
    for r in runs:
        groups.setdefault(group_key(r), []).append(r)
    return [sorted(g, key=_seed) for g in groups.values()]


def _seed(r: tracking.RunRecord) -> tuple:
    seed = r.params.get("seed") or overrides(r.tags.get(names.OVERRIDES, "")).get("seed", "")
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def merged_overrides(runs: list[tracking.RunRecord]) -> dict[str, str]:
    """A group's overrides: each key once, with its runs' values joined by commas where they differ
    (`seed=1,2,3`), as Hydra's sweep would write them."""
    merged: dict[str, list[str]] = {}
    for r in runs:
        for k, v in overrides(r.tags.get(names.OVERRIDES, "")).items():
            if v not in merged.setdefault(k, []):
                merged[k].append(v)
    return {k: ",".join(values) for k, values in merged.items()}


def setting(value: str) -> str:
    """An override's value as the table shows it: a float at 4 significant digits (an Optuna trial's
    `optimizer.learning_rate=3.549789049598131` reads 3.55), anything else as written."""
    if "." not in value and "e" not in value.lower():
        return value  # an integer, a word, a list
    try:
        return format(float(value), ".4g")
    except ValueError:
        return value


def varying_overrides(rows: list) -> list[str]:
    """Override keys whose values differ between rows (what a sweep or a search varied), in the
    order they first appear, without the `+`/`++` Hydra needs to add a key."""
    keys = list(dict.fromkeys(
        k for row in rows for k in row.overrides if not k.startswith(SILENT_OVERRIDES) and k not in SILENT_KEYS
    ))
    return [k for k in keys if len({row.overrides.get(k) for row in rows}) > 1]


def labels(rows: list) -> list[str]:
    """A short name for each row, unique in the table, for the sentence and `--pair`: the model
    choice; where two rows share one, its settings, else its tokenizer and dataset, else its run."""
    def count(names_: list[str]) -> dict[str, int]:
        return {n: names_.count(n) for n in names_}

    chosen = [row.model for row in rows]
    for more in (lambda r: r.settings, lambda r: f"{r.tokenizer}, {r.dataset}", lambda r: r.run):
        seen = count(chosen)
        chosen = [f"{c} ({more(r)})" if seen[c] > 1 and more(r) else c for c, r in zip(chosen, rows)]
    return chosen
