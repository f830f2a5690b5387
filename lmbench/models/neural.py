"""What every neural family shares: exact stream scoring, sampling, saving.

A neural family is a Keras model with
    call(inputs, states=None, training=False) -> (hidden, new_states)
    initial_state(batch_size) -> nested structure of tensors (empty for stateless models)
    output_head: an `lmbench.models.heads.OutputHead`, which turns `hidden` [..., d] into
        -log p(label) (`token_nll`: training and scoring) or the distribution (`log_probs`)
and the constructor kwargs returned by `get_config()` (a `head` mapping among them; bundles saved
before heads existed have none and get the full softmax, which they were). `NeuralLM` adds the
contract of `lmbench.models.base` on top.
"""

from __future__ import annotations

import inspect
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from hydra.utils import get_class

from lmbench.errors import reading_file
from lmbench.models.base import ModelBase, Progress
from lmbench.models.weights_file import guarded_write

WEIGHTS_FILE = "model.weights.h5"
CONFIG_FILE = "model_config.json"
# A training step's FLOPs per forward FLOP: the backward pass computes two GEMMs (the gradients of
# the input and of the weights) for every forward one (Kaplan et al. 2020, section 2.1).
TRAINING_FLOPS_PER_FORWARD = 3


@dataclass(frozen=True)
class Planned:
    """What a network of given options will hold, known before any weight exists (the family's
    `planned`, for `training.memory`'s estimate): trainable parameters of its input embedding
    tables (updated sparsely: their gradient is the rows a step read), every other trainable
    parameter, and the values one training step keeps for its backward pass (activations, in the
    compute dtype: a lower bound, counting the largest tensors of each layer)."""

    embedding: int
    dense: int
    activations: int

    @property
    def params(self) -> int:
        return self.embedding + self.dense


def stream_starts(ids: np.ndarray, n_streams: int, eos_id: int) -> np.ndarray:
    """Split points for scoring `ids` as `n_streams` parallel streams.

    Each stream starts right after an end-of-sentence token (or at 0), so every stream begins, like
    the split itself, with a fresh state and a lone boundary token as context. Points are the
    boundaries nearest to equal shares; duplicates collapse, so fewer streams may result.
    """
    n = len(ids)
    boundaries = np.flatnonzero(ids[:-1] == eos_id) + 1  # positions that follow an eos
    if n_streams <= 1 or len(boundaries) == 0:
        return np.array([0])
    targets = (np.arange(1, n_streams) * n) // n_streams
    nearest = np.clip(np.searchsorted(boundaries, targets), 0, len(boundaries) - 1)
    return np.unique(np.concatenate([[0], boundaries[nearest]]))


def pack_streams(ids: np.ndarray, starts: np.ndarray, eos_id: int):
    """(inputs, targets, mask) as [streams, max_len] arrays; inputs are targets shifted right by
    one, with eos as the first input of every stream; padding has mask 0."""
    ends = np.append(starts[1:], len(ids))
    width = int((ends - starts).max())
    inputs = np.full((len(starts), width), eos_id, dtype=np.int32)
    targets = np.zeros((len(starts), width), dtype=np.int32)
    mask = np.zeros((len(starts), width), dtype=bool)
    for row, (s, e) in enumerate(zip(starts, ends)):
        targets[row, : e - s] = ids[s:e]
        inputs[row, 1 : e - s] = ids[s : e - 1]
        mask[row, : e - s] = True
    return inputs, targets, mask


