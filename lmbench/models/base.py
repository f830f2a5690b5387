"""The contract every model family honours, so that all are measured the same way.

Scoring convention (shared by every family and relied on by the evaluator):
  `score(ids)` returns the natural-log probability of *every* token of `ids`, in order, each
  predicted exactly once. The stream is taken as starting right after a sentence boundary: the
  context of `ids[0]` is a lone end-of-sentence token, as if a previous sentence had just ended.
  End-of-sentence tokens inside `ids` are predicted like any other token.

Two ways to train:
  * `CountingModel.fit(ids)`: estimated in one pass from the training ids (the n-gram family).
  * Neural families are Keras models that the common trainer fits by gradient descent; they add
    `initial_state`/`call(inputs, state, training)` (see `lmbench/models/neural.py`).

Optional capabilities are declared on `ModelBase`, which every family subclasses, with the
defaults of a model that lacks them; the trainer and the run read them, never probe with hasattr:
`tunes_on_valid` + `tune(valid ids)` (called right after `fit`; the interpolated family fits its
mixture weights there), `exports_arpa` + `to_arpa` (the n-gram family), `context` (the most tokens an
attention model sees), `eval_method` (how scoring gives each token its context, when that is not
plain), `lineage_tags()` (the runs a model is made of), `flops_per_token(context, training)` (the
FLOPs a network computes per token, counted from its architecture; None for a model that computes
no floating-point work worth counting: the n-gram counts and looks up).

Generation, one token at a time: `model.stepper(prompt)` returns a `Stepper`, the model's next-token
distribution given everything read so far, and `sample_tokens` draws from one. Every family has
one, so a model made of other models (the interpolated family) can sample from their mixture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from lmbench.errors import ConfigError

# Called as progress(n_tokens, nats) after each chunk: the number of tokens just processed and, when
# scoring, the sum of their -log p (so the bar can show a running perplexity); nats may be None.
Progress = Callable[..., None]


@runtime_checkable
class LanguageModel(Protocol):
    family: str  # "ngram", "lstm", "transformer", ...
    vocab_size: int

    def score(
        self, ids: np.ndarray, *, batch_size: int | None = None, progress: Progress | None = None
    ) -> np.ndarray:
        """float64 log-probabilities (nats), one per token of `ids`.

        `batch_size` is how many streams a model may score in parallel (trainer.eval_batch_size);
        a model that does not batch ignores it."""
        ...

    def generate(
        self,
        prompt: np.ndarray,
        n_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        top_p: float | None = None,
    ) -> np.ndarray:
        """`n_tokens` ids sampled after `prompt` (which may be empty)."""
        ...

    def save(self, folder: str | Path) -> None:
        """Write everything `load` needs into `folder`."""
        ...

    def num_params(self) -> int:
        """Trainable parameters (for the n-gram: stored probabilities and back-off weights)."""
        ...


class Stepper(Protocol):
    """A model reading a token stream (the prompt after a lone end-of-sentence token) one token
    at a time."""

    def next_logits(self) -> np.ndarray:
        """[vocab_size] log-probabilities of the next token, up to one additive constant."""
        ...

    def append(self, token: int) -> None:
        """Read one more token."""
        ...


@runtime_checkable
class CountingModel(LanguageModel, Protocol):
    def fit(self, ids: np.ndarray, *, progress: Progress | None = None) -> dict[str, float]:
        """Estimate from training ids; return statistics worth logging (e.g. n-gram counts)."""
        ...


def check_sampling(temperature: float, top_k: int | None, top_p: float | None = None) -> None:
    """Shared validation of generation arguments (temperature 0: greedy)."""
    if not temperature >= 0:  # NaN fails too
        raise ConfigError(f"temperature must be >= 0 (0: greedy, always the likeliest token), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 (or null for no cut), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1] (or null for no cut), got {top_p}")


def nucleus(p: np.ndarray, top_p: float) -> np.ndarray:
    """The smallest set of tokens whose probabilities `p` (summing to 1) reach `top_p`, as a mask
    (Holtzman et al. 2020): the likeliest first; a tie at the edge goes to the lower id."""
    order = np.argsort(-p, kind="stable")
    mass = np.cumsum(p[order])
    keep = min(len(p), int(np.searchsorted(mass, top_p * mass[-1], side="left")) + 1)
    mask = np.zeros(len(p), dtype=bool)
    mask[order[:keep]] = True
    return mask


def sample_next(
    logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int | None, top_p: float | None = None
) -> int:
    """One token drawn from softmax(logits / temperature), restricted to the top_k largest, then to
    the nucleus of mass top_p; temperature 0 is greedy: the likeliest token (the lowest id of a tie),
    no draw."""
    last = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(last))
    last = last / temperature
    if top_k is not None and top_k < len(last):
        cut = np.partition(last, -top_k)[-top_k]
        last = np.where(last >= cut, last, -np.inf)
    p = np.exp(last - last.max())
    p /= p.sum()
    if top_p is not None and top_p < 1:
        p = np.where(nucleus(p, top_p), p, 0.0)
        p /= p.sum()
    return int(rng.choice(len(p), p=p))


def sample_tokens(
    stepper: Stepper, n_tokens: int, *, temperature: float, top_k: int | None, seed: int | None,
    top_p: float | None = None,
) -> np.ndarray:
    """`n_tokens` ids drawn one after the other from `stepper` (arguments checked by the caller
    with `check_sampling`, before it builds the stepper)."""
    rng = np.random.default_rng(seed)
    out = np.empty(n_tokens, dtype=np.int64)
    for i in range(n_tokens):
        out[i] = sample_next(stepper.next_logits(), rng, temperature, top_k, top_p)
        if i + 1 < n_tokens:
            stepper.append(int(out[i]))
    return out


class SteppedGeneration:
    """`generate` for a model with `stepper(prompt)`: one sampling loop (`sample_tokens`) for every
    family; a family only says how it reads the next token."""

    def generate(
        self,
        prompt: np.ndarray,
        n_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        top_p: float | None = None,
    ) -> np.ndarray:
        """`n_tokens` ids sampled after `prompt` (which may be empty): temperature 0 is greedy,
        `top_k` keeps the k likeliest tokens, `top_p` the smallest set with mass >= p."""
        check_sampling(temperature, top_k, top_p)
        return sample_tokens(
            self.stepper(prompt), n_tokens, temperature=temperature, top_k=top_k, seed=seed, top_p=top_p
        )


class ModelBase(SteppedGeneration):
    """What every family inherits: one `generate` (`SteppedGeneration`), and the optional
    capabilities with the values of a model that lacks them. A family that has one overrides it."""

    family: str = "model"  # "ngram", "lstm", "transformer", ...: the run's tag and the report's column
    context: int | None = None  # the most tokens of history the model reads; None: no limit
    eval_method: str | None = None  # how scoring gives each token its context, when not plain
    tunes_on_valid: bool = False  # `tune` is to run on the validation split after `fit`
    exports_arpa: bool = False  # `to_arpa` writes the model as an ARPA file
    # A network (`NeuralLM`: Keras, trained by gradient descent). Declared on the class, so that a run
    # knows from its config's `_target_` whether it needs TensorFlow before it imports any of it.
    is_network: bool = False

    def tune(self, ids: np.ndarray, *, batch_size: int, progress: Progress | None = None) -> dict[str, float]:
        """Fit what is fitted on validation ids (after `fit`); statistics worth logging."""
        raise NotImplementedError(f"a {self.family} model has nothing to tune")

    def to_arpa(self, path: str | Path, tokens: list[str]) -> None:
        """Write the model as an ARPA back-off file, `tokens` naming the ids."""
        raise NotImplementedError(f"a {self.family} model has no ARPA form")

    def lineage_tags(self) -> dict[str, str]:
        """MLflow tags naming the runs this model is made of (the run adds them to its own)."""
        return {}

    def flops_per_token(self, context: int | None = None, training: bool = True) -> float | None:
        """FLOPs per token of a training step (`training`) or of `score` (see `NeuralLM`'s); None:
        the model does no dense arithmetic to count (the n-gram's rate is its tokens/s)."""
        return None


def family_of(model: object) -> str:
    """The family name of a model (of a class that does not inherit ModelBase: its class name)."""
    return getattr(model, "family", None) or type(model).__name__.lower()
