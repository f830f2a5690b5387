"""lmbench: compare n-gram, recurrent and Transformer language models on the same token ids."""

from lmbench.paths import bind_checkout_conf as _bind_checkout_conf

# The package's one version; pyproject.toml reads it (setuptools dynamic version).
__version__ = "0.1.0"

_bind_checkout_conf()  # in a checkout, `conf/` beside the package is lmbench.conf (lmbench/paths.py)
