"""InterpolatedLM: a linear mixture of already-built lmbench models.

    p(w | h) = sum_k weight_k * p_k(w | h)

Typically a KN-5 n-gram and an LSTM trained on the same corpus: the two err differently, and their
mixture beats both (Mikolov et al. 2011 on PTB). The components are models of any family over the
same ids (the same vocabulary); where they come from (runs, folders) is not this module's concern:
`lmbench.artifacts.interpolation` loads them and builds the mixture.

It trains like a counting model: `fit(train)` has nothing to do (the components are trained);
`tune(valid)`, which the trainer calls right after `fit`, scores the validation split once with
every component and fits the weights by EM, unless fixed `weights` were given. EM maximises the
mixture's validation log-likelihood, a concave function of the weights, so the tuned mixture is
never worse on valid than the best single component (a safeguard enforces this even when EM stops
before converging). Valid figures of the run are therefore slightly optimistic (K-1 numbers fitted
on valid); test figures are clean.

Scoring follows `lmbench.models.base`: each component scores the ids with its own `score` (neural
ones with the evaluator's batch size), and the mixture is a logsumexp over components of
log weight_k + log p_k. Generation samples from the mixture of the components' next-token
distributions (`base.Stepper`). `save` writes the weights and what the components are; the
components themselves are saved beside it by whoever saves the mixture (the bundle, with copies of
theirs), and handed back to `load`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lmbench.errors import ConfigError, DataError, reading_file
from lmbench.models.base import LanguageModel, ModelBase, Progress
from lmbench.models.mixture import MixtureStepper, em_weights, log_sum_exp, mixture_log_probs

FORMAT_VERSION = 1
META_FILE = "interpolated.json"
WEIGHT_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Origin:
    """Where a component came from, for messages, the run's tags and the saved mixture."""

    source: str  # as the user named it (run id, URI, folder)
    run_id: str | None = None
    family: str = "?"
    dataset: str | None = None
    folder: str | None = None  # its saved form on disk, for whoever saves the mixture (not saved)

    def describe(self) -> str:
        return f"{self.family}, run {self.run_id}" if self.run_id else f"{self.family}, {self.source}"


class _SharedProgress:
    """Reports the scoring of K components of one split as one pass over its tokens."""

    def __init__(self, progress: Progress | None, n_components: int):
        self.progress, self.n, self.done, self.reported = progress, n_components, 0, 0

    def __call__(self, n_tokens: int, nats: float | None = None) -> None:
        if self.progress is None:
            return
        self.done += n_tokens
        now = self.done // self.n
        if now > self.reported:
            self.progress(now - self.reported)
            self.reported = now


