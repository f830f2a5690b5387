"""A search's settings (the `hydra.sweeper` node of lmbench's Optuna sweeper), checked in full
before anything is trained: an unknown pruner or sampler, a setting it does not take, a bad value or
a search-space spec outside the grammar is one paragraph (ConfigError), raised by `read_settings`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from lmbench.errors import ConfigError
from lmbench.search.space import SearchSpace, parse_space

PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class SearchSettings:
    study_name: str
    direction: str
    n_trials: int  # trials the study should hold finished (complete or pruned), over every launch
    n_jobs: int  # trials asked for and launched together (run in parallel by a parallel launcher)
    storage: str | None  # explicit Optuna storage; None: chosen from the tracking URI (storage.py)
    sampler: dict[str, Any]  # {"name": ..., its keyword arguments}
    pruner: dict[str, Any]
    space: SearchSpace

    def make_sampler(self, seed_offset: int = 0):
        """The sampler; a seed is moved on by `seed_offset` (the trials already in the study), so
        that a continued search does not draw its first points again."""
        kwargs = {k: v for k, v in self.sampler.items() if k != "name"}
        if kwargs.get("seed") is not None:
            kwargs["seed"] += seed_offset
        return SAMPLERS[self.sampler["name"]](**kwargs)

    def make_pruner(self):
        return PRUNERS[self.pruner["name"]](**{k: v for k, v in self.pruner.items() if k != "name"})


def read_settings(node: Mapping[str, Any], arguments: list[str] | tuple[str, ...] = ()) -> SearchSettings:
    """Settings from the sweeper's config node. `arguments` are the command line's overrides: one
    in the sweep grammar (`model.dropout=interval(0,0.3)`) adds to or replaces the node's `params`;
    a plain value (`model.dropout=0.2`) takes its key out of the search."""
    params = {str(k): str(v) for k, v in (node.get("params") or {}).items()}
    for argument in arguments:
        key, _, value = argument.partition("=")
        key = key.lstrip("+~")
        if is_sweep_argument(argument):
            params[key] = value
        else:
            params.pop(key, None)
    direction = str(node.get("direction"))
    if direction not in DIRECTIONS:
        raise ConfigError(f"hydra.sweeper.direction={direction!r}; valid: {', '.join(DIRECTIONS)}")
    for key in ("n_trials", "n_jobs"):
        if not isinstance(node.get(key), int) or node.get(key) < 1:
            raise ConfigError(f"hydra.sweeper.{key} must be a whole number >= 1, got {node.get(key)!r}")
    if not node.get("study_name"):
        raise ConfigError("hydra.sweeper.study_name is empty; a search's study is named after it")
    settings = SearchSettings(
        study_name=str(node["study_name"]),
        direction=direction,
        n_trials=int(node["n_trials"]),
        n_jobs=int(node["n_jobs"]),
        storage=node.get("storage"),
        sampler=_component("sampler", dict(node.get("sampler") or {"name": "tpe"}), SAMPLERS),
        pruner=_component("pruner", dict(node.get("pruner") or {"name": "none"}), PRUNERS),
        space=parse_space(params),
    )
    for make in (settings.make_sampler, settings.make_pruner):  # Optuna checks the values
        try:
            make()
        except (TypeError, ValueError) as ex:
            raise ConfigError(f"hydra.sweeper: {ex}") from None
    return settings


def _component(what: str, node: dict[str, Any], known: dict[str, type]) -> dict[str, Any]:
    name = node.get("name")
    if name not in known:
        raise ConfigError(
            f"hydra.sweeper.{what}.name={name!r} is not a {what} lmbench knows; valid: {', '.join(known)}"
        )
    # Settings of another pruner (sampler) are left out, so that `pruner.name=none` on the command
    # line needs no other change; a setting none of them takes is a typo.
    takes = set(inspect.signature(known[name]).parameters)
    anyone_takes = {p for cls in known.values() for p in inspect.signature(cls).parameters}
    unknown = sorted(set(node) - {"name"} - anyone_takes)
    if unknown:
        raise ConfigError(
            f"hydra.sweeper.{what}: the {name} {what} takes no {', '.join(unknown)}; it takes: "
            f"{', '.join(sorted(takes)) or 'nothing'}"
        )
    return {k: v for k, v in node.items() if k == "name" or k in takes}


def is_sweep_argument(argument: str) -> bool:
    """Whether a command-line override is a search range (`key=interval(0,1)`, `key=a,b`) rather
    than a plain value every trial gets."""
    _, sep, value = argument.partition("=")
    return bool(sep) and (value.startswith(("interval(", "tag(", "range(", "choice(")) or (
        "," in value and not value.startswith(("[", "{", "'", '"'))))
