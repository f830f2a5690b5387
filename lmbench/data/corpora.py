"""Finding a corpus's files: the data folder, the download cache, or the corpus's URL.

Each file named by a dataset config is looked up, in this order:
1. the name itself, if it is an absolute path or exists relative to the current directory;
2. `<data dir>/<subdir>/<name>`, the data dir being `dataset.data_dir`, else `$LMBENCH_DATA_DIR`;
3. `<cache dir>/corpora/<subdir>/<name>` (where earlier downloads went);
4. a download of `dataset.url + name` into that cache folder, checked against `dataset.sha256[name]`;
   or, when `dataset.archive` is set, of the zip `dataset.url + archive`, checked against
   `dataset.sha256[archive]`, whose members of those names are unpacked into the cache folder.

A download goes to a temporary file next to its destination and is renamed into place only once its
checksum matches, so an interrupted or corrupt download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import math
import os
import shutil
import stat
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lmbench.data.types import SPLITS
from lmbench.errors import ConfigError, DataError
from lmbench.paths import DATA_DIR_ENV
from lmbench.progress import progress_bar

log = logging.getLogger(__name__)

TIMEOUT_S = 60.0  # per connection attempt and per read, not for the whole file
CHUNK = 1 << 20


def data_dir(dataset_cfg: Any) -> Path | None:
    chosen = dataset_cfg.data_dir or os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else None


@dataclass(frozen=True)
class CorpusFiles:
    """Where a corpus's text is: `paths[role]` with role train/valid/test, or the single "file"."""

    names: dict[str, str]  # role -> the name as configured (the key of dataset.sha256)
    paths: dict[str, Path]  # role -> the file found
    split_fractions: tuple[float, float, float] | None  # set when one file is cut into splits


def file_roles(dataset_cfg: Any) -> dict[str, str]:
    """role -> configured file name; ConfigError unless exactly one of the two layouts is set."""
    per_split = {s: getattr(dataset_cfg, s) for s in SPLITS}
    given = {s: n for s, n in per_split.items() if n}
    if dataset_cfg.file and given:
        raise ConfigError(
            f"dataset {dataset_cfg.name!r} sets both dataset.file and dataset.{'/'.join(given)}; "
            f"set either dataset.file (cut by dataset.split_fractions) or train, valid and test"
        )
    if dataset_cfg.file:
        return {"file": dataset_cfg.file}
    if not given:
        raise ConfigError(
            f"dataset {dataset_cfg.name!r} names no text: set dataset.train, dataset.valid and "
            f"dataset.test to one file per split, or dataset.file (with dataset.split_fractions) "
            f"to one file cut into the three splits"
        )
    missing = [s for s in SPLITS if s not in given]
    if missing:
        raise ConfigError(
            f"dataset {dataset_cfg.name!r} sets dataset.{'/'.join(given)} but not "
            f"{', '.join('dataset.' + s for s in missing)}; every split needs a file "
            f"(or use dataset.file with dataset.split_fractions)"
        )
    return given


def check_split_fractions(fractions: Any) -> tuple[float, float, float]:
    values = list(fractions) if fractions is not None else []
    ok = len(values) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values
    )
    if not ok or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"dataset.split_fractions must be 3 non-negative numbers (train, valid, test) that sum "
            f"to 1, e.g. [0.9, 0.05, 0.05]; got {values}"
        )
    return (float(values[0]), float(values[1]), float(values[2]))


def split_line_counts(n_lines: int, fractions: Any) -> tuple[int, int, int]:
    """Lines of train/valid/test when `n_lines` lines are cut by `fractions` (test gets the rest)."""
    f_train, f_valid, _ = check_split_fractions(fractions)
    # round(), not int(): 0.29 * 100 is 28.999999999999996.
    n_train = round(n_lines * f_train)
    n_valid = round(n_lines * f_valid)
    counts = (n_train, n_valid, n_lines - n_train - n_valid)
    if min(counts) <= 0:
        raise ConfigError(
            f"dataset.split_fractions={list(fractions)} cuts {n_lines} lines into train/valid/test "
            f"= {counts[0]}/{counts[1]}/{counts[2]} lines; every split needs at least one line"
        )
    return counts


