"""Where lmbench finds and keeps things on disk: its config folder, the cache, the data folder."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

DATA_DIR_ENV = "LMBENCH_DATA_DIR"
CACHE_DIR_ENV = "LMBENCH_CACHE_DIR"


def redact(uri: str) -> str:
    """`uri` without a password (a database URI carries one): safe to print and to log. Ground, so
    that the tracking store and a search's Optuna storage (which must not import MLflow) share it."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", uri)

# The config groups: `conf/` at the top of the repository, shipped inside the built package as the
# package `lmbench.conf`. Hydra reads them from there, whatever the install: CONF_SEARCH_PATH is
# what `lmbench` (hydra.main), `lmbench-evaluate` and the error hints all compose from.
CONF_MODULE = "lmbench.conf"
CONF_SEARCH_PATH = f"pkg://{CONF_MODULE}"
_PACKAGE = Path(__file__).resolve().parent
_SHIPPED_CONF = _PACKAGE / "conf"  # a built package: pip install ., a wheel
_CHECKOUT_CONF = _PACKAGE.parent / "conf"  # a source checkout: editable install, or PYTHONPATH
# The same folder as a plain path, for tests and tools that glob it; in both cases a real folder.
CONF_DIR = _SHIPPED_CONF if _SHIPPED_CONF.is_dir() else _CHECKOUT_CONF


def bind_checkout_conf() -> None:
    """In a source checkout, make `conf/` beside this package the module `lmbench.conf`.

    A built package carries `lmbench/conf/` and needs nothing. A checkout has `conf/` one level up:
    an editable install's finder maps it too, but when this checkout's code runs through PYTHONPATH
    while another checkout is installed editable, that finder would hand out the other checkout's
    configs. Binding the folder beside the code that runs keeps code and configs together.
    Called by `lmbench/__init__.py`, so every process (launcher workers too) gets it before Hydra
    looks.
    """
    init = _CHECKOUT_CONF / "__init__.py"
    if _SHIPPED_CONF.is_dir() or not init.is_file() or CONF_MODULE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        CONF_MODULE, init, submodule_search_locations=[str(_CHECKOUT_CONF)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[CONF_MODULE] = module
    spec.loader.exec_module(module)
    parent, _, name = CONF_MODULE.rpartition(".")
    setattr(sys.modules[parent], name, module)  # as the import system does for a submodule


def default_cache_dir(cfg_cache_dir: str | Path | None) -> Path:
    """The config's `cache_dir`, else `$LMBENCH_CACHE_DIR`, else `~/.cache/lmbench`."""
    chosen = cfg_cache_dir or os.environ.get(CACHE_DIR_ENV) or "~/.cache/lmbench"
    return Path(chosen).expanduser()
