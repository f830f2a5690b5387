"""The report's view of runs that differ in how much training data they had (dataset.train_fraction,
dataset.max_train_tokens; `experiment=scaling`): one line per contender across sizes, and where
each network first beats the n-gram.

A series is the rows (seed groups, cli/groups.py) that share everything but the data size: the
same model, tokenizer, dataset and other settings. Its points are (training tokens of the subset,
its training FLOPs, test bits/char): the data size is the `data.train_tokens` parameter (the
subset's tokens, not the tokens trained on, which a network's epochs multiply), and the FLOPs are
the run's `train/flops` (a counting model has none). Only a report with at least one series of two
sizes or more has this view.

The crossover compares, at each size both have, a network's mean test bits/char with the n-gram's
(the series of the `ngram` family; where there are several, the one with most sizes): every size
trains on the same first lines and scores the same test ids, so the two figures are of the same
tokens. The sentence names the smallest size at which the network is lower, and says when it is not
lower at every larger size, or that it is not lower at any size of the range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmbench.cli.groups import Row

SIZE_KEYS = ("dataset.train_fraction", "dataset.max_train_tokens")
NGRAM = "ngram"


@dataclass
class Point:
    tokens: int  # the training subset's tokens (data.train_tokens)
    flops: float | None  # train/flops (mean over seeds); None for a counting model
    bpc: float  # test bits/char (mean over seeds)
    bpc_sd: float  # its sd over seeds (0 for one seed)
    flops_sd: float
    row: Row


@dataclass
class Series:
    name: str  # the model, and the settings that set it apart from other series
    family: str
    points: list[Point] = field(default_factory=list)  # by size

    def at(self, tokens: int) -> Point | None:
        return next((p for p in self.points if p.tokens == tokens), None)


def series(rows: list[Row]) -> list[Series]:
    """The rows as series over data sizes; [] unless some series has two sizes or more."""
    grouped: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.test_bpc is None or not row.data_tokens:
            continue
        settings = tuple(sorted((k, v) for k, v in row.overrides.items() if k not in SIZE_KEYS and k != "seed"))
        grouped.setdefault((row.family, row.model, row.tokenizer, row.dataset, settings), []).append(row)
    if not any(len({r.data_tokens for r in members}) > 1 for members in grouped.values()):
        return []
    names = _names(list(grouped))
    out = []
    for key, members in grouped.items():
        points = [
            Point(int(r.data_tokens), r.train_flops, r.test_bpc, r.sd.get("test_bpc", 0.0),
                  r.sd.get("train_flops", 0.0), r)
            for r in members
        ]
        out.append(Series(names[key], key[0], sorted(points, key=lambda p: p.tokens)))
    return out


def _names(keys: list[tuple]) -> dict[tuple, str]:
    """The model choice; where two series share it, also their settings, tokenizer and dataset."""
    models = [k[1] for k in keys]
    names = {}
    for key in keys:
        family, model, tokenizer, dataset, settings = key
        name = model
        if models.count(model) > 1:
            said = " ".join(f"{k}={v}" for k, v in settings if not k.startswith(("+experiment", "experiment")))
            name = f"{model} ({', '.join(x for x in (said, tokenizer, dataset) if x)})"
        names[key] = name
    return names


def reference(all_series: list[Series]) -> Series | None:
    """The n-gram series the networks are compared with: the one with most sizes."""
    ngrams = [s for s in all_series if s.family == NGRAM]
    return max(ngrams, key=lambda s: len(s.points)) if ngrams else None


def crossovers(all_series: list[Series]) -> list[str]:
    """One sentence per network series: the smallest size at which it beats the n-gram."""
    ngram = reference(all_series)
    if ngram is None:
        return []
    said = []
    for s in all_series:
        if s.family == NGRAM:
            continue
        shared = [(p, ngram.at(p.tokens)) for p in s.points if ngram.at(p.tokens) is not None]
        if not shared:
            continue
        wins = [p.tokens for p, q in shared if p.bpc < q.bpc]
        sizes = f"{shared[0][0].tokens:,}-{shared[-1][0].tokens:,}"
        if not wins:
            gap = min(p.bpc - q.bpc for p, q in shared)
            said.append(
                f"{s.name} beats {ngram.name} at no size of the range ({sizes} training tokens): its test "
                f"bits/char stays above, by {gap:.3f} at the closest."
            )
            continue
        first = wins[0]
        p, q = s.at(first), ngram.at(first)
        always = all(a.tokens in wins for a, _ in shared if a.tokens > first)
        said.append(
            f"{s.name} beats {ngram.name} from {first:,} training tokens on (test bits/char {p.bpc:.3f} against "
            f"{q.bpc:.3f})" + ("" if always else ", though not at every larger size") + f"; sizes tried: {sizes}."
        )
    if said:
        seeds = {p.row.n for s in all_series for p in s.points}
        said.append(
            "Crossovers compare mean test bits/char at equal training-data size"
            + (f" over {'/'.join(map(str, sorted(seeds)))} seeds" if seeds != {1} else " (one seed each)")
            + "; the paired intervals above say which single differences are significant."
        )
    return said
