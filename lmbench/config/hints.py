"""What Hydra's refusal of a command line leaves out: the closest key and the valid ones."""

from __future__ import annotations

import difflib
import os

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

GROUPS = ("dataset", "tokenizer", "model", "optimizer", "trainer", "tracking", "experiment")


def _user_config_dirs(args: list[str]) -> list[str]:
    """The folders given with `--config-dir X`, `-cd X` or `--config-dir=X`."""
    dirs = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(args[i + 1])
        elif arg.startswith("--config-dir="):
            dirs.append(arg.partition("=")[2])
    return dirs


def override_key_hints(args: list[str], config_module: str) -> list[str]:
    """For overrides that name a key the composed config lacks: the closest key and the valid ones.

    Called only after Hydra refused the command line, to add what Hydra's message leaves out. The
    config is composed from `config_module` as `lmbench` does, plus the user's own folders
    (`--config-dir`, `hydra.searchpath`) so that their group options are found too.
    """
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except Exception:
        return []
    group_choices = [o.input_line for o in parsed if o.key_or_group in GROUPS and not o.is_delete()]
    search = [o.input_line for o in parsed if o.key_or_group == "hydra.searchpath"]
    extra = [f"file://{os.path.abspath(d)}" for d in _user_config_dirs(args)]
    if extra and not search:
        search = [f"hydra.searchpath=[{','.join(extra)}]"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=config_module, version_base="1.3"):
            cfg = compose("config", overrides=group_choices + search)
    except Exception:
        return []
    hints = []
    for o in parsed:
        key = o.key_or_group
        if o.is_add() or o.is_delete() or key in GROUPS or key.startswith("hydra"):
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf in node:
            continue
        valid = [str(k) for k in node.keys()]
        close = difflib.get_close_matches(leaf, valid, n=1)
        where = f"{parent}." if parent else ""
        guess = f" Did you mean {where}{close[0]}?" if close else ""
        hints.append(f"{key} is not a config key.{guess} Valid keys under {parent or 'the root'}: {', '.join(valid)}.")
    return hints
