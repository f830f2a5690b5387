"""`model=pretrained` with a checkpoint folder lmbench cannot use: one paragraph naming the problem,
exit status 2, before any training (no MLflow run is opened), never a traceback. The folders are
tiny checkpoints written with safetensors' NumPy API (helpers.write_tiny_checkpoint), then damaged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import lmbench, tiny_tokenizer, write_tiny_checkpoint


def other_model_type(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))


def cut_short(folder: Path) -> None:
    path = folder / "model.safetensors"
    os.truncate(path, path.stat().st_size // 2)


def other_tokenizer_size(folder: Path) -> None:
    tiny_tokenizer(290).save(str(folder / "tokenizer.json"))


def too_wide_for_this_machine(folder: Path) -> None:
    """config.json claims GPT-2 blocks 200,000 wide (about 1e12 parameters): the memory estimate,
    planned from config.json alone, refuses it before the weights are read or a layer is built."""
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_embd": 200_000, "n_head": 4}))


DAMAGES = {
    "unsupported model_type": (other_model_type, ["model_type 'bert'", "model_type gpt2", "model_type llama"]),
    "missing model.safetensors": (lambda f: (f / "model.safetensors").unlink(), ["has no model.safetensors"]),
    "truncated model.safetensors": (cut_short, ["model.safetensors is damaged", "Download it again"]),
    "tokenizer of another size": (other_tokenizer_size, ["has 290 tokens", "embedding has 300 rows"]),
    "missing config.json": (lambda f: (f / "config.json").unlink(), ["has no config.json"]),
    "missing tokenizer.json": (lambda f: (f / "tokenizer.json").unlink(), ["has no readable tokenizer.json"]),
    "too large for this machine": (too_wide_for_this_machine, ["the model cannot fit: training it needs at least",
                                                                "parameters", "available"]),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_checkpoint_lmbench_cannot_use_is_one_paragraph_before_training(tmp_path, damage):
    spoil, needles = DAMAGES[damage]
    folder = write_tiny_checkpoint(tmp_path / "checkpoint", "gpt2", vocab_size=300)
    spoil(folder)
    proc = lmbench(tmp_path, "model=pretrained", f"model.path={folder}", "trainer.max_steps=5", ok=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    paragraph = proc.stderr.strip().splitlines()[-1]  # the one paragraph, on one line
    assert paragraph.startswith("lmbench: error: "), proc.stderr
    for needle in needles:
        assert needle in paragraph, proc.stderr
    assert "MLflow run" not in proc.stdout and not list(tmp_path.glob("**/checkpoints"))  # nothing trained
