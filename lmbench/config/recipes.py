"""Training recipes that follow the model: each family trains on its own unless the user chose.

A recipe (`conf/recipes.yaml`, typed by `schema.RecipeConfig`) is the optimizer, learning rate,
clipping, warm-up and schedule a family is known to train well with. The root key `recipe` names
the one a run uses; by default it is an interpolation of the `lmbench_recipe` resolver below, which
reads the composed `model` node (`_target_`, and `cell` for the recurrent family) -- so a preset
and any new architecture YAML of a known family get their family's recipe with nothing to declare.
A model YAML that trains differently from its family names its own recipe with the key `_recipe_`
(RECIPE_KEY; `conf/model/transformer_modern.yaml`): a key of the model node, so it travels with the
model wherever the node goes (a sweep's jobs, a fine-tune adopting a bundle's model), and not an
argument of the model's class (`check_target` skips `_..._` keys, `run.build_model` drops it).
The optimizer group's default option (`conf/optimizer/recipe.yaml`) and the trainer's `clip_norm`,
`warmup_steps` and `lr_schedule` are interpolations into `recipes.<recipe>`: anything the user sets
(`optimizer=adam`, `optimizer.learning_rate=0.01`, `trainer.clip_norm=0.5`, an experiment preset's
values) replaces the interpolation and so wins, in a single run and in every job of a sweep.

Hydra's defaults list cannot do this: its interpolations see group choices (`${model}`), not a
config's values, and a user's `conf/model/my_lstm.yaml` is no choice Hydra could map to a family.

Knows neither MLflow nor TensorFlow: the family comes from the `_target_` string.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

RESOLVER = "lmbench_recipe"
RECIPE_KEY = "_recipe_"  # a model node's own recipe, where it is not its family's
DEFAULT = "default"  # the recipe of a family none is written for: plain SGD, the recurrent one

# Families whose `_target_` alone does not say which they are: the recurrent class builds an RNN,
# a GRU or an LSTM by `cell`.
RECURRENT_TARGET = "lmbench.models.recurrent.RecurrentLM"
TARGET_FAMILIES = {
    "lmbench.models.transformer.TransformerLM": "transformer",
    "lmbench.models.ngram.NGramLM": "ngram",
    "lmbench.artifacts.interpolation.interpolate": "interpolated",
}


def model_family(model: DictConfig | dict | None) -> str:
    """The family a `model` node builds: `rnn`/`lstm`/`gru` for the recurrent class (by `cell`),
    `transformer`, `ngram`, ...; another class: its name, lower-cased (`mymodule.MyLM` -> `mylm`)."""
    if model is None:
        return DEFAULT
    target = str(model.get("_target_") or "")
    if target == RECURRENT_TARGET:
        return str(model.get("cell") or "lstm")
    return TARGET_FAMILIES.get(target, target.rpartition(".")[2].lower() or DEFAULT)


def recipe_for(root: DictConfig) -> str:
    """The recipe of the composed config's model: the one its node names (`_recipe_`), else its
    family's if `recipes` has one, else `default`."""
    model = root.get("model")
    if model is not None and model.get(RECIPE_KEY):
        return str(model.get(RECIPE_KEY))
    family = model_family(model)
    recipes = root.get("recipes") or {}
    return family if family in recipes else DEFAULT


def _resolve(*, _root_: DictConfig) -> str:
    return recipe_for(_root_)


def register_resolver() -> None:
    """Make `${lmbench_recipe:}` resolvable (idempotent; every lmbench process imports this)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve)


register_resolver()
