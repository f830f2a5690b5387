"""Fine-tuning: `trainer.init_from=<model source>` starts a neural run from a logged model's weights.

The source is anything `sources.resolve` accepts (a run id, `runs:/<id>/model`,
`models:/<name>/<version>`, a run or bundle folder). Its weights are tied to its token ids, so the
run takes from the source bundle:

- the vocabulary: the new corpus is encoded with it (`load_corpus(vocab=...)`); tokens it lacks
  become its unknown token, and the OOV rate of every split is logged (`data/<split>_oov_rate`).
  A source vocabulary without an unknown token refuses a corpus with unseen tokens (`DataError`);
- the tokenizer config, so the new text is cut as the source's was, and a learned tokenizer's
  trained model (`tokenizer.json`: subword pieces are the source's, not learned again);
- the model config (the architecture): the run's `cfg.model` and `cfg.tokenizer` are replaced by the
  source's before anything is checked, digested or logged, so `config.yaml`, the MLflow params and
  the checkpoint digest record what was really trained. What the command line composed for `model`
  and `tokenizer` is not used; a note lists where it differed.

Then the model is built as usual and the source's weights are loaded into it, unless the run
resumes from its own checkpoint, whose weights win.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from lmbench import names
from lmbench.artifacts.format import META_FILE, VOCAB_FILE, damaged, read_meta
from lmbench.artifacts.sources import resolve
from lmbench.data.vocab import Vocabulary
from lmbench.errors import ConfigError, DamagedFile, reading_file
from lmbench.models.neural import CONFIG_FILE, WEIGHTS_FILE, NeuralLM

NOTE_MAX_KEYS = 8
_UNSET = object()


@dataclass
class Source:
    """The model a run is fine-tuned from."""

    given: str  # trainer.init_from as the user wrote it
    folder: Path  # the bundle folder on local disk
    run_id: str | None  # the MLflow run that logged it, when known
    meta: dict[str, Any]
    vocab: Vocabulary

    @property
    def tags(self) -> dict[str, str]:
        tags = {names.INIT_FROM: self.given}
        if self.run_id:
            tags[names.SOURCE_RUN_ID] = self.run_id
        return tags


def load_source(init_from: str, tracking_uri: str, cache_dir: Path) -> Source:
    """The source bundle's metadata and vocabulary; a `ConfigError` if it is not a neural model
    (an unknown run id or a run without a logged model fails in `sources.resolve`)."""
    folder, run_id = resolve(init_from, tracking_uri, cache_dir)
    try:
        return _load_source(init_from, folder, run_id)
    except DamagedFile as ex:
        raise ConfigError(f"trainer.init_from={init_from!r}: {damaged(folder, ex)}") from None


def _load_source(init_from: str, folder: Path, run_id: str | None) -> Source:
    meta = read_meta(folder)
    family = meta.get("family", "?")
    try:
        cls = get_class(meta["class"])
    except Exception as ex:
        raise ConfigError(
            f"trainer.init_from={init_from!r}: {folder / META_FILE} names the model class "
            f"{meta.get('class')!r}, which cannot be imported: {ex}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, NeuralLM)):
        raise ConfigError(
            f"init_from applies to neural models; trainer.init_from={init_from!r} is a model of the "
            f"{family} family ({meta['class']}), which has no weights to start from. Train this run "
            "from scratch, or give a run of an rnn, gru, lstm or transformer model"
        )
    if not (folder / WEIGHTS_FILE).is_file():
        raise ConfigError(f"trainer.init_from={init_from!r}: {folder} has no {WEIGHTS_FILE}")
    vocab = Vocabulary.load(folder / VOCAB_FILE)
    return Source(str(init_from), folder, run_id or meta.get("run_id"), meta, vocab)


def source_tokenizer(tokenizer, source: Source):
    """`tokenizer` (built from the source's config) with the source's trained model when it is a
    learned one: trained again on the new corpus, its pieces would not be the source's ids."""
    if not tokenizer.needs_fit:
        return tokenizer
    trained = tokenizer.load_model(source.folder)
    trained.check_vocab(source.vocab)
    return trained


def adopt_source_configs(cfg: DictConfig, source: Source) -> DictConfig:
    """A copy of `cfg` whose `model` and `tokenizer` are the source's; prints which composed
    values are thereby ignored."""
    ignored = []
    for group in ("model", "tokenizer"):
        composed = _flat(OmegaConf.to_container(cfg[group], resolve=True))
        theirs = _flat(source.meta[group])
        mine_target, their_target = composed.get("_target_"), theirs.get("_target_")
        if mine_target != their_target:  # another class: its keys say nothing useful one by one
            short = lambda target: str(target).rpartition(".")[2]  # noqa: E731
            ignored.append(f"{group}={short(mine_target)} (source: {short(their_target)})")
            continue
        for key in sorted(set(composed) | set(theirs)):
            mine, source_value = composed.get(key, _UNSET), theirs.get(key, _UNSET)
            if mine != source_value:
                ignored.append(f"{group}.{key}={_show(mine)} (source: {_show(source_value)})")
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.model = OmegaConf.create(source.meta["model"])
        cfg.tokenizer = OmegaConf.create(source.meta["tokenizer"])
    origin = f"run {source.run_id}" if source.run_id else str(source.folder)
    print(
        f"Fine-tuning from {source.meta.get('family', 'the')} model of {origin}: its model config, "
        f"tokenizer and vocabulary ({len(source.vocab)} tokens) are used.",
        flush=True,
    )
    if ignored:
        shown = "; ".join(ignored[:NOTE_MAX_KEYS])
        if len(ignored) > NOTE_MAX_KEYS:
            shown += f"; and {len(ignored) - NOTE_MAX_KEYS} more"
        print(f"Note: trainer.init_from ignores the composed model/tokenizer config: {shown}", flush=True)
    return cfg


def load_weights(model, source: Source) -> None:
    """Build `model` and load the source's weights into it (any precision policy: variables stay
    float32 under mixed_bfloat16, as they were saved)."""
    try:
        _load_weights(model, source)
    except DamagedFile as ex:
        raise ConfigError(f"trainer.init_from={source.given!r}: {damaged(source.folder, ex)}") from None


def _load_weights(model, source: Source) -> None:
    config_file = source.folder / CONFIG_FILE
    with reading_file(config_file):
        saved = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if saved.get("vocab_size", model.vocab_size) != model.vocab_size:
        raise ConfigError(
            f"trainer.init_from={source.given!r}: the source model has vocab_size={saved['vocab_size']}, "
            f"its vocabulary {model.vocab_size} tokens; the bundle in {source.folder} is inconsistent"
        )
    model.build_for_inference()
    try:
        with reading_file(source.folder / WEIGHTS_FILE):
            model.load_weights(source.folder / WEIGHTS_FILE)
    except ValueError as ex:  # Keras: a layer's weights do not fit
        raise ConfigError(
            f"trainer.init_from={source.given!r}: the source weights do not fit the model built from "
            f"its config ({ex})"
        ) from None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _show(value: Any) -> str:
    return "(unset)" if value is _UNSET else "null" if value is None else str(value)
