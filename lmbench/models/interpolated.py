"""InterpolatedLM: a linear mixture of already-trained lmbench models.

    p(w | h) = sum_k weight_k * p_k(w | h)

Typically a KN-5 n-gram and an LSTM trained on the same corpus: the two err differently, and their
mixture beats both (Mikolov et al. 2011 on PTB). The components are any lmbench models, named by
what `lmbench.bundle.load_bundle` accepts (MLflow run ids, `runs:/<id>/model`, `models:/...`, run or
bundle folders), and must share the run's vocabulary exactly: ids mean the same tokens in all.

It trains like a counting model: `fit(train)` has nothing to do (the components are trained);
`tune(valid)`, which the trainer calls right after `fit`, scores the validation split once with
every component and fits the weights by EM, unless fixed `weights` were configured. EM maximises
the mixture's validation log-likelihood, a concave function of the weights, so the tuned mixture is
never worse on valid than the best single component (a safeguard enforces this even when EM stops
before converging). Valid figures of the run are therefore slightly optimistic (K-1 numbers fitted
on valid); test figures are clean.

Scoring follows `lmbench.models.base`: each component scores the ids with its own `score` (neural
ones with the evaluator's batch size), and the mixture is a logsumexp over components of
log weight_k + log p_k. Generation samples from the mixture of the components' next-token
distributions (`base.Stepper`). `save` copies every component's bundle inside the folder, so the
saved model is self-contained.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from lmbench.errors import ConfigError, DataError, LmbenchError
from lmbench.models.base import Progress, SteppedGeneration

FORMAT_VERSION = 1
META_FILE = "interpolated.json"
COMPONENTS_DIR = "components"
WEIGHT_SUM_TOLERANCE = 1e-6


def log_sum_exp(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """log(sum(exp(x))) along `axis`, exact for -inf entries (a zero weight) and all -inf rows."""
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def log_weights(weights: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(weights, dtype=np.float64))


def mixture_log_probs(weights: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
    """log sum_k weights[k] * exp(log_probs[k]), per column of the [K, T] `log_probs`."""
    return log_sum_exp(log_weights(weights)[:, None] + log_probs, axis=0)


def em_weights(
    log_probs: np.ndarray, tolerance: float = 1e-7, max_iterations: int = 1000
) -> tuple[np.ndarray, int]:
    """Mixture weights maximising the mean log-likelihood of [K, T] component log-probabilities.

    EM from equal weights: each step sets weight_k to the mean posterior of component k over the
    tokens. Stops when a step gains less than `tolerance` nats per token, or after
    `max_iterations` steps. Returns (weights, steps taken). If the best single component is still
    better (the optimum is at or near a corner and EM approaches it slowly), it gets weight 1."""
    n_components = log_probs.shape[0]
    weights = np.full(n_components, 1.0 / n_components)
    previous = -math.inf
    steps = 0
    while True:
        joint = log_weights(weights)[:, None] + log_probs
        total = log_sum_exp(joint, axis=0)
        likelihood = float(total.mean())
        if likelihood - previous < tolerance or steps >= max_iterations:
            break
        previous = likelihood
        weights = np.exp(joint - total).mean(axis=1)
        weights /= weights.sum()
        steps += 1
    singles = log_probs.mean(axis=1)
    best = int(np.argmax(singles))
    if singles[best] > likelihood:
        weights = np.eye(n_components)[best]
    return weights, steps


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


class InterpolatedLM(SteppedGeneration):
    """Linear interpolation of trained lmbench models (see the module docstring).

    components: model sources for `load_bundle` (at least two). weights: fixed mixture weights
    (>= 0, summing to 1), or None to fit them by EM on the validation split. tracking_uri,
    cache_dir: where run ids are looked up and downloaded models cached (the run passes its own).
    em_tolerance (nats/token), em_max_iterations: when EM stops. vocab: the run's vocabulary,
    supplied by lmbench; every component's must equal it (without it: the first component's, and
    vocab_size/eos_id must match it).
    """

    family = "interpolated"

    def __init__(
        self,
        vocab_size: int,
        eos_id: int,
        components: list[str],
        weights: list[float] | None = None,
        tracking_uri: str | None = None,
        cache_dir: str | None = None,
        em_tolerance: float = 1e-7,
        em_max_iterations: int = 1000,
        vocab=None,
    ):
        self.vocab_size, self.eos_id = int(vocab_size), int(eos_id)
        self.sources = self._check_sources(components)
        self.fixed = weights is not None
        self.weights = self._check_weights(weights, len(self.sources)) if self.fixed else None
        if not em_tolerance > 0 or int(em_max_iterations) < 1:
            raise ConfigError(
                f"model.em_tolerance must be > 0 and model.em_max_iterations >= 1, got "
                f"{em_tolerance} and {em_max_iterations}"
            )
        self.em_tolerance, self.em_max_iterations = float(em_tolerance), int(em_max_iterations)
        self.bundles = [self._load(k, s, tracking_uri, cache_dir) for k, s in enumerate(self.sources)]
        self.vocab = vocab if vocab is not None else self.bundles[0].vocab
        if len(self.vocab) != self.vocab_size or self.vocab.eos_id != self.eos_id:
            raise ConfigError(
                f"the components' vocabulary has {len(self.vocab)} tokens with end-of-sentence id "
                f"{self.vocab.eos_id}; the model was asked for {self.vocab_size} and {self.eos_id}"
            )
        for k, bundle in enumerate(self.bundles):
            self._check_component(k, bundle)
        self.run_ids = [b.source_run_id for b in self.bundles]
        self.stats: dict[str, float] = {}

    # ---- construction checks ----------------------------------------------------------------

    @staticmethod
    def _check_sources(components) -> list[str]:
        example = "e.g. model.components=[<n-gram run id>,<LSTM run id>]"
        if components is None or isinstance(components, (str, bytes)) or not hasattr(components, "__iter__"):
            raise ConfigError(
                f"model.components must be a list of at least two model sources, {example}; got {components!r}"
            )
        sources = [str(c) for c in components]
        if len(sources) < 2:
            raise ConfigError(
                f"model.components has {len(sources)} model(s); an interpolation needs at least two, {example}"
            )
        return sources

    @staticmethod
    def _check_weights(weights, n: int) -> np.ndarray:
        if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
            raise ConfigError(
                f"model.weights must be a list of {n} numbers or null (fitted on valid), got {weights!r}"
            )
        try:
            w = np.array([float(x) for x in weights], dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"model.weights must be numbers, got {list(weights)!r}") from None
        if len(w) != n:
            raise ConfigError(
                f"model.weights has {len(w)} value(s) for {n} components; give one per component, or null"
            )
        if not np.isfinite(w).all() or (w < 0).any():
            raise ConfigError(f"model.weights must be finite and >= 0, got {w.tolist()}")
        if abs(w.sum() - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ConfigError(f"model.weights must sum to 1, got {w.tolist()} (sum {w.sum():.6g})")
        return w / w.sum()

    @staticmethod
    def _load(k: int, source: str, tracking_uri: str | None, cache_dir: str | None):
        from lmbench.bundle import load_bundle

        try:
            return load_bundle(source, tracking_uri=tracking_uri, cache_dir=cache_dir)
        except LmbenchError as ex:
            raise ConfigError(f"model.components[{k}]={source!r} cannot be used: {ex}") from None

    def _check_component(self, k: int, bundle) -> None:
        where = f"model.components[{k}] ({self._describe(k, bundle)})"
        model = bundle.model
        if not callable(getattr(model, "score", None)):
            raise ConfigError(f"{where} is a {type(model).__name__}, which cannot score tokens")
        if bundle.vocab != self.vocab:
            tokenizer = str(bundle.meta.get("tokenizer", {}).get("_target_", "?")).rsplit(".", 1)[-1]
            raise ConfigError(
                f"{where} was trained with another vocabulary than this run's: "
                f"{vocabulary_difference(bundle.vocab, self.vocab)}. Interpolate models trained on "
                "the same dataset and tokenizer, and run with those (the component's: dataset="
                f"{bundle.meta.get('dataset', '?')}, tokenizer {tokenizer})"
            )
        if getattr(model, "vocab_size", self.vocab_size) != self.vocab_size:
            raise ConfigError(
                f"{where} is inconsistent: its model has vocab_size {model.vocab_size}, its vocabulary "
                f"{len(bundle.vocab)} tokens"
            )

    def _describe(self, k: int, bundle=None) -> str:
        bundle = bundle or self.bundles[k]
        run = bundle.source_run_id
        family = bundle.meta.get("family", "?")
        return f"{family}, run {run}" if run else f"{family}, {self.sources[k]}"

    # ---- training: nothing to fit, weights tuned on valid -------------------------------------

    def fit(self, ids: np.ndarray, *, progress: Progress | None = None) -> dict[str, float]:
        """Nothing to estimate: the components are trained. (The counting path of the trainer.)"""
        if progress is not None:
            progress(len(ids))
        return {}

    def tune(
        self, valid_ids: np.ndarray, *, batch_size: int | None = None, progress: Progress | None = None
    ) -> dict[str, float]:
        """Score `valid_ids` once with every component, fit the weights by EM (unless fixed), and
        return what to log: each component's valid ppl and the weights."""
        from lmbench.training.evaluation import perplexity

        ids = np.asarray(valid_ids)
        log_probs = self._component_log_probs(ids, batch_size, progress, range(len(self.bundles)))
        hopeless = np.flatnonzero(~np.isfinite(log_probs).any(axis=0))
        if len(hopeless):
            raise DataError(
                f"every component gives probability 0 to validation token {int(hopeless[0])}: no mixture can score it"
            )
        stats = {f"interp/valid_ppl_{k}": perplexity(-float(lp.mean())) for k, lp in enumerate(log_probs)}
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
            return np.full(len(self.bundles), 1.0 / len(self.bundles))
        return self.weights

    def score(
        self, ids: np.ndarray, *, batch_size: int | None = None, progress: Progress | None = None
    ) -> np.ndarray:
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
            logp = self.bundles[k].model.score(ids, batch_size=batch_size, progress=shared)
            logp = np.asarray(logp, dtype=np.float64)
            if logp.shape != ids.shape:
                raise RuntimeError(
                    f"component {k} ({self._describe(k)}) returned {logp.shape} log-probabilities "
                    f"for {len(ids)} tokens"
                )
            out[row] = logp
        return out

    def stepper(self, prompt: np.ndarray) -> "MixtureStepper":
        """The mixture after reading a lone eos and `prompt` (see `base.Stepper`)."""
        weights = self.mixture_weights
        parts = []
        for k in np.flatnonzero(weights > 0):
            model = self.bundles[k].model
            if not callable(getattr(model, "stepper", None)):
                raise ConfigError(
                    f"component {k} ({self._describe(k)}) cannot generate token by token (it has no stepper)"
                )
            parts.append((math.log(weights[k]), model.stepper(prompt)))
        return MixtureStepper(parts)

    def num_params(self) -> int:
        """The components' parameters (the weights themselves are not counted)."""
        return int(sum(b.model.num_params() for b in self.bundles))

    def lineage_tags(self) -> dict[str, str]:
        """MLflow tags naming the runs this model is made of (the run adds them to its own)."""
        return {
            "lmbench.components": ",".join(r or s for r, s in zip(self.run_ids, self.sources)),
            "lmbench.component_families": ",".join(str(b.meta.get("family", "?")) for b in self.bundles),
        }

    # ---- persistence ------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """`folder/components/<k>/`: a copy of each component's bundle; `interpolated.json`: the
        weights and where the components came from."""
        folder = Path(folder)
        (folder / COMPONENTS_DIR).mkdir(parents=True, exist_ok=True)
        described = []
        for k, bundle in enumerate(self.bundles):
            target = folder / COMPONENTS_DIR / str(k)
            if target.resolve() != Path(bundle.folder).resolve():
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(bundle.folder, target)
            described.append({
                "source": self.sources[k], "run_id": self.run_ids[k], "family": bundle.meta.get("family"),
                "dataset": bundle.meta.get("dataset"), "folder": f"{COMPONENTS_DIR}/{k}",
            })
        meta = {
            "format_version": FORMAT_VERSION, "vocab_size": self.vocab_size, "eos_id": self.eos_id,
            "weights": self.mixture_weights.tolist(), "fixed": self.fixed,
            "em_tolerance": self.em_tolerance, "em_max_iterations": self.em_max_iterations,
            "components": described, "stats": self.stats,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "InterpolatedLM":
        from lmbench.bundle import VOCAB_FILE
        from lmbench.data.vocab import Vocabulary

        folder = Path(folder)
        path = folder / META_FILE
        if not path.is_file():
            raise DataError(f"{path} is missing: not a folder written by InterpolatedLM.save")
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path} has format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        vocab = Vocabulary.load(folder / VOCAB_FILE) if (folder / VOCAB_FILE).is_file() else None
        model = cls(
            meta["vocab_size"], meta["eos_id"], components=[str(folder / c["folder"]) for c in meta["components"]],
            weights=meta["weights"], em_tolerance=meta["em_tolerance"], em_max_iterations=meta["em_max_iterations"],
            vocab=vocab,
        )
        model.fixed, model.stats = bool(meta["fixed"]), dict(meta["stats"])
        model.sources = [c["source"] for c in meta["components"]]
        model.run_ids = [c["run_id"] for c in meta["components"]]
        return model


class MixtureStepper:
    """Next-token log-probabilities of a mixture: log sum_k w_k p_k(. | history)."""

    def __init__(self, parts: list[tuple[float, object]]):
        self.parts = parts  # (log weight, the component's stepper)

    def next_logits(self) -> np.ndarray:
        rows = []
        for log_weight, stepper in self.parts:
            logits = np.asarray(stepper.next_logits(), dtype=np.float64)
            rows.append(log_weight + logits - log_sum_exp(logits))  # log w_k + log p_k(.)
        return log_sum_exp(np.stack(rows), axis=0)

    def append(self, token: int) -> None:
        for _, stepper in self.parts:
            stepper.append(token)


def vocabulary_difference(theirs, ours) -> str:
    """How the vocabulary `theirs` differs from `ours`, in a few words."""
    extra = [t for t in theirs.tokens if t not in ours.index]
    missing = [t for t in ours.tokens if t not in theirs.index]

    def some(tokens: list[str]) -> str:
        return ", ".join(repr(t) for t in tokens[:5]) + (", ..." if len(tokens) > 5 else "")

    parts = [f"it has {len(theirs)} tokens, this run's has {len(ours)}"]
    if extra:
        parts.append(f"{len(extra)} of its tokens are not in this run's ({some(extra)})")
    if missing:
        parts.append(f"{len(missing)} of this run's are not in its ({some(missing)})")
    if not extra and not missing:
        if (theirs.eos, theirs.unk) != (ours.eos, ours.unk):
            parts.append(
                f"its end-of-sentence/unknown tokens are {theirs.eos!r}/{theirs.unk!r}, "
                f"this run's {ours.eos!r}/{ours.unk!r}"
            )
        else:
            first = next(i for i, (a, b) in enumerate(zip(theirs.tokens, ours.tokens)) if a != b)
            parts.append(
                f"the same tokens with other ids (id {first} is {theirs.tokens[first]!r} in it, "
                f"{ours.tokens[first]!r} here)"
            )
    return "; ".join(parts)
