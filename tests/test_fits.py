"""A model that cannot fit is refused before it is built, with the estimate and the machine's
memory (lmbench/training/memory.py); an allocation that fails anyway is one paragraph and a FAILED
run. The estimate's parameter count is exact for every family and head."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import lmbench, only_run, tiny_cfg, write_tiny_checkpoint
from mlflow import MlflowClient

from lmbench.errors import ConfigError
from lmbench.models.recurrent import RecurrentLM
from lmbench.models.transformer import TransformerLM
from lmbench.training import memory
from lmbench.training.network import NetworkTrainer
from lmbench.training.run import run

ADAPTIVE = {"kind": "adaptive", "cutoffs": [50, 200]}


@pytest.mark.parametrize("cls, options", [
    (RecurrentLM, {"cell": "lstm", "hidden_size": 24, "embedding_dim": 16}),
    (RecurrentLM, {"cell": "gru", "num_layers": 3, "embedding_dim": 16, "hidden_size": 24}),
    (RecurrentLM, {"cell": "rnn", "hidden_size": 32, "embedding_dim": 32, "tie_embeddings": True}),
    (RecurrentLM, {"cell": "lstm", "hidden_size": 32, "embedding_dim": 16, "head": ADAPTIVE}),
    (TransformerLM, {"n_layer": 2, "d_model": 32, "d_ff": 64, "context": 8}),
    (TransformerLM, {"n_layer": 1, "d_model": 32, "d_ff": 64, "context": 8, "positions": "sinusoidal",
                     "tie_embeddings": True}),
    (TransformerLM, {"n_layer": 1, "d_model": 32, "d_ff": 64, "context": 8, "head": {**ADAPTIVE, "factor": 2.0}}),
    (RecurrentLM, {"cell": "lstm", "num_layers": 3, "hidden_size": 40, "embedding_dim": 16, "last_layer_size": 16,
                   "tie_embeddings": True, "weight_drop": 0.5}),  # AWD-LSTM: a narrower, tied last layer
    (TransformerLM, {"n_layer": 2, "d_model": 32, "d_ff": 96, "context": 8, "positions": "rope", "norm": "rmsnorm",
                     "mlp": "swiglu", "bias": False, "n_head": 4, "n_kv_head": 2, "qk_norm": True}),
    (TransformerLM, {"n_layer": 1, "d_model": 32, "d_ff": 64, "context": 8, "mlp": "swiglu", "n_head": 4,
                     "n_kv_head": 1}),  # SwiGLU and grouped K/V with biases and LayerNorm
])
def test_the_planned_parameters_are_those_the_built_model_has(cls, options):
    model = cls(vocab_size=500, eos_id=0, **options)
    model(np.zeros((2, 8), np.int32))
    planned = cls.planned(cls.options_of(500, options), batch=2, steps=8)
    assert planned.params == model.num_params()
    assert planned.embedding == 500 * options.get("embedding_dim", options.get("d_model"))
    assert planned.activations > 2 * 8 * options.get("hidden_size", options.get("d_model"))


def test_the_estimate_counts_optimizer_slots_and_precision(tmp_path):
    sgd = memory.estimate(tiny_cfg(tmp_path, "optimizer=sgd"), 1000, "float32")
    adam = memory.estimate(tiny_cfg(tmp_path, "optimizer=adam"), 1000, "float32")
    bf16 = memory.estimate(tiny_cfg(tmp_path, "optimizer=adam"), 1000, "mixed_bfloat16")
    params = adam.planned.params
    assert sgd.slots == 0 and adam.slots == 2 * 4 * params
    assert adam.weights == 4 * params and adam.casts == 0 and bf16.casts == 2 * adam.planned.dense
    assert bf16.activations * 2 == adam.activations  # bfloat16 activations: half the bytes
    assert memory.estimate(tiny_cfg(tmp_path, model=("model=ngram",)), 1000, "float32") is None


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_a_pretrained_checkpoint_is_planned_from_its_config_json_exactly(tmp_path, kind):
    """model=pretrained is a factory, not a class: its plan is TransformerLM's with the options
    config.json gives, and counts the parameters of the model the factory builds."""
    from lmbench.models.hf_checkpoint import pretrained

    folder = write_tiny_checkpoint(tmp_path / kind, kind, vocab_size=300)
    cfg = tiny_cfg(tmp_path, model=("model=pretrained", f"model.path={folder}"))
    found = memory.estimate(cfg, 300, "float32")
    built = pretrained(300, 0, str(folder))
    assert found is not None and found.planned.params == built.num_params() > 0


def test_a_model_that_cannot_fit_is_refused_at_once_with_the_figures(tmp_path):
    """`model.hidden_size=200000` used to allocate for minutes (19.5 GB resident on a 24 GB machine)
    and end in TensorFlow's ResourceExhaustedError traceback or the kernel's OOM killer (exit 137)."""
    started = time.monotonic()
    proc = lmbench(tmp_path, "model=lstm", "model.hidden_size=200000", "model.embedding_dim=16", ok=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (paragraph,) = [line for line in proc.stderr.splitlines() if line.startswith("lmbench: error:")]
    assert "the model cannot fit: training it needs at least" in paragraph
    assert "parameters" in paragraph and "GB available" in paragraph and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 120  # a TensorFlow import and a tiny corpus, nothing allocated
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_experiment_by_name("lmbench") is None  # refused before any run was opened


def test_the_refusal_follows_the_memory_available(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path)
    found = memory.estimate(cfg, 20, "float32")
    monkeypatch.setattr(memory, "available_host", lambda: found.total + 1)
    assert memory.check_fits(cfg, 20, "float32") == found  # fits, just
    monkeypatch.setattr(memory, "available_host", lambda: found.total - 1)
    with pytest.raises(ConfigError, match=r"cannot fit: .* and this machine has 0 MB available"):
        memory.check_fits(cfg, 20, "float32")


def test_sizes_read_in_megabytes_below_a_gigabyte_and_no_part_shows_as_zero(tmp_path):
    assert [memory.size_text(n) for n in (0, 18_400_000, 999_000_000, 10**9, 2_794_000_000)] == [
        "0 MB", "18 MB", "999 MB", "1.00 GB", "2.79 GB"]
    parts = memory.estimate(tiny_cfg(tmp_path), 20, "float32").parts()
    assert parts.startswith("weights ") and " 0.0" not in parts and "MB" in parts


@pytest.mark.parametrize("error", [MemoryError(), tf.errors.ResourceExhaustedError(None, None, "OOM when allocating")])
def test_an_allocation_that_fails_in_training_is_one_paragraph_and_a_failed_run(tmp_path, monkeypatch, error):
    def fit(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(NetworkTrainer, "fit", fit)  # the trainer a network is fitted by
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(ConfigError, match=f"out of memory .*{type(error).__name__}.*lower trainer.batch_size"):
        run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, r = only_run(cfg.tracking.uri)
    assert r.info.status == "FAILED" and "out of memory" in r.data.tags["lmbench.error"]
