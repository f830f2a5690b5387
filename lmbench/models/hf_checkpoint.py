"""A pretrained Hugging Face checkpoint folder read into lmbench's own Transformer (`model=pretrained`).

The folder is what `save_pretrained` writes and the Hub serves: `config.json`, the weights in
`model.safetensors` or shards listed by `model.safetensors.index.json`, and `tokenizer.json` (read by
`data/pretrained.py`, the run's tokenizer). Two families, by `config.json`'s `model_type`:

- `gpt2` (GPT-2, DistilGPT-2): pre-LayerNorm blocks with biases, learned positions, GELU in its tanh
  form (`gelu_new`), the head tied to the token embedding. Its Conv1D weights are [in, out], as a
  Keras kernel is; `c_attn` holds q, k and v side by side, as lmbench's fused projection does.
- `llama` (Llama 2, TinyLlama, SmolLM): RMSNorm, rotary positions in the "rotate half" layout that
  lmbench's RoPE uses too (no permutation), SwiGLU, no biases, grouped-query attention. Its Linear
  weights are [out, in] and are transposed; q, k, v are stacked into the fused projection, and gate
  and up into the fused SwiGLU input.

The weights are read with `safetensors`' NumPy API (bfloat16 through ml_dtypes, computed in
float32); no deep-learning framework besides TensorFlow. Anything else (another `model_type`, rope
scaling, biases where Llama has none) is refused with a `ConfigError` before any training, as is a
missing or damaged file. lmbench's output head keeps a bias of its own, set to zero here, so the
logits are the checkpoint's; fine-tuning trains it with the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lmbench.errors import ConfigError
from lmbench.models.transformer import TransformerLM

CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"
SUPPORTED = ("gpt2", "llama")
SUPPORTED_TEXT = (
    "GPT-2-family (model_type gpt2: GPT-2, DistilGPT-2) and Llama-family checkpoints (model_type llama: "
    "Llama 2, TinyLlama, SmolLM) in the Hugging Face format"
)


def read_config(folder: str | Path) -> dict[str, Any]:
    """`config.json` of a checkpoint folder, its `model_type` one lmbench reads."""
    path = Path(folder) / CONFIG_FILE
    if not Path(folder).is_dir():
        raise ConfigError(f"model.path={str(folder)!r} is not a folder; give a Hugging Face checkpoint folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as ex:
        what = "has no" if not path.exists() else "has a damaged"
        raise ConfigError(
            f"model.path={str(folder)!r} {what} {CONFIG_FILE} ({type(ex).__name__}: {ex}); a Hugging Face "
            f"checkpoint folder holds config.json, model.safetensors and tokenizer.json. lmbench reads "
            f"{SUPPORTED_TEXT}"
        ) from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind not in SUPPORTED:
        raise ConfigError(
            f"model.path={str(folder)!r} is a checkpoint of model_type {kind!r}, which lmbench cannot read: it "
            f"reads {SUPPORTED_TEXT}. Convert the checkpoint to one of them, or train an lmbench model"
        )
    return config


def read_tensors(folder: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint as float32, by name (one file, or the shards of the index)."""
    from safetensors.numpy import load_file  # its own package, loaded only when a checkpoint is read

    folder = Path(folder)
    files = [folder / WEIGHTS_FILE]
    if not files[0].is_file() and (folder / INDEX_FILE).is_file():
        try:
            weight_map = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as ex:
            raise ConfigError(f"model.path: {folder / INDEX_FILE} is damaged ({type(ex).__name__}: {ex})") from None
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        if not path.is_file():
            raise ConfigError(
                f"model.path={str(folder)!r} has no {path.name}: the checkpoint's weights are in "
                f"{WEIGHTS_FILE} (or in the shards {INDEX_FILE} lists); download the whole folder"
            )
        try:
            loaded = load_file(str(path))
        except Exception as ex:  # safetensors' SafetensorError, a header that is not JSON, ...
            raise ConfigError(
                f"model.path: {path} is damaged and cannot be read ({type(ex).__name__}: {ex}); it may be cut "
                "short by an interrupted download. Download it again"
            ) from None
        tensors.update({name: np.asarray(t, dtype=np.float32) for name, t in loaded.items()})
    return tensors


def transformer_options(config: dict[str, Any]) -> dict[str, Any]:
    """lmbench's Transformer options for the checkpoint's `config.json`."""
    return _gpt2_options(config) if config["model_type"] == "gpt2" else _llama_options(config)


