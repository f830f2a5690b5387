"""The divergence guard: a network whose training loss is not finite, or is still worse than a
uniform guess over the vocabulary (above 1.05 ln |V| nats per token) once
`trainer.divergence_grace_steps` have passed, is stopped with `TrainingDiverged`; `explain` turns
that into the one paragraph the user reads (the step, the loss, the recipe the run used and what
to try). The run ends FAILED and tagged `lmbench.diverged` (training/run.py); a sweep goes on and
its report lists it as diverged.

Any recipe that learns at all is well below ln |V| within a few dozen steps (the 2 x 200 presets on
PTB, each on its recipe: 6.6-6.8 nats against ln 10,000 = 9.21 at step 100, the Transformer still
warming up), so the check never stops a slow learner; a
blown-up one (a tanh RNN at SGD lr 20: 18-80 nats) is stopped after the grace period instead of
training on and reporting a perplexity of a billion.
"""

from __future__ import annotations

import math
from collections import deque

from omegaconf import DictConfig

from lmbench.errors import TrainingDiverged

WINDOW = 20  # steps whose mean loss is compared with ln |V|: one noisy step never ends a run
# How far above ln |V| counts as worse than uniform: a model that has not learned yet (a tiny
# learning rate, a long warm-up) sits a hair above it from its random start, and is slow, not broken.
MARGIN = 1.05


class DivergenceGuard:
    """Checks every step's loss (`check`); raises `TrainingDiverged` with the facts."""

    def __init__(self, vocab_size: int, grace_steps: int | None):
        self.vocab_size, self.grace_steps = vocab_size, grace_steps
        self.uniform = math.log(vocab_size)
        self.limit = MARGIN * self.uniform
        self.recent: deque[float] = deque(maxlen=WINDOW)

    def check(self, step: int, loss: float, epoch: int) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss} at step {step} (epoch {epoch})", step, loss)
        self.recent.append(loss)
        if self.grace_steps is None or step <= self.grace_steps or len(self.recent) < WINDOW:
            return
        mean = sum(self.recent) / WINDOW
        if mean > self.limit:
            raise TrainingDiverged(
                f"the training loss averaged {mean:.2f} nats per token over steps {step - WINDOW + 1}-{step} "
                f"(epoch {epoch}), worse than a uniform guess over the {self.vocab_size:,}-token vocabulary "
                f"(ln |V| = {self.uniform:.2f}) after the grace period of {self.grace_steps} steps "
                "(trainer.divergence_grace_steps)",
                step, mean,
            )


def _optimizer_name(target: str) -> str:
    return str(target).rpartition(".")[2]


def explain(ex: TrainingDiverged, cfg: DictConfig) -> str:
    """The paragraph for a diverged run: what happened, the recipe it trained on, what to try."""
    optimizer, trainer = cfg.optimizer, cfg.trainer
    name, lr = _optimizer_name(optimizer.get("_target_", "?")), optimizer.get("learning_rate")
    used = (
        f"{name} at learning rate {lr:g}, clip_norm {trainer.clip_norm}, {trainer.warmup_steps} warm-up steps"
        if isinstance(lr, (int, float)) else f"{name}, clip_norm {trainer.clip_norm}"
    )
    recipe_name = cfg.get("recipe")
    recipe = (cfg.get("recipes") or {}).get(recipe_name)
    if recipe is not None and (_optimizer_name(recipe.optimizer), recipe.learning_rate) != (name, lr):
        origin = (
            f"not the {recipe_name} recipe's {_optimizer_name(recipe.optimizer)} at {recipe.learning_rate:g} "
            "(conf/recipes.yaml), because optimizer settings were chosen"
        )
        advice = (
            f"drop the optimizer overrides to train on the {recipe_name} recipe, or lower "
            "optimizer.learning_rate (by 3-10x)"
        )
    else:
        origin = f"the {recipe_name} recipe of conf/recipes.yaml" if recipe is not None else "the config's"
        advice = (
            "lower optimizer.learning_rate (by 3-10x), clip harder (a smaller trainer.clip_norm) or warm up "
            "(trainer.warmup_steps=200)"
        )
    return f"training diverged: {ex}. It trained with {used} ({origin}). Try: {advice}."
