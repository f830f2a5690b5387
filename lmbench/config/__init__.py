"""Config: the schema of the fixed groups, and checks of the `_target_` groups' keys.

Knows neither MLflow nor TensorFlow.
"""

from lmbench.config.schema import Config, DatasetConfig, TrackingConfig, TrainerConfig, register_configs
from lmbench.config.targets import check_target, to_yaml

__all__ = [
    "Config", "DatasetConfig", "TrackingConfig", "TrainerConfig", "check_target", "register_configs", "to_yaml",
]
