"""A trained model ready to use: its model, tokenizer and vocabulary (`Bundle`), from any source.

`load_bundle(source)` accepts what `sources.resolve` does (a bundle folder, a Hydra run folder, an
MLflow run id, `runs:/<id>[/model]`, `models:/<name>/<version>`, a downloaded MLflow model folder).
The tokenizer is rebuilt from its config, with the trained model the bundle keeps when it is a
learned one (`tokenizer.json`: BPE and the other subword kinds, never trained again), so text is cut
exactly as the training corpus was, and out-of-vocabulary tokens map to the vocabulary's unknown
token (an error when it has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate

from lmbench.artifacts.format import VOCAB_FILE, ModelNotFound, component_paths, damaged, load_model, read_meta
from lmbench.artifacts.sources import resolve
from lmbench.data.learned import LearnedTokenizer
from lmbench.data.pipeline import count_oov
from lmbench.data.tokenizers import NUMBER, WordTokenizer
from lmbench.data.vocab import Vocabulary
from lmbench.errors import ConfigError, DamagedFile
from lmbench.models.base import check_sampling
from lmbench.scoring import TextScore


@dataclass
class Bundle:
    model: Any
    tokenizer: Any
    vocab: Any
    meta: dict[str, Any]
    folder: Path
    source_run_id: str | None = None
    parts: list[Bundle] = field(default_factory=list)  # a mixture's component bundles

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def eval_batch_size(self) -> int:
        return int(self.meta.get("eval_batch_size", 10))

    def encode(self, text: str) -> tuple[list[str], np.ndarray, int]:
        """(tokens, ids, number of out-of-vocabulary tokens) of `text`, cut by the model's tokenizer."""
        tokens = self.tokenizer.tokenize(text)
        n_oov = count_oov(self.vocab, tokens, "the text")
        return tokens, self.vocab.encode(tokens).astype(np.int64), n_oov

    def decode(self, ids) -> str:
        """The text of `ids`: words joined by spaces, characters as they are, subword pieces through
        their tokenizer's decoder; each end-of-sentence token a line end."""
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def score_text(self, text: str, *, progress=None, encoded=None) -> TextScore:
        """Every token of `text` scored once, the text read as starting after a sentence end (as
        every split is), with the batch size the run evaluated with: the figures match the run's.
        `encoded`: `self.encode(text)` if the caller already has it (e.g. to size a progress bar)."""
        tokens, ids, n_oov = encoded if encoded is not None else self.encode(text)
        logp = self.model.score(ids, batch_size=self.eval_batch_size, progress=progress) if len(ids) else np.zeros(0)
        return TextScore(tokens, np.asarray(logp, dtype=np.float64), n_oov, len(text))

    def normalization(self) -> list[str]:
        """How text must look to this model, in phrases ("lower-case", "numbers written `N`", ...):
        what its tokenizer does to any text (its config), then, for word and character vocabularies,
        what its training text already was that the tokenizer does not do, read off the vocabulary
        (PTB's text came lower-cased, with numbers as N and most punctuation gone; its tokenizer
        does none of that). A learned tokenizer's pieces spell any text: it lacks characters only."""
        tok = self.tokenizer
        done = {"lower-cased": tok.lowercase, "stripped of punctuation": tok.strip_punctuation,
                f"with numbers written `{tok.number_token}`": tok.number_token}
        phrases = [f"{what} by its tokenizer" for what, on in done.items() if on]
        if isinstance(tok, LearnedTokenizer):
            return phrases
        words = [t for t in self.vocab.tokens if t not in (self.vocab.eos, self.vocab.unk)]
        has_numbers = any(NUMBER.fullmatch(t) and any(c.isdigit() for c in t) for t in words)
        stand_in = "N" if not has_numbers and "N" in self.vocab.index else None  # PTB's
        if not tok.lowercase and not any(c.isupper() for t in words if t != stand_in for c in t):
            phrases.append("lower-case (no capital letter in its vocabulary)")
        if not has_numbers and not tok.number_token:
            phrases.append("with numbers written `N` (its vocabulary has `N` and no number)" if stand_in
                           else "without numbers (none in its vocabulary)")
        if isinstance(tok, WordTokenizer):  # cut at spaces only: "end." is one word, not "end" and "."
            if "," in self.vocab.index or "." in self.vocab.index:
                phrases.append("with punctuation spaced off as words of its own (`end .`, not `end.`)")
            elif not tok.strip_punctuation:
                phrases.append("without commas and full stops (neither is in its vocabulary)")
        return phrases

    def generate_text(
        self, prompt: str | None, n_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
        top_p: float | None = None, seed: int | None = None,
    ) -> str:
        """`prompt` and `n_tokens` tokens sampled after it, as text (`lmbench-generate`, the MLflow
        model's generation): temperature 0 is greedy, `top_k` / `top_p` cut the distribution."""
        check_sampling(temperature, top_k, top_p)
        if n_tokens < 1:
            raise ConfigError(f"the number of tokens to generate must be >= 1, got {n_tokens}")
        ids = self.prompt_ids(prompt)
        out = self.model.generate(ids, n_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        return self.decode(list(ids) + list(out))

    def prompt_ids(self, prompt: str | None) -> np.ndarray:
        """A generation prompt as ids, without the end-of-sentence token the tokenizer adds after
        its last line (the model continues the line). An all-OOV prompt is refused: the model would
        see only unknown tokens."""
        if not prompt:
            return np.zeros(0, dtype=np.int64)
        tokens, ids, n_oov = self.encode(prompt)
        if tokens and tokens[-1] == self.tokenizer.eos_token and not prompt.endswith("\n"):
            tokens, ids = tokens[:-1], ids[:-1]
        if len(tokens) == 0:
            raise ConfigError(f"the prompt {prompt!r} has no tokens for this model's tokenizer")
        words = [t for t in tokens if t != self.tokenizer.eos_token]
        unk = self.vocab.unk
        if words and (n_oov == len(words) or all(t == unk for t in words)):
            raise ConfigError(
                f"every token of the prompt {prompt!r} is out of the model's vocabulary "
                f"({len(self.vocab)} tokens from {self.meta.get('dataset', 'its training corpus')}); "
                "the model would see only unknown tokens. Use words it knows, or no prompt"
            )
        return ids


def load_bundle(source: str | Path, tracking_uri: str | None = None, cache_dir: str | Path | None = None) -> Bundle:
    """The bundle at `source` (see the module docstring for the accepted forms)."""
    folder, run_id = resolve(source, tracking_uri, cache_dir)
    return open_bundle(folder, run_id)


def open_bundle(folder: Path, run_id: str | None = None) -> Bundle:
    """The bundle in a local `folder`, its component bundles (a mixture's) first. A file of it that
    is missing or cut short is a `ModelNotFound` that names it and says what to do."""
    try:
        return _open_bundle(folder, run_id)
    except DamagedFile as ex:
        raise ModelNotFound(damaged(folder, ex)) from None


def _open_bundle(folder: Path, run_id: str | None) -> Bundle:
    meta = read_meta(folder)
    parts = [_open_bundle(folder / relative, None) for relative in component_paths(folder, meta)]
    vocab = Vocabulary.load(folder / VOCAB_FILE)
    tokenizer = instantiate(meta["tokenizer"])
    if tokenizer.needs_fit:  # a learned tokenizer: the model it learned, checked against the vocabulary
        tokenizer = tokenizer.load_model(folder)
        tokenizer.check_vocab(vocab)
    model = load_model(folder, [p.model for p in parts])
    return Bundle(model, tokenizer, vocab, meta, folder, run_id or meta.get("run_id"), parts)


class BundleLoader:
    """`load_bundle` with the run's store and cache: what a model built of other models is given
    to find them (`model=interpolated`). A plain class, not a dataclass: Hydra's `instantiate`
    would turn a dataclass argument into a config node."""

    def __init__(self, tracking_uri: str | None = None, cache_dir: str | Path | None = None):
        self.tracking_uri, self.cache_dir = tracking_uri, cache_dir

    def __call__(self, source: str | Path) -> Bundle:
        return load_bundle(source, self.tracking_uri, self.cache_dir)
