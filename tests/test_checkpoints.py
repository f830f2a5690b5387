"""checkpoints.py on its own: a kill at any moment of a save leaves a whole checkpoint to resume
from, the best weights included (stand-in models that write bytes, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbench.training import checkpoints
from lmbench.training.checkpoints import STATE_FILE, TrainState


class Weights:
    """Writes its weights file; with `cut`, half of it and then the kill arrives."""

    def __init__(self, content: bytes, cut: bool = False):
        self.content, self.cut = content, cut

    def save_weights(self, path: Path) -> None:
        Path(path).write_bytes(self.content[: len(self.content) // 2] if self.cut else self.content)
        if self.cut:
            raise KeyboardInterrupt

    def save(self, folder: Path) -> None:  # NeuralLM.save: the weights and a config beside them
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.save_weights(Path(folder) / "model.weights.h5")
        (Path(folder) / "model_config.json").write_text("{}")


class NoOptimizer:
    variables: list = []


def test_a_kill_while_the_best_weights_are_saved_leaves_the_previous_ones(tmp_path):
    best = tmp_path / "best"
    checkpoints.save_model(best, Weights(b"first best weights"))
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_model(best, Weights(b"second best weights", cut=True))
    assert (checkpoints.whole(best, "model.weights.h5") / "model.weights.h5").read_bytes() == b"first best weights"


def test_a_kill_between_the_renames_and_then_in_the_next_save_leaves_a_checkpoint(tmp_path, monkeypatch):
    last = tmp_path / "last"
    checkpoints.save(last, TrainState(global_step=10), Weights(b"w10"), NoOptimizer(), [])
    real_rename = Path.rename

    def killed_before_the_new_one_is_in_place(self, target):
        if self.name.endswith(".tmp"):
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_before_the_new_one_is_in_place)
    for step in (20, 30):  # the first kill leaves last.old only; the second came during its next save
        with pytest.raises(KeyboardInterrupt):
            checkpoints.save(last, TrainState(global_step=step), Weights(b"w"), NoOptimizer(), [])
    assert not (last / STATE_FILE).exists()
    assert checkpoints.read_state(last).global_step == 10  # was None: the old one had been deleted first
