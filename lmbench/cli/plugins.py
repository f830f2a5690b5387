"""What the commands register with Hydra before composing: lmbench's config schema and its search
sweeper plugin (`hydra_plugins/lmbench_search`).

The plugin sits above the training and search layers and below the commands (pyproject.toml's
import contracts), so it is registered here, not by `lmbench.config`, which it would sit three
layers above.
"""

from __future__ import annotations

from hydra.core.plugins import Plugins

from hydra_plugins.lmbench_search.lmbench_sweeper import LmbenchOptunaSweeper
from lmbench import config


def register_configs() -> None:
    """The root schema (`lmbench.config.register_configs`) and the search sweeper.

    Hydra finds plugins by walking the `hydra_plugins` namespace package, and an editable install
    (setuptools' import-hook finder) hides lmbench's part of it from that walk, so that
    `hparams_search=...` would not compose there. Importing the plugin module registers its config
    schema; `register` makes the class instantiable. A wheel install is also found by the walk.
    """
    config.register_configs()
    Plugins.instance().register(LmbenchOptunaSweeper)
