"""`model=pretrained` end to end on PTB (cut to its first lines): a tiny random GPT-2-family
checkpoint (written with safetensors' NumPy API, its tokenizer a byte-level BPE trained on the same
PTB lines) scored zero-shot (`trainer.max_steps=0`), then fine-tuned for 200 steps on the
`pretrained` recipe: validation bits/char go down, both runs land in MLflow with their metrics, and
the fine-tuned run's logged model reloads (`lmbench-evaluate` gives the run's test figure) and
generates (`lmbench-generate`, key/value cache)."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
from helpers import run_cli, write_tiny_checkpoint
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from lmbench.cli.plugins import register_configs
from lmbench.paths import CONF_DIR
from lmbench.training.run import run

pytestmark = pytest.mark.corpus
LINES = {"train": 3000, "valid": 150, "test": 150}  # of PTB's 42k / 3.4k / 3.8k: the test's size


def ptb_head(folder: Path) -> dict[str, Path]:
    data = Path(os.environ.get("LMBENCH_DATA_DIR", "")) / "ptb"
    if not os.environ.get("LMBENCH_DATA_DIR") or not (data / "ptb.train.txt").is_file():
        pytest.skip("LMBENCH_DATA_DIR has no ptb/ (set it to the folder of the standard corpora)")
    paths = {}
    for split, n in LINES.items():
        lines = (data / f"ptb.{split}.txt").read_text(encoding="utf-8").splitlines(keepends=True)[:n]
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text("".join(lines), encoding="utf-8")
    return paths


def pretrained_cfg(folder: Path, paths: dict[str, Path], checkpoint: Path, *overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[
            "model=pretrained", f"model.path={checkpoint}", "model.context=32", "model.dropout=0.0",
            "dataset=text_files", *(f"dataset.{s}={p}" for s, p in paths.items()), f"cache_dir={folder / 'cache'}",
            "trainer.batch_size=8", "trainer.bptt=32", "trainer.eval_batch_size=16", "trainer.progress=false",
            f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", "tracking.experiment=pretrained",
            "tracking.log_every_n_steps=50", *overrides,
        ])


def test_a_checkpoint_scored_zero_shot_then_fine_tuned_on_ptb(tmp_path):
    paths = ptb_head(tmp_path)
    checkpoint = write_tiny_checkpoint(tmp_path / "gpt2", "gpt2", vocab_size=400, text=paths["train"].read_text())
    zero = run(pretrained_cfg(tmp_path, paths, checkpoint, "trainer.max_steps=0"), tmp_path / "zero", tmp_path)
    # The recipe's AdamW and cosine, at a rate for random weights: they hold nothing to keep.
    tuning = ("trainer.max_steps=200", "trainer.validate_every_n_steps=100", "optimizer.learning_rate=0.003")
    tuned = run(pretrained_cfg(tmp_path, paths, checkpoint, *tuning), tmp_path / "tuned", tmp_path)
    assert zero["train/tokens"] == 0 and tuned["train/tokens"] == 200 * 8 * 32
    assert tuned["best_valid/bpc"] < zero["best_valid/bpc"] - 0.5, (zero, tuned)
    assert tuned["test/bpc"] < zero["test/bpc"] and zero["test/word_ppl"] > tuned["test/word_ppl"]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pretrained").experiment_id], order_by=["start_time"])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    first, second = runs
    assert first.data.metrics["test/bpc"] == pytest.approx(zero["test/bpc"])
    assert second.data.metrics["best_valid/bpc"] == pytest.approx(tuned["best_valid/bpc"])
    assert second.data.params["tokenizer._target_"] == "lmbench.data.pretrained.PretrainedTokenizer"
    assert second.data.params["optimizer._target_"] == "keras.optimizers.AdamW"
    assert second.data.params["trainer.lr_schedule"] == "cosine"
    assert second.data.tags["lmbench.eval_method"] == "sliding window, context 32, stride 16"
    curve = sorted((m.step, m.value) for m in client.get_metric_history(second.info.run_id, "valid_step/bpc"))
    assert [step for step, _ in curve] == [100, 200] and curve[1][1] < curve[0][1] < zero["best_valid/bpc"]

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_cli(tmp_path / "reader", uri, second.info.run_id, "--split", "test", "--no-log",
                  module="lmbench.cli.evaluate")  # the logged model, without the checkpoint folder
    assert f"{tuned['test/bpc']:.4f}" in out.stdout, out.stdout
    out = run_cli(tmp_path / "reader", uri, second.info.run_id, "--prompt", "the company said", "--tokens", "30",
                  "--seed", "1", module="lmbench.cli.generate")
    assert out.stdout.startswith("the company said") and len(out.stdout.strip()) > len("the company said") + 10

    # The MLflow model scores as the run did: the folder's tokenizer and the fine-tuned weights.
    mlflow.set_tracking_uri(uri)
    row = mlflow.pyfunc.load_model(f"runs:/{second.info.run_id}/model").predict([paths["test"].read_text()]).iloc[0]
    assert row["n_tokens"] == second.data.metrics["test/tokens"]
    assert row["bpc"] == pytest.approx(tuned["test/bpc"], rel=1e-6)


def test_a_sharded_checkpoint_reads_as_its_single_file(tmp_path):
    """The shards `model.safetensors.index.json` lists hold the same tensors as the one file."""
    import json

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from lmbench.models.hf_checkpoint import pretrained, read_tensors

    single = write_tiny_checkpoint(tmp_path / "single", "llama", vocab_size=300)
    tensors = load_file(str(single / "model.safetensors"))
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (sharded / name).write_bytes((single / name).read_bytes())
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(sharded / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    got, expected = read_tensors(sharded), read_tensors(single)
    assert sorted(got) == names and all(np.array_equal(got[k], expected[k]) for k in names)
    ids = np.arange(40) % 300
    a, b = (pretrained(300, 0, str(folder)).score(ids) for folder in (single, sharded))
    np.testing.assert_array_equal(a, b)
