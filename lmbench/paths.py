"""Where lmbench finds and keeps things on disk: its config folder, the cache, the data folder."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "LMBENCH_DATA_DIR"
CACHE_DIR_ENV = "LMBENCH_CACHE_DIR"
# The config groups (`conf/` at the top of the repository), shipped inside the package as
# `lmbench/conf` by the build: in a checkout it is the folder beside the package.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def default_cache_dir(cfg_cache_dir: str | Path | None) -> Path:
    """The config's `cache_dir`, else `$LMBENCH_CACHE_DIR`, else `~/.cache/lmbench`."""
    chosen = cfg_cache_dir or os.environ.get(CACHE_DIR_ENV) or "~/.cache/lmbench"
    return Path(chosen).expanduser()