def _gpt2_options(c: dict[str, Any]) -> dict[str, Any]:
    act = c.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
        raise ConfigError(f"this GPT-2 checkpoint uses activation_function={act!r}; lmbench has gelu and gelu_new")
    if c.get("scale_attn_by_inverse_layer_idx") or c.get("reorder_and_upcast_attn") or not c.get(
        "scale_attn_weights", True
    ):
        raise ConfigError("this GPT-2 checkpoint scales its attention in a way lmbench's Transformer does not")
    d = c["n_embd"]
    return dict(
        n_layer=c["n_layer"], n_head=c["n_head"], d_model=d, d_ff=c.get("n_inner") or 4 * d,
        context=c["n_positions"], positions="learned", norm="layernorm", mlp="gelu", bias=True,
        tie_embeddings=True, norm_eps=c.get("layer_norm_epsilon", 1e-5), gelu_approximate=act != "gelu",
    )


def _llama_options(c: dict[str, Any]) -> dict[str, Any]:
    rope = c.get("rope_parameters") or {}  # transformers 5 keeps rope_theta and rope_type here
    scaling = c.get("rope_scaling") or ({"rope_type": rope["rope_type"]} if "rope_type" in rope else None)
    problems = [
        f"rope scaling {scaling}" if scaling and scaling.get("rope_type", scaling.get("type")) != "default" else "",
        f"hidden_act={c.get('hidden_act')!r}" if c.get("hidden_act", "silu") != "silu" else "",
        "attention_bias=true" if c.get("attention_bias") else "",
        "mlp_bias=true" if c.get("mlp_bias") else "",
    ]
    if any(problems):
        raise ConfigError(
            f"this Llama-family checkpoint has {', '.join(p for p in problems if p)}, which lmbench's Transformer "
            "does not build (it has plain RoPE, SiLU-gated MLPs and no biases)"
        )
    d, heads = c["hidden_size"], c["num_attention_heads"]
    return dict(
        n_layer=c["num_hidden_layers"], n_head=heads, d_model=d, d_ff=c["intermediate_size"],
        mlp_hidden=c["intermediate_size"], context=c["max_position_embeddings"], positions="rope", norm="rmsnorm",
        mlp="swiglu", bias=False, tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        n_kv_head=c.get("num_key_value_heads") or heads, head_dim=c.get("head_dim") or d // heads,
        rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))), norm_eps=c.get("rms_norm_eps", 1e-6),
    )


