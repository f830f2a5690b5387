"""The default run folder: one of its own for every command, also for commands started together.

Hydra names the run folder after the second the command started (`outputs/<date>/<time>`) and
creates it with `exist_ok`, so two commands started within the same second (a job array, a shell
loop with `&`) shared one: each wrote over the other's config, log and checkpoints, and the slower
one resumed from the faster one's checkpoint as if it were its own (`trainer.resume` defaults to
"if the run folder has one"). `${lmbench_new_folder:<name>}` claims the folder by creating it (an
atomic mkdir): the first command gets `<name>`, the next ones `<name>-2`, `<name>-3`, ... The answer
is kept for the process, so every later reading of `hydra.run.dir` gives the same folder. A
folder named on the command line (`hydra.run.dir=...`, to continue a run) is used as it is.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

RESOLVER = "lmbench_new_folder"
_claimed: dict[str, str] = {}  # the name asked for -> the folder this process claimed for it


def claim(name: str) -> str:
    """`name`, or `name-2`, `name-3`, ...: the first that this call could create; `name` itself
    where none can be created (the run folder's check then says why, in one paragraph)."""
    if name in _claimed:
        return _claimed[name]
    path, n = name, 1
    while True:
        try:
            Path(path).mkdir(parents=True)
            break
        except FileExistsError:
            n += 1
            path = f"{name}-{n}"
        except OSError:  # not writable, a full disk: reported by cli/sweep.check_folder
            path = name
            break
    _claimed[name] = path
    return path


def register_resolver() -> None:
    """Make `${lmbench_new_folder:...}` resolvable (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, claim)


register_resolver()
