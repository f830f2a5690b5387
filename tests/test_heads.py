"""Output heads (lmbench/models/heads.py): the config, bundles saved before heads existed, and the
full softmax head against the reference computed from full logits."""

from pathlib import Path

import numpy as np
import pytest

from lmbench.config.schema import FullHeadConfig, head_config
from lmbench.errors import ConfigError

BEFORE_HEADS = Path(__file__).parent / "data" / "before_heads"


def test_head_config_defaults_and_refusals():
    assert head_config(None) == FullHeadConfig()
    assert head_config({"kind": "full", "chunk_positions": 7}).chunk_positions == 7
    with pytest.raises(ConfigError, match="model.head.kind='softer' is not one of full"):
        head_config({"kind": "softer"})
    with pytest.raises(ConfigError, match="model.head.chunk is not an option of the full head"):
        head_config({"kind": "full", "chunk": 3})
    with pytest.raises(ConfigError, match="chunk_positions must be >= 1"):
        head_config({"chunk_positions": 0})
    with pytest.raises(ConfigError, match="must be a mapping"):
        head_config("full")


@pytest.mark.parametrize("name", ["lstm_tied", "tr"])
def test_bundle_saved_before_heads_loads_and_scores_as_then(name):
    # Saved by lmbench 7a2ff37 (no `head` key, output variables on the model): an LSTM with tied
    # embeddings and an untied Transformer, with the scores that code gave on these ids.
    from lmbench.models.neural import NeuralLM

    folder = BEFORE_HEADS / name
    model = NeuralLM.load(folder)
    assert model.get_config()["head"] == {"kind": "full", "chunk_positions": None}
    ids = np.random.default_rng(0).integers(0, 50, 200)
    np.testing.assert_allclose(model.score(ids), np.load(folder / "scores.npy"), rtol=0, atol=1e-6)


def test_head_is_saved_with_the_model(tmp_path):
    from lmbench.models.neural import NeuralLM
    from lmbench.models.recurrent import RecurrentLM

    model = RecurrentLM(30, 0, embedding_dim=8, hidden_size=8, head={"kind": "full", "chunk_positions": 5})
    model.build_for_inference()
    model.save(tmp_path)
    loaded = NeuralLM.load(tmp_path)
    assert loaded.output_head.config == FullHeadConfig(chunk_positions=5)
    ids = np.random.default_rng(1).integers(0, 30, 50)
    np.testing.assert_allclose(loaded.score(ids), model.score(ids), rtol=0, atol=1e-6)