def checkpoint_options(
    path: str, context: int | None = None, eval_stride: int | None = None, dropout: float = 0.0,
    head: dict | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The folder's config.json and the `TransformerLM` options it gives with the run's settings
    (no weights read). `context`: the longest window, at most the checkpoint's (null: the checkpoint's)."""
    config = read_config(path)
    options = transformer_options(config)
    longest = options["context"]
    if context is not None and not 1 <= context <= longest:
        raise ConfigError(f"model.context={context} must be in [1, {longest}] (the checkpoint's context) or null")
    if (head or {}).get("kind", "full") != "full":
        raise ConfigError("model=pretrained needs model/head=full: the checkpoint's output layer is a full softmax")
    options.update(context=context or longest, eval_stride=eval_stride, dropout=dropout, head=head)
    return config, options


def pretrained(
    vocab_size: int, eos_id: int, path: str, context: int | None = None, eval_stride: int | None = None,
    dropout: float = 0.0, head: dict | None = None,
) -> TransformerLM:
    """The checkpoint in the folder `path` as a `TransformerLM` with its weights (`model=pretrained`'s
    `_target_`; the options: `checkpoint_options`); `vocab_size` comes from the run's vocabulary, the
    folder's tokenizer, and must be the embedding's."""
    config, options = checkpoint_options(path, context, eval_stride, dropout, head)
    tensors = read_tensors(path)
    table = _named(config, tensors)("embedding")
    if table.shape[0] != vocab_size:
        raise ConfigError(
            f"the tokenizer.json of model.path={path!r} has {vocab_size} tokens but the checkpoint's embedding "
            f"has {table.shape[0]} rows; the tokenizer must be the one the checkpoint was trained with"
        )
    model = TransformerLM(vocab_size=vocab_size, eos_id=eos_id, **options)
    load_weights(model, config, tensors)
    return model


def planned_model(vocab_size: int, node: dict[str, Any]) -> tuple[type[TransformerLM], dict[str, Any]]:
    """The class and the full options `pretrained` builds for the model node `node` (its arguments
    but the vocabulary's), from config.json alone: what the memory estimate plans before anything is
    loaded, so that a checkpoint too large for the machine is refused with the figures."""
    _, options = checkpoint_options(**node)
    return TransformerLM, TransformerLM.options_of(vocab_size, options)


pretrained.planned_model = planned_model  # read by training/memory.py: a factory that plans as a class


def _named(config: dict[str, Any], tensors: dict[str, np.ndarray]):
    """A function from a tensor's name (GPT-2's without `transformer.`) to its array, or the
    ConfigError that names the missing one; "embedding" is the token table of either family."""
    if config["model_type"] == "gpt2":
        tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    aliases = {"embedding": "wte.weight" if config["model_type"] == "gpt2" else "model.embed_tokens.weight"}

    def take(name: str) -> np.ndarray:
        name = aliases.get(name, name)
        if name not in tensors:
            raise ConfigError(f"the checkpoint has no tensor {name!r}: its weights do not match its {CONFIG_FILE}")
        return tensors[name]

    return take


def load_weights(model: TransformerLM, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """The checkpoint's tensors into the built model's variables, each shape checked."""
    model.build_for_inference()
    take = _named(config, tensors)
    pairs = _gpt2_pairs(model, take) if config["model_type"] == "gpt2" else _llama_pairs(model, take, config)
    for variable, array, name in pairs:
        if tuple(variable.shape) != array.shape:
            raise ConfigError(
                f"the checkpoint's {name} has shape {array.shape}, where its {CONFIG_FILE} makes lmbench expect "
                f"{tuple(variable.shape)}: the weights and the config do not belong together"
            )
        variable.assign(array)


def _head_pairs(model: TransformerLM, take, untied: str | None) -> list:
    if untied is None:  # tied: the token table is the projection; the bias lmbench keeps is zero
        return [(model.output_bias, np.zeros(model.vocab_size, np.float32), "output bias")]
    kernel = model.projection.kernel
    return [(kernel, take(untied).T, untied), (model.projection.bias, np.zeros(model.vocab_size, np.float32), "bias")]


def _gpt2_pairs(model: TransformerLM, take) -> list:
    pairs = [(model.token_embedding.embeddings, take("wte.weight"), "wte.weight"),
             (model.position_embedding.embeddings, take("wpe.weight")[: model.context], "wpe.weight")]
    layers = {"ln1.gamma": "ln_1.weight", "ln1.beta": "ln_1.bias", "ln2.gamma": "ln_2.weight", "ln2.beta": "ln_2.bias",
              "attn.qkv.kernel": "attn.c_attn.weight", "attn.qkv.bias": "attn.c_attn.bias",
              "attn.out.kernel": "attn.c_proj.weight", "attn.out.bias": "attn.c_proj.bias",
              "fc.kernel": "mlp.c_fc.weight", "fc.bias": "mlp.c_fc.bias",
              "proj.kernel": "mlp.c_proj.weight", "proj.bias": "mlp.c_proj.bias"}  # Conv1D: [in, out] as Keras
    for i, block in enumerate(model.blocks):
        for ours, theirs in layers.items():
            pairs.append((_variable(block, ours), take(f"h.{i}.{theirs}"), f"h.{i}.{theirs}"))
    pairs += [(model.final_norm.gamma, take("ln_f.weight"), "ln_f.weight"),
              (model.final_norm.beta, take("ln_f.bias"), "ln_f.bias")]
    return pairs + _head_pairs(model, take, None)


def _llama_pairs(model: TransformerLM, take, config: dict[str, Any]) -> list:
    pairs = [(model.token_embedding.embeddings, take("embedding"), "model.embed_tokens.weight")]
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        linear = lambda *names, p=p: np.concatenate([take(p + n + ".weight").T for n in names], axis=1)  # noqa: E731
        pairs += [
            (block.ln1.scale, take(p + "input_layernorm.weight"), p + "input_layernorm.weight"),
            (block.attn.qkv.kernel, linear("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), p + "q,k,v"),
            (block.attn.out.kernel, linear("self_attn.o_proj"), p + "self_attn.o_proj.weight"),
            (block.ln2.scale, take(p + "post_attention_layernorm.weight"), p + "post_attention_layernorm.weight"),
            (block.fc.kernel, linear("mlp.gate_proj", "mlp.up_proj"), p + "mlp.gate_proj,up_proj"),
            (block.proj.kernel, linear("mlp.down_proj"), p + "mlp.down_proj.weight"),
        ]
    pairs.append((model.final_norm.scale, take("model.norm.weight"), "model.norm.weight"))
    return pairs + _head_pairs(model, take, None if model.tie_embeddings else "lm_head.weight")


def _variable(layer, dotted: str):
    for part in dotted.split("."):
        layer = getattr(layer, part)
    return layer
