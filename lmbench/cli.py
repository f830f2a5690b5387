"""The `lmbench` command: Hydra composes the config, `run` does the work.

User errors (`LmbenchError`) print one paragraph and exit with status 2; Hydra's own composition
errors (unknown group option, misspelt override key) print Hydra's message and exit with status 1.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lmbench.config import register_configs
from lmbench.errors import LmbenchError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> float | None:
    from lmbench.training.run import run  # imports TensorFlow: only once the config is valid

    try:
        summary = run(cfg, output_dir=Path(HydraConfig.get().runtime.output_dir), launch_dir=Path.cwd())
    except LmbenchError as ex:
        logging.getLogger("lmbench").debug("user error", exc_info=True)
        print(f"lmbench: error: {ex}", file=sys.stderr, flush=True)
        sys.exit(2)
    # A sweeper (e.g. Optuna) minimises the returned value.
    return summary.get("best_valid/ppl")


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    register_configs()
    _main()


if __name__ == "__main__":
    main()
