"""`model=pretrained`: lmbench's Transformer built from a Hugging Face checkpoint computes the same
logits as Hugging Face `transformers` (PyTorch, CPU) on the same inputs. The checkpoints are tiny
and random, written by `transformers`' own `save_pretrained`; the `reference` extra
(`pip install -e ".[reference]"`: torch and transformers, installed by .ci/run) is needed, else the
test skips and says so."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import HF_TINY, tiny_tokenizer

from lmbench.models.hf_checkpoint import pretrained

REASON = 'the reference check needs torch and transformers: pip install -e ".[reference]" (see pyproject.toml)'
torch = pytest.importorskip("torch", reason=REASON)
transformers = pytest.importorskip("transformers", reason=REASON)

V = 300


def hf_model(kind: str, **config):
    """A random tiny `transformers` model of HF_TINY[kind], its weights drawn wider than the default
    init (0.02) so that every layer moves the logits."""
    torch.manual_seed(0)
    options = {k: v for k, v in {**HF_TINY[kind], "vocab_size": V, **config}.items() if k != "model_type"}
    if kind == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**options))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**options))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("norm.weight") or ".ln_" in name else 0.0, 0.2)
    return model.eval()


@pytest.mark.parametrize("kind, config", [
    ("gpt2", {}),
    ("llama", {}),  # grouped-query attention, head_dim 16 (not d_model / heads = 8), untied head, rope_theta 500
    ("llama", {"tie_word_embeddings": True, "num_key_value_heads": 4, "head_dim": None}),
])
def test_logits_equal_transformers(tmp_path, kind, config):
    reference = hf_model(kind, **config)
    reference.save_pretrained(tmp_path, safe_serialization=True)
    tiny_tokenizer(V).save(str(tmp_path / "tokenizer.json"))
    ids = np.random.default_rng(1).integers(0, V, (3, 40))
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).logits.numpy()
    model = pretrained(vocab_size=V, eos_id=0, path=str(tmp_path))
    got = model.output_head.logits(model.features(tf.constant(ids, tf.int32))).numpy()
    assert np.abs(expected).max() > 1.0  # logits that say something
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
