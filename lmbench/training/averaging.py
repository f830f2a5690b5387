"""NT-ASGD: non-monotonically triggered averaged SGD (Merity et al. 2018, section 3).

Training is plain SGD until an epoch's validation is worse than the best of the validations before
the last `nonmono` (`should_switch`, the rule of the AWD-LSTM code); from then on the weights after
every optimizer update are averaged uniformly (`WeightAverage`: avg_n = avg_{n-1} + (w_n -
avg_{n-1}) / n, what PyTorch's ASGD with t0=0, lambd=0 keeps as `ax`), and that average is what is
validated, kept as the best checkpoint, tested and saved, while training goes on from the SGD iterate.

Why not Keras: Keras optimizers' `use_ema` keeps an exponential moving average with a fixed momentum
from the first step on; ASGD's is a uniform average over the iterates since a trigger decided while
training, so it lives here, beside the loop. Its sums go into checkpoints/last (`arrays`,
`restore`), so a resumed run goes on averaging where it stopped.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import tensorflow as tf


def should_switch(valid_losses: list[float], nonmono: int) -> bool:
    """True when the last of `valid_losses` is worse than the best of those before the last
    `nonmono` earlier ones (Merity et al.: `val_loss > min(best_val_loss[:-nonmono])`, over more
    than `nonmono` earlier validations)."""
    *history, current = valid_losses
    return len(history) > nonmono and current > min(history[:-nonmono])


class WeightAverage:
    """The uniform average of `variables` over the updates since `start`."""

    def __init__(self, variables):
        self.variables = list(variables)
        self.sums: list[tf.Variable] | None = None
        self.count = 0  # updates averaged

    @property
    def active(self) -> bool:
        return self.sums is not None

    def start(self) -> None:
        """Average the weights after every update from now on."""
        if self.sums is None:
            self.sums = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in self.variables]
            self._update = tf.function(self._update_eager)
        self.count = 0

    def _update_eager(self, mu):
        for average, variable in zip(self.sums, self.variables):
            average.assign_add((variable - average) * mu)

    def update(self) -> None:
        """After an optimizer update: fold the new weights into the average."""
        if self.sums is not None:
            self.count += 1
            self._update(tf.constant(1.0 / self.count, tf.float32))

    @contextmanager
    def applied(self):
        """The average in the variables inside the block (the SGD iterate back afterwards, also
        when the block raises); the weights as they are while nothing is averaged yet."""
        if not self.count:
            yield
            return
        current = [v.numpy() for v in self.variables]
        for variable, average in zip(self.variables, self.sums):
            variable.assign(average)
        try:
            yield
        finally:
            for variable, value in zip(self.variables, current):
                variable.assign(value)

    def arrays(self) -> dict[str, np.ndarray]:
        """The average as arrays for a checkpoint (none while not averaging)."""
        return {f"avg_{i}": np.asarray(a) for i, a in enumerate(self.sums)} if self.active else {}

    def restore(self, arrays, count: int) -> None:
        """After a resume: the average of `count` updates, from `arrays` (`arrays()`'s keys)."""
        self.start()
        for i, average in enumerate(self.sums):
            average.assign(arrays[f"avg_{i}"])
        self.count = count
