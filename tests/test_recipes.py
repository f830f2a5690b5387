"""Every model trains on its family's recipe (conf/recipes.yaml) unless the user chose: presets, a
user's own architecture YAML, sweeps; and the user's choices win, on the command line and in presets."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmbench.cli.plugins import register_configs
from lmbench.config import model_family
from lmbench.paths import CONF_DIR

ADAM, SGD = "keras.optimizers.Adam", "keras.optimizers.SGD"
# (optimizer, learning rate, clip_norm, warm-up) of each family's recipe, as conf/recipes.yaml says.
RNN = (ADAM, 0.002, 1.0, 0)
LSTM = (SGD, 20.0, 0.25, 0)
TRANSFORMER = (ADAM, 0.001, 1.0, 200)
TRANSFORMER_MODERN = ("keras.optimizers.AdamW", 0.001, 1.0, 200)
PRETRAINED = ("keras.optimizers.AdamW", 0.0001, 1.0, 50)

WIDE_LSTM = """\
defaults:
  - head: full
  - _self_
_target_: lmbench.models.recurrent.RecurrentLM
cell: lstm
embedding_dim: 400
hidden_size: 400
num_layers: 2
dropout: 0.2
tie_embeddings: true
init_scale: 0.1
"""


def composed(*overrides: str, config_dir=None):
    """The config `lmbench` composes, resolved; `config_dir` is a user's folder (--config-dir)."""
    register_configs()
    search = [f"hydra.searchpath=[file://{config_dir}]"] if config_dir else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *search])
    return OmegaConf.to_container(cfg, resolve=True)


def recipe_of(cfg: dict) -> tuple:
    opt, trainer = cfg["optimizer"], cfg["trainer"]
    return opt["_target_"], opt["learning_rate"], trainer["clip_norm"], trainer["warmup_steps"]


@pytest.mark.parametrize(("model", "recipe", "expected"), [
    ("rnn", "rnn", RNN), ("rnn_mikolov", "rnn", RNN), ("lstm", "lstm", LSTM), ("lstm_small", "lstm", LSTM),
    ("lstm_medium", "lstm", LSTM), ("gru", "gru", LSTM), ("transformer", "transformer", TRANSFORMER),
    ("transformer_small", "transformer", TRANSFORMER), ("transformer_char", "transformer", TRANSFORMER),
    ("ngram", "default", LSTM), ("transformer_modern", "transformer_modern", TRANSFORMER_MODERN),
    ("pretrained", "pretrained", PRETRAINED),
])
def test_every_preset_trains_on_its_familys_recipe(model, recipe, expected):
    cfg = composed(f"model={model}")
    assert cfg["recipe"] == recipe
    assert recipe_of(cfg) == expected


def test_the_family_presets_of_the_sweeps_keep_the_recipes_they_had():
    """`+experiment/family=...` (quick, ptb_classic) gave these values before recipes followed the
    model; the recipe gives the same, so recorded figures stay comparable."""
    assert recipe_of(composed("+experiment/family=rnn")) == RNN
    assert recipe_of(composed("+experiment/family=lstm")) == LSTM
    assert recipe_of(composed("+experiment/family=transformer")) == TRANSFORMER
    adaptive = composed("+experiment/family=transformer_adaptive")
    assert recipe_of(adaptive) == TRANSFORMER and adaptive["model"]["head"]["kind"] == "adaptive"


def test_a_users_new_architecture_yaml_gets_its_familys_recipe(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "lstm_wide.yaml").write_text(WIDE_LSTM)
    (tmp_path / "model" / "my_rnn.yaml").write_text(WIDE_LSTM.replace("cell: lstm", "cell: rnn"))
    assert recipe_of(composed("model=lstm_wide", config_dir=tmp_path)) == LSTM
    assert recipe_of(composed("model=my_rnn", config_dir=tmp_path)) == RNN
    # It composes with an output head of the user's choice, as the presets do.
    adaptive = composed("model=lstm_wide", "model/head=adaptive", config_dir=tmp_path)
    assert adaptive["model"]["head"]["kind"] == "adaptive" and recipe_of(adaptive) == LSTM


