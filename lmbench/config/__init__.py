"""Config: the schema of the fixed groups, and checks of the `_target_` groups' keys.

Knows neither MLflow nor TensorFlow.
"""

from lmbench.config import folders  # noqa: F401 (registers the run folder's resolver)
from lmbench.config.checks import check_optimizer_values, check_trainer_values, check_values
from lmbench.config.recipes import model_family, recipe_for
from lmbench.config.schema import Config, DatasetConfig, TrackingConfig, TrainerConfig, register_configs
from lmbench.config.targets import check_target, to_yaml

__all__ = [
    "Config", "DatasetConfig", "TrackingConfig", "TrainerConfig", "check_optimizer_values", "check_target",
    "check_trainer_values", "check_values", "model_family", "recipe_for", "register_configs", "to_yaml",
]
