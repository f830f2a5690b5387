"""A search space written in Hydra's sweep grammar, as Optuna distributions.

The grammar is the one `lmbench -m` and Hydra's own Optuna sweeper read, so a space reads the same
in conf/hparams_search/*.yaml and on the command line:

    interval(0.0, 0.5)               a float, uniform            FloatDistribution(0.0, 0.5)
    tag(log, interval(2.0, 40.0))    a float, log-uniform        FloatDistribution(2.0, 40.0, log=True)
    tag(int, interval(1, 4))         an integer (log as well)    IntDistribution(1, 4)
    range(100, 400, 100)             integers 100, 200, 300      IntDistribution(100, 300, step=100)
    choice(sgd, adam) or sgd,adam    one of the values           CategoricalDistribution
    0.3                              not searched: a fixed override of every trial
"""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lmbench.errors import ConfigError

GRAMMAR = (
    "interval(low, high), tag(log, interval(low, high)), tag(int, interval(low, high)), "
    "range(start, stop, step), choice(a, b, ...) or a,b,..."
)


@dataclass(frozen=True)
class SearchSpace:
    distributions: dict[str, BaseDistribution]  # key -> what Optuna samples
    fixed: dict[str, str]  # key -> a value every trial gets as it is

    def overrides(self, params: dict[str, object]) -> list[str]:
        """The Hydra overrides of one trial: its sampled params, then the fixed values."""
        return [f"{key}={value}" for key, value in params.items()] + [f"{k}={v}" for k, v in self.fixed.items()]


def parse_space(params: dict[str, str], where: str = "hydra.sweeper.params") -> SearchSpace:
    """Each `key: spec` of `params` as a distribution (or a fixed value); a spec that is not in the
    grammar above, or an empty or reversed interval, is a ConfigError naming the key."""
    parser = OverridesParser.create()
    distributions, fixed = {}, {}
    for key, spec in params.items():
        text = f"{key}={spec}"
        try:
            override = parser.parse_override(text)
        except Exception as ex:  # Hydra's grammar errors: one line of what it could not read
            raise ConfigError(f"{where}: cannot read `{text}` ({str(ex).splitlines()[0]}); a search space is one of: "
                              f"{GRAMMAR}") from None
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
            continue
        distributions[key] = _distribution(override, text, where)
    if not distributions:
        raise ConfigError(f"{where} searches nothing: give at least one key a range, e.g. model.dropout: "
                          "interval(0.0, 0.5)")
    return SearchSpace(distributions, fixed)


def _distribution(override, text: str, where: str) -> BaseDistribution:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{where}: `{text}` {why}; a search space is one of: {GRAMMAR}")

    sweep = override.value()

    if isinstance(sweep, IntervalSweep):
        unknown = sweep.tags - {"log", "int"}
        if unknown:
            raise bad(f"has the unknown tag(s) {', '.join(sorted(unknown))} (known: log, int)")
        low, high, log = sweep.start, sweep.end, "log" in sweep.tags
        if not low < high:
            raise bad("is empty: the low end must be below the high end")
        if log and low <= 0:
            raise bad("is log-scaled, so its low end must be > 0")
        if "int" in sweep.tags:
            if low != int(low) or high != int(high):
                raise bad("is tagged int but its ends are not whole numbers")
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(low, high, log=log)
    if isinstance(sweep, RangeSweep):
        values = list(sweep.range())  # Hydra's range: the stop is left out, as in Python
        if not values:
            raise bad("holds no value")
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(values[0], values[-1], step=sweep.step)
        return FloatDistribution(values[0], values[-1], step=sweep.step)
    if isinstance(sweep, ChoiceSweep):
        values = list(override.sweep_string_iterator())  # as override text: what a trial passes on
        if len(set(values)) < 2:
            raise bad("offers fewer than two distinct choices")
        return CategoricalDistribution(values)
    raise bad(f"is a {type(sweep).__name__}, which Optuna cannot sample")