@pytest.mark.parametrize(("overrides", "expected"), [
    (("optimizer=sgd",), (SGD, 20.0, 1.0, 0)),  # the optimizer is the user's; clipping stays the family's
    (("optimizer.learning_rate=0.01",), (ADAM, 0.01, 1.0, 0)),
    (("trainer.clip_norm=0.5", "trainer.warmup_steps=10"), (ADAM, 0.002, 0.5, 10)),
    (("trainer.clip_norm=null",), (ADAM, 0.002, None, 0)),
    (("recipe=lstm",), LSTM),  # another family's recipe, by name
])
def test_the_users_choices_win_over_the_recipe(overrides, expected):
    assert recipe_of(composed("model=rnn", *overrides)) == expected


def test_a_presets_choices_win_over_the_recipe(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /optimizer: adamw\noptimizer:\n  learning_rate: 0.0003\n"
        "trainer:\n  warmup_steps: 50\n"
    )
    cfg = composed("model=transformer", "experiment=mine", config_dir=tmp_path)
    assert recipe_of(cfg) == ("keras.optimizers.AdamW", 0.0003, 1.0, 50)


def test_every_job_of_a_sweep_follows_its_own_model_and_the_users_choice_reaches_all(tmp_path):
    """A sweep composes each job from the shared overrides plus the job's values (Hydra's
    load_sweep_config), i.e. what `compose` does with one value each."""
    jobs = {m: composed(f"model={m}") for m in ("ngram", "rnn", "lstm", "transformer")}
    assert [recipe_of(jobs[m]) for m in ("rnn", "lstm", "transformer")] == [RNN, LSTM, TRANSFORMER]
    chosen = [recipe_of(composed(f"model={m}", "optimizer=adam", "optimizer.learning_rate=0.003"))
              for m in ("rnn", "lstm", "transformer")]
    assert [c[:2] for c in chosen] == [(ADAM, 0.003)] * 3


def test_model_family_reads_the_target_and_the_cell():
    assert model_family({"_target_": "lmbench.models.recurrent.RecurrentLM", "cell": "gru"}) == "gru"
    assert model_family({"_target_": "lmbench.models.transformer.TransformerLM"}) == "transformer"
    assert model_family({"_target_": "mypackage.models.MyLM"}) == "mylm"


def test_a_new_family_without_a_recipe_trains_on_the_default_and_one_with_a_recipe_on_its_own(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("_target_: mypackage.models.MyLM\nwidth: 8\n")
    assert composed("model=mine", config_dir=tmp_path)["recipe"] == "default"
    # A family's recipe is an entry of `recipes` under its name (conf/recipes.yaml; here in a preset).
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nrecipes:\n  mylm:\n    optimizer: keras.optimizers.Adam\n    learning_rate: 0.0005\n"
    )
    with_recipe = composed("model=mine", "experiment=mine", config_dir=tmp_path)
    assert with_recipe["recipe"] == "mylm" and recipe_of(with_recipe) == (ADAM, 0.0005, None, 0)


def test_the_run_logs_the_recipe_it_used_not_the_table_of_recipes(tmp_path):
    from helpers import only_run, tiny_cfg

    from lmbench.training.run import run

    cfg = tiny_cfg(tmp_path, "trainer.max_steps=2", model=("model=rnn", "model.hidden_size=8", "model.embedding_dim=8"))
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    _, r = only_run(cfg.tracking.uri)
    params = r.data.params
    assert params["recipe"] == "rnn" and params["trainer.clip_norm"] == "1.0"
    assert not any(k.startswith("recipes.") for k in params)


def test_a_model_yaml_names_its_own_recipe_and_the_user_still_wins(tmp_path):
    """`_recipe_` in a model node picks a recipe other than its family's (the Transformer class's
    `transformer_modern` preset); `recipe=` and the optimizer group still override it, and the key
    is not a constructor argument (check_target skips it, run.build_model drops it)."""
    modern = composed("model=transformer_modern")
    assert modern["optimizer"]["weight_decay"] == 0.1 and modern["trainer"]["lr_schedule"] == "cosine"
    assert composed("model=transformer")["optimizer"]["weight_decay"] is None  # decay only where a recipe says
    assert recipe_of(composed("model=transformer_modern", "recipe=transformer")) == TRANSFORMER
    assert recipe_of(composed("model=transformer_modern", "optimizer=adam"))[0] == ADAM
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "lstm_adam.yaml").write_text(WIDE_LSTM + "_recipe_: rnn\n")
    assert recipe_of(composed("model=lstm_adam", config_dir=tmp_path)) == RNN
