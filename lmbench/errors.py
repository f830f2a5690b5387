"""User-facing errors.

Anything the user can fix (a bad config value, a missing or malformed corpus file, a diverging run)
raises `LmbenchError`. The CLI prints its message as one paragraph and exits non-zero, without a
traceback; every other exception is a bug and keeps its traceback.
"""

import json
import re
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LmbenchError(Exception):
    """An error whose message tells the user what to fix."""


class ConfigError(LmbenchError):
    """A config value is missing, misspelt or out of range."""


class DataError(LmbenchError):
    """A corpus file is missing, empty, not UTF-8 or fails its checksum."""


class DamagedFile(DataError):
    """A file lmbench wrote earlier (a checkpoint, a model's weights, vocabulary or metadata) is
    missing or cannot be read: cut short by a full disk or an interrupted copy, or overwritten.
    Its message names the file; whoever reads it adds what to do (`reading_file`)."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path} {problem}")
        self.path = path


# What reading a damaged file raises: h5py an OSError ("truncated file: eof = ..."), np.load a
# BadZipFile, json a JSONDecodeError. Not ValueError at large: Keras raises it for weights that do
# not fit the model, which is another mistake with its own message.
_UNREADABLE = (OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError)


@contextmanager
def reading_file(path: Path) -> Iterator[None]:
    """Read `path` (a file lmbench wrote) inside this block: a missing or unreadable file is raised
    as `DamagedFile`, naming it, instead of h5py's, NumPy's or json's exception."""
    try:
        yield
    except FileNotFoundError:
        raise DamagedFile(path, "is missing") from None
    except _UNREADABLE as ex:
        detail = str(ex)
        h5py = re.fullmatch(r"Unable to [^(]*\((.*)\)", detail)  # "Unable to synchronously open file (...)"
        if h5py:
            detail = h5py.group(1)
        cut = re.match(r"truncated file: eof = (\d+).* stored_eof = (\d+)", detail)
        if cut:
            detail = f"cut short: {int(cut.group(1)):,} of its {int(cut.group(2)):,} bytes"
        if isinstance(ex, json.JSONDecodeError):
            detail = f"not valid JSON, line {ex.lineno} column {ex.colno}: {ex.msg}"
        raise DamagedFile(path, f"cannot be read ({detail})") from None


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
