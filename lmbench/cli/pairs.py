"""A report's paired comparisons: 95 % intervals from the test split's token scores, and the sentence
that ends every comparison.

Each group of the table (runs that differ only in seed: cli/groups.py) is compared with the best
group by test bits/char, and so is any pair asked for (`lmbench-report --pair A B`), by the paired
bootstrap of lmbench/stats.py over the lines of the test split, on the per-token scores each run
logged as `token_scores/test.npz` (`scoring.TokenScores`). Only groups that scored the same token ids
(equal `ids_digest`, and the same raw lines) are paired: groups of another tokenizer or dataset are
compared with the best among themselves, and the sentence says why they are not with the best.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmbench import names, stats, tracking
from lmbench.errors import LmbenchError
from lmbench.scoring import TokenScores

SCORES = f"{names.TOKEN_SCORES}/{names.TEST}.npz"


@dataclass(frozen=True)
class Options:
    resamples: int = stats.RESAMPLES
    seed: int = stats.SEED
    block_tokens: int = stats.BLOCK_TOKENS
    pairs: tuple[tuple[str, str], ...] = ()  # asked for by name: a group's label, model or run


DEFAULTS = Options()


def load_scores(uri: str, run_ids: list[str]) -> dict[str, TokenScores | None]:
    """Each run's test scores; None for a run that logged none."""
    found: dict[str, TokenScores | None] = {}
    with tempfile.TemporaryDirectory(prefix="lmbench-scores-") as tmp:
        for i, run_id in enumerate(run_ids):
            path = tracking.run_artifact(uri, run_id, SCORES, Path(tmp) / str(i))
            try:
                found[run_id] = TokenScores.load(path) if path else None
            except LmbenchError as ex:  # the message names a temporary file: say whose it is
                raise LmbenchError(f"run {run_id}'s {SCORES}: {ex}") from None
    return found


@dataclass(frozen=True)
class Compared:
    better: str  # a group's label: the lower test bits/char on the split itself
    worse: str
    difference: stats.Difference  # worse minus better

    def said(self) -> str:
        d = self.difference.bpc
        if d.low > 0:
            return f"{self.better} beats {self.worse} by {_interval(d, ' bits/char')}"
        return f"{self.better} vs {self.worse}: not significant"


@dataclass
class Pairing:
    compared: list[Compared]
    notes: list[str]  # clauses: which groups have no interval (or one from fewer runs), and why
    options: Options
    seeds_drawn: bool  # a group of several seeds took part: the replicates drew seeds too

    def head(self) -> str:
        if not self.compared:
            return "No paired 95 % intervals"
        o = self.options
        seeds = "; the runs' seeds resampled too" if self.seeds_drawn else ""
        return (f"At 95 % (paired bootstrap over the test lines in blocks of >= {o.block_tokens} tokens, "
                f"{o.resamples:,} resamples, bootstrap seed {o.seed}{seeds})")

    def verdict(self) -> str:
        """The sentence after the head: what is significant, what is not, what could not be paired."""
        return "; ".join([c.said() for c in self.compared] + self.notes) + "."

    def table(self) -> tuple[list[str], list[list[str]], list[bool]]:
        headers = ["model", "beats", "by bits/char [95 %]", "by nats/token = log ppl [95 %]", "significant"]
        rows = [
            [c.better, c.worse, _interval(c.difference.bpc), _interval(c.difference.loss),
             "yes" if c.difference.bpc.low > 0 else "no"]
            for c in self.compared
        ]
        return headers, rows, [False, False, True, True, False]


def _interval(i: stats.Interval, unit: str = "") -> str:
    """`0.021 bits/char [0.015, 0.027]`: at least 3 decimals, and enough to show the width."""
    width = i.high - i.low
    decimals = min(6, max(3, 1 - math.floor(math.log10(width)))) if width > 0 else 3
    return f"{i.estimate:.{decimals}f}{unit} [{i.low:.{decimals}f}, {i.high:.{decimals}f}]"