@contextmanager
def float32_policy():
    """Build Keras layers in float32 inside this block, whatever the global policy is."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def built_in_float32(cls: type[NeuralLM], config: dict) -> NeuralLM:
    """`cls(**config)` with its weights created, computing in float32 whatever the global policy."""
    with float32_policy():
        model = cls(**config)
        model.build_for_inference()
    return model


class StateStepper:
    """Next-token log-probabilities of a network that carries its history in a state (see
    `base.Stepper`)."""

    def __init__(self, model: NeuralLM, prompt: np.ndarray):
        self.model = model
        self.states = model.initial_state(1)
        self._read(np.concatenate([[model.eos_id], np.asarray(prompt, dtype=np.int64)]))

    def _read(self, ids: np.ndarray) -> None:
        hidden, self.states = self.model(tf.constant(ids[None, :], dtype=tf.int32), states=self.states)
        self.logits = self.model.output_head.log_probs(hidden[:, -1])[0].numpy().astype(np.float64)

    def next_logits(self) -> np.ndarray:
        return self.logits

    def append(self, token: int) -> None:
        self._read(np.array([token], dtype=np.int64))


class NeuralLM(ModelBase, keras.Model):
    """Base class of the neural families: the lmbench model contract on top of a Keras model."""

    family = "neural"
    is_network = True

    def __init__(self, vocab_size: int, eos_id: int, eval_window: int = 256):
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.eos_id = int(eos_id)
        self.eval_window = int(eval_window)
        self._score_fn = None
        self._float32_score_fn = None  # the scoring step traced inside `computing_in_float32`

    # -- the contract --------------------------------------------------------------------------
    def score(
        self, ids: np.ndarray, *, batch_size: int = 10, progress: Progress | None = None
    ) -> np.ndarray:
        """Log-probability (nats) of every token of `ids`, state carried through each stream."""
        ids = np.asarray(ids)
        if len(ids) == 0:
            return np.zeros(0, dtype=np.float64)
        starts = stream_starts(ids, batch_size, self.eos_id)
        inputs, targets, mask = pack_streams(ids, starts, self.eos_id)
        # Every window as long as the first (the last one padded, its padding masked): one traced
        # step of static shape, unrolled on a CPU, instead of a second one for the remainder and,
        # with a third length, a step generalized to windows of any length (a loop, slower).
        # A split shorter than a window: a power of two, so that short texts share a few traces.
        window = min(self.eval_window, 1 << (inputs.shape[1] - 1).bit_length())
        padding = [[0, 0], [0, -inputs.shape[1] % window]]
        inputs, targets, mask = (np.pad(a, padding) for a in (inputs, targets, mask))
        out = np.zeros(targets.shape, dtype=np.float64)
        states = self.initial_state(inputs.shape[0])
        fn = self._scoring_step()
        for t in range(0, inputs.shape[1], window):
            sl = slice(t, t + window)
            logp, states = fn(tf.constant(inputs[:, sl]), tf.constant(targets[:, sl]), states)
            out[:, sl] = logp.numpy()
            if progress is not None:
                progress(int(mask[:, sl].sum()), -float(out[:, sl][mask[:, sl]].sum()))
        return out[mask]  # row-major: streams are contiguous, in order

    def _scoring_step(self):
        if self._score_fn is None:

            @tf.function  # one trace per window shape, of which there are few (see `score`)
            def step(x, y, states):
                hidden, states = self(x, states=states, training=False)
                return -self.output_head.token_nll(hidden, y), states

            self._score_fn = step
        return self._score_fn

    def stepper(self, prompt: np.ndarray) -> StateStepper:
        """The model after reading a lone eos and `prompt`, ready to step token by token."""
        return StateStepper(self, prompt)

    # -- compute accounting ---------------------------------------------------------------------
    def flops_per_token(self, context: int | None = None, training: bool = True) -> float:
        """FLOPs per token, counted from the architecture (model FLOPs, as for MFU in PaLM, Chowdhery
        et al. 2022, appendix B).

        A multiply-add counts 2 FLOPs; only matrix products are counted -- every layer's GEMMs
        (recurrent cells' input and recurrent kernels, attention's projections, QKᵀ and AV, the MLP)
        and the output head's (`output_head.flops_per_token()`: 2 d |V| for the full softmax).
        Embedding lookups are free; elementwise work (biases, activations, norms, the softmax's exp,
        dropout) is not counted, the usual convention (Kaplan et al. 2020), worth a few percent.

        `training=True`: one training step per token, 3 x the forward pass (the backward computes two
        GEMMs per forward one); work the code does again to save memory (the full softmax head
        recomputing its logits in the gradient pass when they are not kept) is not counted.
        `context`: the training window's length (`trainer.bptt`; None: the model's `context`), which
        only attention depends on. `training=False`: what `score` computes per scored token,
        forward only (see the family's `scoring_flops_per_token`).
        """
        if not training:
            return float(self.scoring_flops_per_token())
        forward = self.body_flops_per_token(context) + self.output_head.flops_per_token()
        return float(TRAINING_FLOPS_PER_FORWARD * forward)

    def body_flops_per_token(self, context: int | None = None) -> float:
        """Forward FLOPs per position of `call` (everything before the output head) for windows of
        `context` tokens."""
        raise NotImplementedError(f"{type(self).__name__} does not count its FLOPs")

    def scoring_flops_per_token(self) -> float:
        """Forward FLOPs per token of `score`: every token goes once through the network and the head
        (the padding of the last window and of short streams is not counted)."""
        return self.body_flops_per_token() + self.output_head.flops_per_token()

    @classmethod
    def planned(cls, options: dict, batch: int, steps: int, compute_bytes: int = 4) -> Planned:
        """What a network of this family built with `options` (its constructor's arguments, the
        defaults filled in: `options_of`) holds, for training windows of batch x steps tokens."""
        raise NotImplementedError(f"{cls.__name__} does not plan its memory")

    @classmethod
    def options_of(cls, vocab_size: int, config: dict) -> dict:
        """The constructor's arguments for `config` (a model node's keys) with the defaults filled in."""
        bound = inspect.signature(cls).bind_partial(vocab_size=vocab_size, eos_id=0, **config)
        bound.apply_defaults()
        return dict(bound.arguments)

    def num_params(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.trainable_variables))

    def no_decay_variables(self) -> list:
        """The variables decoupled weight decay leaves alone (steps.exclude_from_decay): vectors --
        biases, norms' scales and shifts -- and embedding tables (tokens, learned positions; a tied
        output projection is the token table). Decay is meant to shrink the weight matrices that
        mix features; pulling a norm's scale or a rare word's embedding to zero only hurts."""
        tables = {id(layer.embeddings) for layer in self._flatten_layers() if isinstance(layer, keras.layers.Embedding)}
        return [v for v in self.trainable_variables if len(v.shape) < 2 or id(v) in tables]

    def save_weights(self, filepath, *args, **kwargs) -> None:
        """Keras' `save_weights`, safe on a full disk (`weights_file.guarded_write`): checkpoints and
        bundles both write through here."""
        with guarded_write(filepath, self.variables):
            super().save_weights(filepath, *args, **kwargs)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_weights(folder / WEIGHTS_FILE)
        config = {"class": f"{type(self).__module__}.{type(self).__qualname__}", **self.get_config()}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    @staticmethod
    def load(folder: str | Path) -> NeuralLM:
        folder = Path(folder)
        with reading_file(folder / CONFIG_FILE):  # missing or cut short: DamagedFile, naming it
            config = json.loads((folder / CONFIG_FILE).read_text())
        model = built_in_float32(get_class(config.pop("class")), config)  # however it was trained
        with reading_file(folder / WEIGHTS_FILE):
            model.load_weights(folder / WEIGHTS_FILE)
        return model

    @contextmanager
    def computing_in_float32(self):
        """This network computing in float32 inside the block, whatever policy built it: every
        layer's dtype policy is float32 until the block ends. Keras keeps variables in float32
        under every policy, so a network trained under mixed_bfloat16 is scored in float32 with
        its own weights -- the same numbers, bit for bit, as `float32_copy` holding them, without
        a second copy of every weight (|V| x d floats twice over). Functions traced inside are
        kept apart from those traced outside (a traced step keeps the dtypes it was traced with)."""
        if self.compute_dtype == "float32":
            yield self
            return
        layers = [self, *self._flatten_layers(include_self=False)]
        policies = [layer.dtype_policy for layer in layers]
        own, self._score_fn = self._score_fn, self._float32_score_fn
        for layer in layers:
            layer.dtype_policy = "float32"
        try:
            yield self
        finally:
            for layer, policy in zip(layers, policies):
                layer.dtype_policy = policy
            self._float32_score_fn, self._score_fn = self._score_fn, own

    def float32_copy(self) -> NeuralLM:
        """A float32 model of the same architecture (weights not copied): the evaluator scores a
        model trained under mixed_bfloat16 through it, so every reported figure is float32."""
        return built_in_float32(type(self), self.get_config())

    def adapt(self, train_ids: np.ndarray) -> None:
        """Before training from scratch: let the output head derive what it needs from the training
        ids (the adaptive softmax ranks tokens by their counts); saved with the weights."""
        self.output_head.adapt(train_ids)

    def build_for_inference(self) -> None:
        """Create all weights by running one token through the model."""
        self(tf.constant([[self.eos_id]], dtype=tf.int32), states=self.initial_state(1))

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "eos_id": self.eos_id, "eval_window": self.eval_window}
