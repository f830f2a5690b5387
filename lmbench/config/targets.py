"""Keys of `_target_` groups (`tokenizer`, `model`, `optimizer`) checked against the target's signature."""

from __future__ import annotations

import difflib
import inspect

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from lmbench.errors import ConfigError


def check_target(node: DictConfig, where: str, *, supplied: tuple[str, ...] = ()) -> None:
    """Fail early, with the valid keys, if `node`'s keys do not fit its `_target_`'s signature.

    `supplied` names arguments the caller passes at instantiation (e.g. `vocab_size`).
    Nested nodes with their own `_target_` are checked recursively.
    """
    target = node.get("_target_")
    if target is None:
        raise ConfigError(f"{where} has no _target_ naming the class or function to build")
    try:
        obj = get_object(target)
    except Exception as ex:  # ImportError, AttributeError, ...
        raise ConfigError(f"{where}._target_={target!r} cannot be imported: {ex}") from None
    params = inspect.signature(obj).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    names = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for key in node.keys():
        key = str(key)
        if key.startswith("_") and key.endswith("_"):
            continue
        if key in supplied:
            raise ConfigError(f"{where}.{key} is set by lmbench itself; remove it from the config")
        if key not in names and not takes_kwargs:
            valid = [n for n in names if n not in supplied and n != "self"]
            hint = difflib.get_close_matches(key, valid, n=1)
            did_you_mean = f" Did you mean {where}.{hint[0]}?" if hint else ""
            raise ConfigError(
                f"{where}.{key} is not a parameter of {target}.{did_you_mean} "
                f"Valid keys: {', '.join(sorted(valid))}."
            )
        child = node.get(key)
        if isinstance(child, DictConfig) and "_target_" in child:
            check_target(child, f"{where}.{key}")
    required = [
        n
        for n, p in params.items()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in supplied and n != "self"
    ]
    missing = [n for n in required if n not in node]
    if missing:
        raise ConfigError(f"{where} is missing required key(s) for {target}: {', '.join(missing)}")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
