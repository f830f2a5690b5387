"""The one packaging rule pyproject.toml cannot state: every package setuptools finds under lmbench/,
plus `conf/` (top of the repository, where users look for it) shipped inside the package as
`lmbench.conf`, so that a wheel and `pip install .` carry their configs, plus lmbench's Hydra sweeper
plugin in the `hydra_plugins` namespace package, where Hydra looks for plugins. Metadata: pyproject.toml."""

from setuptools import find_namespace_packages, find_packages, setup

setup(
    packages=[
        *find_packages(include=["lmbench", "lmbench.*"]),
        "lmbench.conf",
        *find_namespace_packages(include=["hydra_plugins.*"]),
    ],
    package_dir={"lmbench.conf": "conf"},
    package_data={"lmbench.conf": ["*.yaml", "**/*.yaml"]},
)
