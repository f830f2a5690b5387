"""User-facing errors.

Anything the user can fix (a bad config value, a missing or malformed corpus file, a diverging run)
raises `LmbenchError`. The CLI prints its message as one paragraph and exits non-zero, without a
traceback; every other exception is a bug and keeps its traceback.
"""

import sys


class LmbenchError(Exception):
    """An error whose message tells the user what to fix."""


class ConfigError(LmbenchError):
    """A config value is missing, misspelt or out of range."""


class DataError(LmbenchError):
    """A corpus file is missing, empty, not UTF-8 or fails its checksum."""


class TrackingError(LmbenchError):
    """The tracking store cannot be reached, or refuses the job's credentials."""


class TrainingDiverged(LmbenchError):
    """Training diverged (a NaN or infinite loss, or one worse than a uniform guess past the grace
    period: training/divergence.py), or a model scored a token with probability 0."""

    def __init__(self, message: str, step: int, loss: float | None = None):
        super().__init__(message)
        self.step, self.loss = step, loss


def exit_with(prog: str, ex: BaseException) -> None:
    """The command-line tools' way out on a user error: one line on stderr, exit status 2."""
    print(f"{prog}: error: {ex}", file=sys.stderr, flush=True)
    sys.exit(2)
