"""`model=pretrained`: how a run takes its tokenizer from the checkpoint folder (`model.path`).

A checkpoint's weights are tied to its tokenizer's ids, as a fine-tune's are to its source's
(`finetune.py`), so the run's `tokenizer` node becomes `PretrainedTokenizer` (data/pretrained.py)
whatever `tokenizer=` composed (a note says so; `tokenizer=pretrained` keeps its own settings, e.g.
`tokenizer.eos_token`), before anything is checked, digested or logged: `config.yaml`, the MLflow
params and the bundle record the tokenizer that was used. The folder's `config.json` is read here
too, so that a checkpoint lmbench cannot read is refused before any text is tokenized.
"""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from lmbench.data.pretrained import PretrainedTokenizer
from lmbench.errors import ConfigError
from lmbench.models.hf_checkpoint import read_config

TARGET = "lmbench.models.hf_checkpoint.pretrained"
TOKENIZER = f"{PretrainedTokenizer.__module__}.{PretrainedTokenizer.__qualname__}"


def is_pretrained(cfg: DictConfig) -> bool:
    return cfg.model.get("_target_") == TARGET


def adopt_folder_tokenizer(cfg: DictConfig) -> DictConfig:
    """`cfg` with the checkpoint's tokenizer (a copy; `cfg` itself when it already has it or is no
    model=pretrained), the folder's config.json checked."""
    if not is_pretrained(cfg):
        return cfg
    if not cfg.model.get("path"):
        raise ConfigError("model=pretrained needs model.path=<folder>: a Hugging Face checkpoint folder "
                          "(config.json, model.safetensors, tokenizer.json)")
    read_config(Path(str(cfg.model.path)).expanduser())
    if cfg.tokenizer.get("_target_") == TOKENIZER:
        return cfg
    composed = str(cfg.tokenizer.get("_target_", "?")).rpartition(".")[2]
    print(f"Note: model=pretrained cuts the text with {cfg.model.path}/tokenizer.json; the composed "
          f"tokenizer ({composed}) is not used.", flush=True)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.tokenizer = OmegaConf.create({"_target_": TOKENIZER})
    return cfg


def folder_tokenizer(tokenizer: PretrainedTokenizer, cfg: DictConfig) -> PretrainedTokenizer:
    """The run's tokenizer with the folder's tokenizer.json read (model=pretrained, and no file read yet:
    a fine-tune from a pretrained run has its source's); any other tokenizer as it is."""
    if not is_pretrained(cfg) or not tokenizer.needs_fit:
        return tokenizer
    return tokenizer.load_model(Path(str(cfg.model.path)).expanduser())