class InterpolatedLM(ModelBase):
    """Linear interpolation of built lmbench models (see the module docstring).

    components: at least two models over ids 0..vocab_size-1. weights: fixed mixture weights (>= 0,
    summing to 1), or None to fit them by EM on the validation split. em_tolerance (nats/token),
    em_max_iterations: when EM stops. origins: where each component came from (default: unnamed).
    """

    family = "interpolated"
    tunes_on_valid = True

    def __init__(
        self,
        vocab_size: int,
        eos_id: int,
        components: Sequence[LanguageModel],
        weights: Sequence[float] | None = None,
        em_tolerance: float = 1e-7,
        em_max_iterations: int = 1000,
        origins: Sequence[Origin] | None = None,
    ):
        self.vocab_size, self.eos_id = int(vocab_size), int(eos_id)
        self.parts = list(components)
        if len(self.parts) < 2:
            raise ConfigError(
                f"model.components has {len(self.parts)} model(s); an interpolation needs at least two, "
                "e.g. model.components=[<n-gram run id>,<LSTM run id>]"
            )
        self.origins = (
            list(origins) if origins is not None else [Origin(f"component {k}") for k in range(len(self.parts))]
        )
        self.fixed = weights is not None
        self.weights = check_weights(weights, len(self.parts)) if self.fixed else None
        if not em_tolerance > 0 or int(em_max_iterations) < 1:
            raise ConfigError(
                f"model.em_tolerance must be > 0 and model.em_max_iterations >= 1, got "
                f"{em_tolerance} and {em_max_iterations}"
            )
        self.em_tolerance, self.em_max_iterations = float(em_tolerance), int(em_max_iterations)
        for k, model in enumerate(self.parts):
            if model.vocab_size != self.vocab_size:
                raise ConfigError(
                    f"model.components[{k}] ({self.origins[k].describe()}) has vocab_size {model.vocab_size}; "
                    f"the mixture's is {self.vocab_size}"
                )
        self.stats: dict[str, float] = {}

    # ---- training: nothing to fit, weights tuned on valid -------------------------------------

    def fit(self, ids: np.ndarray, *, progress: Progress | None = None) -> dict[str, float]:
        """Nothing to estimate: the components are trained. (The counting path of the trainer.)"""
        if progress is not None:
            progress(len(ids))
        return {}

    def tune(
        self, ids: np.ndarray, *, batch_size: int | None = None, progress: Progress | None = None
    ) -> dict[str, float]:
        """Score the validation `ids` once with every component, fit the weights by EM (unless
        fixed), and return what to log: each component's valid ppl and the weights."""
        ids = np.asarray(ids)
        log_probs = self._component_log_probs(ids, batch_size, progress, range(len(self.parts)))
        hopeless = np.flatnonzero(~np.isfinite(log_probs).any(axis=0))
        if len(hopeless):
            raise DataError(
                f"every component gives probability 0 to validation token {int(hopeless[0])}: no mixture can score it"
            )
        with np.errstate(over="ignore"):  # a hopeless component's perplexity is inf
            stats = {f"interp/valid_ppl_{k}": float(np.exp(-lp.mean())) for k, lp in enumerate(log_probs)}
        if self.fixed:
            steps = 0
        else:
            self.weights, steps = em_weights(log_probs, self.em_tolerance, self.em_max_iterations)
        stats.update({f"interp/weight_{k}": float(w) for k, w in enumerate(self.weights)})
        stats["interp/em_steps"] = steps
        self.stats = stats
        return dict(stats)

    # ---- the contract ----------------------------------------------------------------------

    @property
    def mixture_weights(self) -> np.ndarray:
        """The weights in use: fixed, tuned, or equal until `tune` runs."""
        if self.weights is None:
            return np.full(len(self.parts), 1.0 / len(self.parts))
        return self.weights

    def score(self, ids: np.ndarray, *, batch_size: int | None = None, progress: Progress | None = None) -> np.ndarray:
        """log sum_k weight_k p_k(token), every token once; zero-weight components are not run."""
        ids = np.asarray(ids)
        weights = self.mixture_weights
        active = np.flatnonzero(weights > 0)
        log_probs = self._component_log_probs(ids, batch_size, progress, active)
        return mixture_log_probs(weights[active], log_probs)

    def _component_log_probs(
        self, ids: np.ndarray, batch_size: int | None, progress: Progress | None, which
    ) -> np.ndarray:
        """[len(which), len(ids)] log-probabilities of the components numbered in `which`."""
        which = list(which)
        shared = _SharedProgress(progress, len(which))
        out = np.empty((len(which), len(ids)), dtype=np.float64)
        for row, k in enumerate(which):
            logp = np.asarray(self.parts[k].score(ids, batch_size=batch_size, progress=shared), dtype=np.float64)
            if logp.shape != ids.shape:
                raise RuntimeError(
                    f"component {k} ({self.origins[k].describe()}) returned {logp.shape} log-probabilities "
                    f"for {len(ids)} tokens"
                )
            out[row] = logp
        return out

    def stepper(self, prompt: np.ndarray) -> MixtureStepper:
        """The mixture after reading a lone eos and `prompt` (see `base.Stepper`)."""
        weights = self.mixture_weights
        return MixtureStepper(
            [(math.log(weights[k]), self.parts[k].stepper(prompt)) for k in np.flatnonzero(weights > 0)]
        )

    def flops_per_token(self, context: int | None = None, training: bool = True) -> float | None:
        """Scoring (`training=False`): the sum of what the components that `score` runs compute per
        token (None when none of them counts FLOPs: n-grams only). Training: None, nothing is trained
        by gradient (`tune` scores the validation split once)."""
        if training:
            return None
        counted = [self.parts[k].flops_per_token(training=False) for k in np.flatnonzero(self.mixture_weights > 0)]
        counted = [f for f in counted if f is not None]
        return float(sum(counted)) if counted else None

    def num_params(self) -> int:
        """The components' parameters (the weights themselves are not counted)."""
        return int(sum(model.num_params() for model in self.parts))

    def lineage_tags(self) -> dict[str, str]:
        return {
            "lmbench.components": ",".join(o.run_id or o.source for o in self.origins),
            "lmbench.component_families": ",".join(o.family for o in self.origins),
        }

    # ---- persistence ------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """`interpolated.json`: the weights, EM settings and statistics, and each component's origin."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "weights": self.mixture_weights.tolist(),
            "fixed": self.fixed,
            "em_tolerance": self.em_tolerance,
            "em_max_iterations": self.em_max_iterations,
            "components": [{k: v for k, v in asdict(o).items() if k != "folder"} for o in self.origins],
            "stats": self.stats,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, components: Sequence[LanguageModel] = ()) -> InterpolatedLM:
        """The mixture saved in `folder`, over `components` (loaded by the caller, in order)."""
        path = Path(folder) / META_FILE
        if not path.is_file():
            raise DataError(f"{path} is missing: not a folder written by InterpolatedLM.save")
        with reading_file(path):
            meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path} has format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        keep = set(Origin.__dataclass_fields__) - {"folder"}  # a folder saved by older versions is stale
        origins = [Origin(**{k: v for k, v in c.items() if k in keep}) for c in meta["components"]]
        if len(components) != len(origins):
            raise DataError(f"{path} names {len(origins)} components; {len(components)} were given")
        model = cls(
            meta["vocab_size"],
            meta["eos_id"],
            components,
            weights=meta["weights"],
            em_tolerance=meta["em_tolerance"],
            em_max_iterations=meta["em_max_iterations"],
            origins=origins,
        )
        model.fixed, model.stats = bool(meta["fixed"]), dict(meta["stats"])
        return model


def check_weights(weights, n: int) -> np.ndarray:
    """Fixed mixture weights as given in the config, checked: n numbers >= 0 summing to 1."""
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
        raise ConfigError(f"model.weights must be a list of {n} numbers or null (fitted on valid), got {weights!r}")
    try:
        w = np.array([float(x) for x in weights], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"model.weights must be numbers, got {list(weights)!r}") from None
    if len(w) != n:
        raise ConfigError(f"model.weights has {len(w)} value(s) for {n} components; give one per component, or null")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ConfigError(f"model.weights must be finite and >= 0, got {w.tolist()}")
    if abs(w.sum() - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ConfigError(f"model.weights must sum to 1, got {w.tolist()} (sum {w.sum():.6g})")
    return w / w.sum()


__all__ = ["InterpolatedLM", "Origin", "check_weights", "em_weights", "log_sum_exp", "mixture_log_probs"]
