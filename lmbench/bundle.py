"""A trained model as one self-contained folder, and how to find one from a run id or a path.

Every run writes its model as a *bundle* (`<run folder>/model/`, and the same folder inside the
MLflow model it logs):

    lmbench_model.json   format, the model's class, the Hydra configs of its model and tokenizer,
                         the evaluation batch size, the dataset and the run it came from
    vocab.json           the vocabulary (`Vocabulary.save`)
    ...                  the family's own files (`NeuralLM.save`: Keras weights + constructor
                         config; `NGramLM.save`: npz + json; `InterpolatedLM`: its components)

A bundle is everything needed to use the model on new text: the tokenizer is rebuilt from its
config, so text is cut exactly as the training corpus was, and out-of-vocabulary tokens map to the
vocabulary's unknown token (an error when the vocabulary has none).

`load_bundle(source)` accepts a bundle folder, a Hydra run folder (its `model/`), an MLflow run id,
`runs:/<id>[/model]`, `models:/<name>/<version>` (or any MLflow artifact URI), and a downloaded
MLflow model folder. Artifacts of a finished run never change, so downloads are cached by run id.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmbench.errors import ConfigError, DataError, LmbenchError

log = logging.getLogger(__name__)

META_FILE = "lmbench_model.json"
VOCAB_FILE = "vocab.json"
FORMAT_VERSION = 1
PYFUNC_ARTIFACT = "bundle"  # the bundle's name inside a logged MLflow (pyfunc) model
RUN_ID = re.compile(r"[0-9a-f]{32}")


class ModelNotFound(LmbenchError):
    """A model source (folder, run id, URI) that holds no lmbench model."""


def class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def save_bundle(
    folder: str | Path,
    model,
    *,
    vocab,
    model_cfg: dict[str, Any],
    tokenizer_cfg: dict[str, Any],
    eval_batch_size: int,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write `model` (any family with `save(folder)` and a `load(folder)` classmethod) as a bundle.

    `model_cfg`/`tokenizer_cfg` are the resolved Hydra nodes (`_target_` included); `info` holds
    provenance worth keeping (dataset, run id, metrics)."""
    folder = Path(folder)
    model.save(folder)
    vocab.save(folder / VOCAB_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "class": class_path(model),
        "family": getattr(model, "family", type(model).__name__.lower()),
        "model": model_cfg,
        "tokenizer": tokenizer_cfg,
        "eval_batch_size": int(eval_batch_size),
        **(info or {}),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return folder


def load_model(folder: str | Path):
    """The model of a bundle folder, by the class its metadata names."""
    from hydra.utils import get_class

    folder = Path(folder)
    meta = read_meta(folder)
    try:
        cls = get_class(meta["class"])
    except Exception as ex:
        raise ModelNotFound(f"{folder / META_FILE} names the model class {meta['class']!r}, which cannot be imported: {ex}") from None
    return cls.load(folder)


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise ModelNotFound(f"{folder} is not an lmbench model folder: it has no {META_FILE}")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelNotFound(f"{path} has format {meta.get('format_version')}, this lmbench reads {FORMAT_VERSION}")
    return meta


@dataclass
class TextScore:
    """Log-probabilities of every token of a text, under a bundle's model."""

    tokens: list[str]
    log_probs: np.ndarray  # nats, one per token
    n_oov: int  # tokens not in the vocabulary (scored as the unknown token)
    n_chars: int

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def nats(self) -> float:
        return -float(np.sum(self.log_probs, dtype=np.float64))

    @property
    def loss(self) -> float:
        return self.nats / self.n_tokens if self.n_tokens else math.nan

    @property
    def ppl(self) -> float:
        from lmbench.training.evaluation import perplexity

        return perplexity(self.loss) if self.n_tokens else math.nan

    @property
    def bpc(self) -> float:
        return self.nats / math.log(2) / self.n_chars if self.n_chars else math.nan

    @property
    def oov_rate(self) -> float:
        return self.n_oov / self.n_tokens if self.n_tokens else 0.0


@dataclass
class Bundle:
    model: Any
    tokenizer: Any
    vocab: Any
    meta: dict[str, Any]
    folder: Path
    source_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def eval_batch_size(self) -> int:
        return int(self.meta.get("eval_batch_size", 10))

    def encode(self, text: str) -> tuple[list[str], np.ndarray, int]:
        """(tokens, ids, number of out-of-vocabulary tokens) of `text`, cut by the model's tokenizer."""
        from lmbench.data.pipeline import count_oov

        tokens = self.tokenizer.tokenize(text)
        n_oov = count_oov(self.vocab, tokens, "the text")
        return tokens, self.vocab.encode(tokens).astype(np.int64), n_oov

    def decode(self, ids) -> str:
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def score_text(self, text: str, *, progress=None, encoded=None) -> TextScore:
        """Every token of `text` scored once, the text read as starting after a sentence end (as
        every split is), with the batch size the run evaluated with: the figures match the run's.
        `encoded`: `self.encode(text)` if the caller already has it (e.g. to size a progress bar)."""
        tokens, ids, n_oov = encoded if encoded is not None else self.encode(text)
        logp = self.model.score(ids, batch_size=self.eval_batch_size, progress=progress) if len(ids) else np.zeros(0)
        return TextScore(tokens, np.asarray(logp, dtype=np.float64), n_oov, len(text))

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
    from hydra.utils import instantiate

    from lmbench.data.vocab import Vocabulary

    folder, run_id = resolve(source, tracking_uri, cache_dir)
    meta = read_meta(folder)
    tokenizer = instantiate(meta["tokenizer"])
    vocab = Vocabulary.load(folder / VOCAB_FILE)
    model = load_model(folder)
    return Bundle(model, tokenizer, vocab, meta, folder, run_id or meta.get("run_id"))


def find_bundle_folder(path: Path) -> Path | None:
    """The bundle inside `path`: itself, a Hydra run folder's model/, or an MLflow model's copy
    (the `bundle` artifact its MLmodel file names)."""
    for candidate in (path, path / "model"):
        if (candidate / META_FILE).is_file():
            return candidate
        mlmodel = candidate / "MLmodel"
        if mlmodel.is_file():
            import yaml

            flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
            relative = (flavor.get("artifacts") or {}).get(PYFUNC_ARTIFACT, {}).get("path")
            if relative and (candidate / relative / META_FILE).is_file():
                return candidate / relative
    return None


def resolve(source: str | Path, tracking_uri: str | None = None, cache_dir: str | Path | None = None) -> tuple[Path, str | None]:
    """(bundle folder on local disk, MLflow run id if the source named one)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        found = find_bundle_folder(path)
        if found is None:
            raise ModelNotFound(
                f"{path} holds no lmbench model: expected {META_FILE} in it, in {path}/model/ (a run "
                f"folder) or in the artifacts of an MLflow model folder (MLmodel)"
            )
        return found, None
    if RUN_ID.fullmatch(text):
        text = f"runs:/{text}/model"
    if ":/" not in text:
        raise ModelNotFound(
            f"{source!r} is neither a folder nor an MLflow run id or URI (runs:/<run id>/model, "
            "models:/<name>/<version>)"
        )
    return _download(text, tracking_uri, cache_dir)


def _download(uri: str, tracking_uri: str | None, cache_dir: str | Path | None) -> tuple[Path, str | None]:
    from lmbench import tracking
    from lmbench.data.corpora import default_cache_dir

    tracking_uri = tracking.resolve_uri(tracking_uri, Path.cwd())
    run_id = None
    match = re.fullmatch(r"runs:/([^/]+)(?:/(.*))?", uri)
    if match:
        run_id, sub = match.group(1), (match.group(2) or "model").strip("/")
        uri = f"runs:/{run_id}/{sub}"
        status = tracking.run_status(tracking_uri, run_id)
        if status is None:
            raise ModelNotFound(f"there is no run {run_id} in the MLflow store {tracking_uri}")
        key = f"{run_id}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', sub)}"
        cacheable = status == "FINISHED"
    else:
        key, cacheable = None, False
    target = default_cache_dir(cache_dir) / "models" / key if key else None
    if target is not None and cacheable:
        found = find_bundle_folder(target)
        if found is not None:
            return found, run_id
    tmp = Path(tempfile.mkdtemp(prefix="lmbench-model-"))
    try:
        local = tracking.download(uri, tracking_uri, tmp)
    except Exception as ex:
        shutil.rmtree(tmp, ignore_errors=True)
        if run_id is not None:
            raise ModelNotFound(
                f"run {run_id} has no logged model at {uri} (it may have failed before the end, or "
                f"ran with tracking.log_model=false): {ex}"
            ) from None
        raise ModelNotFound(f"cannot fetch {uri} from {tracking_uri}: {ex}") from None
    found = find_bundle_folder(Path(local))
    if found is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelNotFound(f"{uri} is not an lmbench model (no {META_FILE} in it)")
    if target is None or not cacheable:
        return found, run_id  # left in the temporary folder
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, target)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)
    found = find_bundle_folder(target)
    if found is None:
        raise ModelNotFound(f"the cached copy of {uri} in {target} is not readable; delete it")
    return found, run_id
