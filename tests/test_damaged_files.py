"""Files lmbench wrote earlier and now finds missing or cut short -- a checkpoint to resume from, a
model folder to evaluate, generate from or fine-tune from -- are one paragraph that names the file
and says what to do, before any MLflow run is opened or reopened; never h5py's or json's traceback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import compose_on, only_run, write_corpus

from lmbench.cli import evaluate as evaluate_cli
from lmbench.cli import generate as generate_cli
from lmbench.errors import ConfigError
from lmbench.training.run import run

TINY_LSTM = ("model=lstm", "model.hidden_size=16", "model.embedding_dim=16", "model.num_layers=1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny finished LSTM run: its corpus, its folder `out` (a checkpoint, a model folder) and
    its store."""
    folder = tmp_path_factory.mktemp("trained")
    write_corpus(folder, n_train=200, n_eval=20)
    run(tiny(folder, folder), output_dir=folder / "out", launch_dir=folder)
    return folder


def tiny(folder: Path, corpus: Path, *overrides: str):
    """The tiny run's config, tracked in `folder`, on the corpus in `corpus` (a resume must name
    the very files the checkpoint was made on)."""
    paths = {split: corpus / f"{split}.txt" for split in ("train", "valid", "test")}
    return compose_on(folder, paths, "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3", *overrides,
                      model=TINY_LSTM)


def cut_short(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("damage", [
    "last/model.weights.h5", "last/optimizer_and_streams.npz", "last/trainer_state.json", "best/model.weights.h5",
])
def test_a_damaged_checkpoint_is_named_and_trainer_resume_false_starts_over(trained, tmp_path, damage):
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)  # its store too
    cfg = tiny(tmp_path, trained)
    cut_short(tmp_path / "out" / "checkpoints" / damage)
    with pytest.raises(ConfigError) as caught:
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    message = str(caught.value)
    assert f"the checkpoint in {tmp_path / 'out' / 'checkpoints'} is damaged" in message
    assert f"{tmp_path / 'out' / 'checkpoints' / damage} cannot be read" in message
    assert "trainer.resume=false" in message
    _, finished = only_run(cfg.tracking.uri)  # not reopened: still the one run, as it ended
    assert finished.info.status == "FINISHED" and "lmbench.resumed_at_step" not in finished.data.tags

    if damage == "last/model.weights.h5":  # what the paragraph advises works (once is enough)
        run(tiny(tmp_path, trained, "trainer.resume=false"), output_dir=tmp_path / "out", launch_dir=tmp_path)


def cli(main, capsys, *argv: str) -> tuple[int, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as ex:
        code = ex.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("damage", [
    ("model.weights.h5", "is missing"), ("vocab.json", "is missing"), ("model.weights.h5", "cannot be read (cut short"),
    ("lmbench_model.json", "cannot be read (not valid JSON, line"), ("model_config.json", "cannot be read"),
])
def test_a_model_folder_missing_a_file_or_with_one_cut_short_is_one_paragraph(trained, tmp_path, capsys, damage):
    name, problem = damage
    model = tmp_path / "model"
    shutil.copytree(trained / "out" / "model", model)
    (model / name).unlink() if problem == "is missing" else cut_short(model / name)
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\n")
    for main, args in ((evaluate_cli.main, ("--no-log", "--files", str(text))), (generate_cli.main, ("-n", "3"))):
        code, err = cli(main, capsys, str(model), *args)
        assert code == 2, err
        assert f"the model folder {model} is incomplete or damaged: {model / name} {problem}" in err
        assert "copy it again from the run's folder" in err and "Traceback" not in err

    cfg = tiny(tmp_path, trained, f"trainer.init_from={model}")
    if name != "model.weights.h5":  # a fine-tune reads the weights after building its model
        with pytest.raises(ConfigError, match=f"trainer.init_from='{model}': the model folder {model} is incomplete"):
            run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
