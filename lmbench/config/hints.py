"""What Hydra's refusal of a command line leaves out: the closest key and the valid ones."""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path

import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

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


def _overrides_and_search_path(args: list[str]) -> tuple[list | None, list[str]]:
    """The command line's overrides, parsed (None if they do not parse), and the search-path
    override that adds the user's own config folders (`--config-dir`, `hydra.searchpath`)."""
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except Exception:
        return None, []
    search = [o.input_line for o in parsed if o.key_or_group == "hydra.searchpath"]
    extra = [f"file://{os.path.abspath(d)}" for d in _user_config_dirs(args)]
    if extra and not search:
        search = [f"hydra.searchpath=[{','.join(extra)}]"]
    return parsed, search


def override_key_hints(args: list[str], config_module: str) -> list[str]:
    """For overrides that name a key the composed config lacks: the closest key and the valid ones.

    Called only after Hydra refused the command line, to add what Hydra's message leaves out. The
    config is composed from `config_module` as `lmbench` does, plus the user's own folders
    (`--config-dir`, `hydra.searchpath`) so that their group options are found too.
    """
    parsed, search = _overrides_and_search_path(args)
    if parsed is None:
        return []
    group_choices = [o.input_line for o in parsed if o.key_or_group in GROUPS and not o.is_delete()]
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


def command_line_problems(args: list[str], config_module: str) -> list[str]:
    """What is wrong with the command line's overrides, found before Hydra runs, so that a user
    reads lmbench's paragraph and not Hydra's search path or its advice to add a `+`.

    An unknown option of a config group (`model=LSTM`: did you mean, and the options), a key the
    composed config lacks (`optimizer.lr`: did you mean, and the keys), a value of the wrong type
    (`trainer.max_steps=abc`), in any value of a sweep, and a config file (the user's, in
    `--config-dir`) that is not valid YAML. Empty when nothing is found to be wrong; whatever else
    Hydra refuses, Hydra reports.
    """
    parsed, search = _overrides_and_search_path(args)
    if parsed is None:
        return []  # Hydra's own message says what it cannot parse
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=config_module, version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            problems = _unknown_options(parsed, loader, search)
            if problems:
                return problems
            for singles in _one_job_per_value(parsed):
                try:
                    compose("config", overrides=singles + search)
                except Exception as ex:
                    if "Could not override" in str(ex) or "not in struct" in str(ex):
                        return override_key_hints(args, config_module)
                    if isinstance(ex.__cause__, ValidationError):
                        return [_wrong_type(ex.__cause__)]
                    return [problem] if (problem := yaml_problem(ex)) else []
    except Exception as ex:
        return [problem] if (problem := yaml_problem(ex)) else []
    finally:
        GlobalHydra.instance().clear()
    return []


def yaml_problem(ex: BaseException) -> str | None:
    """A config file that is not valid YAML (Hydra lets PyYAML's error through, a traceback), in
    one paragraph: the file, the line and what is wrong there; None for any other error."""
    for _ in range(10):  # along the causes, as far as Hydra may have wrapped it
        if ex is None or isinstance(ex, yaml.MarkedYAMLError):
            break
        ex = ex.__cause__ or ex.__context__
    if not isinstance(ex, yaml.MarkedYAMLError):
        return None
    mark = ex.problem_mark
    if mark is None:
        return f"a config file is not valid YAML: {ex}"
    try:
        line = Path(mark.name).read_text(encoding="utf-8").splitlines()[mark.line].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        line = ""
    started = (
        f" ({ex.context} that starts at line {ex.context_mark.line + 1})"
        if ex.context and ex.context_mark is not None and ex.context_mark.line != mark.line else ""
    )
    return (
        f"the config file {mark.name} is not valid YAML: {ex.problem} at line {mark.line + 1}, column "
        f"{mark.column + 1}{f': `{line}`' if line else ''}{started}. Fix the file and run the command again"
    )


def _unknown_options(parsed: list, loader, search: list[str]) -> list[str]:
    """`group=value` overrides whose value is no option of the group (in lmbench's configs and the
    user's folders on `search`)."""
    problems = []
    groups = loader.list_groups("")
    for o in parsed:
        group = o.key_or_group.lstrip("+~")
        if o.is_delete() or group.startswith("hydra") or (group not in groups and "/" not in group):
            continue
        options = loader.get_group_options(group, config_name="config", overrides=search)
        if not options:
            continue
        values = o.value() if o.is_sweep_override() and not o.is_interval_sweep() else [o.value()]
        for value in getattr(values, "list", values):
            if isinstance(value, str) and value not in options:
                close = difflib.get_close_matches(value, options, n=1) or difflib.get_close_matches(
                    value.lower(), options, n=1
                )
                guess = f" Did you mean {group}={close[0]}?" if close else ""
                listed = ", ".join(options)
                problems.append(f"{group}={value} is not an option of the {group} group.{guess} Options: {listed}.")
    return problems


def _one_job_per_value(parsed: list) -> list[list[str]]:
    """Override lists of single values that together use every value of every choice sweep
    (`trainer.max_steps=100,abc`: a job with 100, another with abc), so that a bad value anywhere
    in a sweep is found before its first job runs. Range and interval sweeps are left to the jobs."""
    fixed, sweeps = [], []
    for o in parsed:
        if o.key_or_group.startswith("hydra"):
            continue
        if not o.is_sweep_override():
            fixed.append(o.input_line)
            continue
        values = getattr(o.value(), "list", None)
        if values:
            prefix = o.input_line.split("=", 1)[0]
            sweeps.append([f"{prefix}={_as_override(v)}" for v in values])
    jobs = [fixed + [values[0] for values in sweeps]]
    for i, values in enumerate(sweeps):
        for value in values[1:]:
            jobs.append(fixed + [v[0] for v in sweeps[:i]] + [value] + [v[0] for v in sweeps[i + 1:]])
    return jobs


def _as_override(value) -> str:
    """A parsed sweep value written back as Hydra override text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


# What a schema type asks for, in the words of the paragraph (`Optional[...]` adds "or null").
TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string"}


def _wrong_type(error: ValidationError) -> str:
    """One paragraph for a value of the wrong type (`trainer.max_steps=abc`): the key, what its type
    asks for and what it got, from OmegaConf's error and the schema's field."""
    key = str(error.full_key)
    leaf = key.rpartition(".")[2]
    annotation = next((str(f.type) for f in _fields_of(error.object_type) if f.name == leaf), "")
    optional = annotation.startswith("Optional[")
    base = annotation[len("Optional["):-1] if optional else annotation
    if base.startswith("list["):
        wants = f"a list of {TYPE_WORDS.get(base[5:-1], base[5:-1]).removeprefix('a ')}s in brackets, e.g. [1, 2]"
    else:
        wants = TYPE_WORDS.get(base, base or "a value of another type")
    got = str(getattr(error, "msg", error)).splitlines()[0].rstrip(".")
    return (
        f"{key} takes {wants}{' or null' if optional else ''}, not what the command line gave ({got}). "
        "`lmbench --cfg job` prints every key with its value."
    )


def _fields_of(cls) -> tuple:
    try:
        return dataclasses.fields(cls)
    except TypeError:
        return ()