def pair(rows: list, scores: dict[str, TokenScores | None], options: Options) -> Pairing:
    """Compare each group with the best of those that scored its token ids, and the pairs asked for.
    `rows`: the report's groups (label, run_ids, test_bpc, tokenizer, dataset)."""
    asked = [(find(rows, a), find(rows, b)) for a, b in options.pairs]
    notes: list[str] = []
    missing = [r for r in rows if all(scores.get(i) is None for i in r.run_ids)]
    if missing:
        notes.append(f"{_listed(missing)} logged no token scores (runs from before lmbench kept them, or "
                        "tracking.log_token_scores=false): no interval")
    kept, sets = {}, {}  # row's run_id -> its runs' scores; (ids digest, lines) -> the rows that scored them
    for r in rows:
        found = [scores[i] for i in r.run_ids if scores.get(i) is not None]
        why = _unusable(found) if found else None
        if why:
            notes.append(f"{r.label}: {why}")
        elif found:
            if len(found) < r.n:
                notes.append(f"{r.label}: {len(found)} of its {r.n} runs logged token scores, its interval those")
            kept[r.run_id] = found
            sets.setdefault(_scored(found[0]), []).append(r)
    boots = {key: _bootstrap(members, kept, options) for key, members in sets.items() if len(members) > 1}
    wanted = _against_the_best(list(sets.values()), notes)
    for a, b in asked:
        if {(a.run_id, b.run_id), (b.run_id, a.run_id)} & {(x.run_id, y.run_id) for x, y in wanted} or a is b:
            continue
        if a.run_id not in kept or b.run_id not in kept:
            notes.append(f"{a.label} vs {b.label}: no interval, not both have token scores of test lines")
        elif _scored(kept[a.run_id][0]) != _scored(kept[b.run_id][0]):
            notes.append(f"{a.label} vs {b.label}: not paired, they scored different token ids ({_differ(a, b)})")
        else:
            wanted.append((a, b))
    compared = [_compare(*boots[_scored(kept[a.run_id][0])], a, b) for a, b in wanted]
    seeds_drawn = any(len(kept[r.run_id]) > 1 for key in boots for r in sets[key])
    return Pairing(compared, notes, options, seeds_drawn)


def _against_the_best(sets: list[list], notes: list[str]) -> list[tuple]:
    """(leader, other) for every group but the leader of each set of groups that scored the same
    ids; the leader of a set other than the best one's: a clause saying why it is not paired."""
    def bpc(r) -> float:
        return r.test_bpc if r.test_bpc is not None else math.inf

    sets = [sorted(members, key=bpc) for members in sets]  # the sentence follows the ranking by bits/char
    leaders = [members[0] for members in sets]
    best = min(leaders, key=bpc, default=None)
    wanted = []
    for members, leader in zip(sets, leaders):
        wanted += [(leader, r) for r in members if r is not leader]
        if leader is best:
            continue
        among = f": compared with {leader.label}, the best of them" if len(members) > 1 else ""
        notes.append(f"{_listed(members)} scored other token ids than {best.label} "
                        f"({_differ(leader, best)}){among}")
    return wanted


def _bootstrap(members: list, kept: dict, options: Options) -> tuple[stats.PairedBootstrap, dict[str, int]]:
    """The replicates of one set of groups, and each group's place among them."""
    runs = [s for r in members for s in kept[r.run_id]]
    first = runs[0]
    split = stats.PairedSplit.of(
        [s.line_nats() for s in runs], np.diff(first.line_ends, prepend=0), first.line_chars, options.block_tokens
    )
    columns, start = [], 0
    for r in members:
        columns.append(list(range(start, start + len(kept[r.run_id]))))
        start += len(kept[r.run_id])
    boot = stats.PairedBootstrap(split, columns, options.resamples, options.seed)
    return boot, {r.run_id: i for i, r in enumerate(members)}


def _compare(boot: stats.PairedBootstrap, place: dict[str, int], a, b) -> Compared:
    i, j = place[a.run_id], place[b.run_id]
    b_minus_a = boot.difference(j, i)
    if b_minus_a.bpc.estimate >= 0:
        return Compared(a.label, b.label, b_minus_a)
    return Compared(b.label, a.label, boot.difference(i, j))


def _scored(s: TokenScores) -> tuple[str, bytes]:
    """What two runs must share to be paired line by line: the token ids and the raw lines."""
    return s.ids_digest, s.line_chars.tobytes()


def _unusable(found: list[TokenScores]) -> str | None:
    if len({_scored(s) for s in found}) > 1:
        return "its runs scored different token ids, so their seeds cannot be averaged line by line"
    if not found[0].by_line:
        return ("its test tokens do not follow the raw text's lines (no end-of-sentence token per line), "
                "so there are no lines to resample: no interval")
    return None


def _differ(a, b) -> str:
    if a.tokenizer != b.tokenizer:
        return f"tokenizer {a.tokenizer}, not {b.tokenizer}"
    if a.dataset != b.dataset:
        return f"dataset {a.dataset}, not {b.dataset}"
    return "the same tokenizer and dataset, another vocabulary or text"


def _listed(rows: list) -> str:
    return ", ".join(r.label for r in rows)


def find(rows: list, name: str):
    """The group `--pair` names: by its label, its model or one of its runs' names."""
    for match in (lambda r: r.label == name, lambda r: r.model == name, lambda r: name in r.run_names):
        found = [r for r in rows if match(r)]
        if len(found) == 1:
            return found[0]
        if found:
            raise LmbenchError(f"--pair {name} names {len(found)} groups ({_listed(found)}): name one of them")
    raise LmbenchError(f"--pair {name} names no group of this report; its groups: {_listed(rows)}")