def check_sha256(dataset_cfg: Any, name: str, path: Path, digest: str) -> None:
    """DataError if `dataset.sha256[name]` is set and differs from the file's `digest`."""
    expected = (dataset_cfg.sha256 or {}).get(name)
    if expected and expected.lower() != digest:
        source = "replace it with the original"
        if dataset_cfg.url:
            source = f"delete it and lmbench downloads it from {dataset_cfg.url}"
        raise DataError(
            f"{path} has sha256 {digest}, but dataset.sha256 expects {expected} for {name}: it is "
            f"not the standard file (another version, or damaged), so results would not compare. "
            f"To fix, {source}; to use it anyway, drop the checksums with 'dataset.sha256={{}}'."
        )


def download(url: str, dest: Path, sha256: str | None, *, progress: bool = False) -> None:
    """Fetch `url` to `dest` atomically; DataError on checksum mismatch, OSError (or HTTPException)
    on network errors.

    Either `dest` ends up complete and verified, or nothing (no partial or temporary file) is left.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            size, received = r.length, 0
            with progress_bar(size, dest.name, "B", enabled=progress) as bar:
                while chunk := r.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        # read(n) returns short data instead of raising when the server hangs up early.
        if size is not None and received != size:
            raise ConnectionError(f"the transfer stopped after {received} of {size} bytes")
        got = digest.hexdigest()
        if sha256 and got != sha256.lower():
            raise DataError(
                f"downloaded {url} but its sha256 is {got}, not the expected {sha256}; the file "
                f"was discarded. The source may have changed or the transfer was corrupted: retry, "
                f"or put the original {dest.name} into the data folder yourself"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not sha256:
        log.warning("%s has no sha256 in dataset.sha256; downloaded %s unverified", dest.name, url)


def locate_corpus(dataset_cfg: Any, cache_dir: Path, *, progress: bool = False) -> CorpusFiles:
    """Find (or download) every file of `dataset_cfg`; one DataError naming what to do if missing."""
    names = file_roles(dataset_cfg)
    fractions = check_split_fractions(dataset_cfg.split_fractions) if "file" in names else None
    subdir = dataset_cfg.subdir or ""
    folder = data_dir(dataset_cfg)
    cache_folder = cache_dir / "corpora" / subdir

    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in dict.fromkeys(names.values()):  # a file named twice is looked up once
        path = Path(name).expanduser()
        if path.is_absolute() and not path.exists():
            raise DataError(f"{path} does not exist (dataset {dataset_cfg.name!r} names it)")
        # The current directory only for the user's own files (no subdir): a standard corpus's
        # train.txt must never be confused with a train.txt that happens to lie where lmbench runs.
        own = [path] if path.is_absolute() or not subdir else []
        candidates = own + ([folder / subdir / name] if folder else []) + [cache_folder / name]
        hit = next((p for p in candidates if p.is_file()), None)
        odd = next((p for p in candidates if p.exists()), None) if hit is None else None
        if odd is not None:  # there, but not a file: "Cannot find" would send the user looking for it
            raise DataError(not_a_file(odd, dataset_cfg.name))
        if hit is not None:
            found[name] = hit.resolve()
        else:
            missing.append(name)

    failure = None
    archive = _archive(dataset_cfg)
    for name in ([archive] if archive and missing else list(missing)) if dataset_cfg.url else []:
        url = dataset_cfg.url + name
        log.info("downloading %s to %s", url, cache_folder)
        try:
            download(url, cache_folder / name, (dataset_cfg.sha256 or {}).get(name), progress=progress)
        # OSError: URLError, HTTPError, timeouts, refused or dropped connections; HTTPException:
        # a malformed response.
        except (OSError, http.client.HTTPException) as ex:
            failure = f"Downloading {url} failed: {ex}."
            break  # offline or a wrong URL: the other files would fail the same way
        if name == archive:
            found.update(unpack(cache_folder / archive, missing, cache_folder))
            missing.clear()
        else:
            found[name] = (cache_folder / name).resolve()
            missing.remove(name)

    if missing:
        raise DataError(_missing_message(dataset_cfg, missing, folder, cache_folder, failure))
    return CorpusFiles(
        names=names, paths={role: found[n] for role, n in names.items()}, split_fractions=fractions
    )


KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_a_file(path: Path, dataset: str) -> str:
    """Why `path`, which exists, cannot be a corpus file."""
    mode = path.stat().st_mode
    kind = next((what for test, what in KINDS if test(mode)), "something else")
    if stat.S_ISDIR(mode):
        return f"{path} (a file of the {dataset!r} corpus) is a folder, not a file: name a file in it"
    return (
        f"{path} (a file of the {dataset!r} corpus) is {kind}, not a regular file. A corpus must be a file: "
        "a resumed run and lmbench-evaluate read it again by its name, and a pipe gives its text only once. "
        "Save the text to a file (e.g. `cat <source> > corpus.txt`) and name that"
    )


def _archive(dataset_cfg: Any) -> str | None:
    # A dataset config saved by a run from before `dataset.archive` existed has no such key.
    return getattr(dataset_cfg, "archive", None)


def unpack(archive: Path, names: list[str], folder: Path) -> dict[str, Path]:
    """Extract the members of the zip `archive` called `names` (in whatever folder of the archive)
    into `folder`, each atomically; the archive is deleted afterwards (the files are what is read)."""
    with zipfile.ZipFile(archive) as zf:
        members = {PurePosixPath(m).name: m for m in zf.namelist() if not m.endswith("/")}
        absent = [n for n in names if n not in members]
        if absent:
            raise DataError(
                f"{archive} (checked against dataset.sha256) has no member named {', '.join(absent)}; "
                f"it holds {', '.join(sorted(members)[:10])}: dataset.train/valid/test must name files in it"
            )
        paths = {}
        for name in names:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out, zf.open(members[name]) as member:
                    shutil.copyfileobj(member, out, CHUNK)
                os.replace(tmp, folder / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            paths[name] = (folder / name).resolve()
    archive.unlink()
    return paths


def _missing_message(
    dataset_cfg: Any,
    missing: list[str],
    folder: Path | None,
    cache_folder: Path,
    failure: str | None,
) -> str:
    files = ", ".join(missing)
    sub = f"{dataset_cfg.subdir}/" if dataset_cfg.subdir else ""
    looked = [] if dataset_cfg.subdir else [f"the current directory ({Path.cwd()})"]
    if folder:
        setting = "dataset.data_dir" if dataset_cfg.data_dir else f"${DATA_DIR_ENV}"
        looked.append(f"{folder / sub} ({setting})")
        where = f"into {setting}/{sub} (that is {folder / sub})"
    else:
        looked.append(f"no data folder (neither dataset.data_dir nor ${DATA_DIR_ENV} is set)")
        where = f"into <folder>/{sub} and set {DATA_DIR_ENV}=<folder>"
    looked.append(f"the download cache {cache_folder}")
    if failure is None:
        failure = "No download URL is configured (dataset.url)."
    fix = f"To fix, put {files} {where}"
    if dataset_cfg.url and _archive(dataset_cfg):
        fix += (f" (they are in {dataset_cfg.url}{_archive(dataset_cfg)}; unzip it and copy them), or run "
                f"once with network access to download and unpack it into the cache")
    elif dataset_cfg.url:
        fix += ", or run once with network access to download them into the cache"
    return (
        f"Cannot find {files} of the {dataset_cfg.name!r} corpus. Looked in {'; '.join(looked)}. "
        f"{failure} {fix}."
    )
