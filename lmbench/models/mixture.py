"""The arithmetic of a linear mixture of language models, in log space.

    p(w | h) = sum_k weight_k * p_k(w | h)

`mixture_log_probs` mixes per-token log-probabilities, `em_weights` fits the weights that maximise a
split's likelihood, `MixtureStepper` mixes next-token distributions for generation.
"""

from __future__ import annotations

import math

import numpy as np


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
