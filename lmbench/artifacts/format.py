"""The on-disk form of a trained model: the *bundle* folder.

Every run writes its model as a bundle (`<run folder>/model/`, and the same folder inside the
MLflow model it logs):

    lmbench_model.json   format, the model's class, the Hydra configs of its model and tokenizer,
                         the evaluation batch size, the dataset and the run it came from
    vocab.json           the vocabulary (`Vocabulary.save`)
    tokenizer.json       a learned tokenizer's trained model (BPE and the other subword kinds):
                         the tokenizer config alone would have to be trained again
    ...                  the family's own files (`NeuralLM.save`: Keras weights + constructor
                         config; `NGramLM.save`: npz + json; `InterpolatedLM`: its components)

The model is rebuilt by the class its metadata names (`load` on that class), so a new family needs
nothing here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import get_class

from lmbench.errors import DamagedFile, LmbenchError, reading_file
from lmbench.models.base import LanguageModel, family_of

META_FILE = "lmbench_model.json"
VOCAB_FILE = "vocab.json"
COMPONENTS_DIR = "components"  # a mixture's component bundles
FORMAT_VERSION = 1
PYFUNC_ARTIFACT = "bundle"  # the bundle's name inside a logged MLflow (pyfunc) model


class ModelNotFound(LmbenchError):
    """A model source (folder, run id, URI) that holds no lmbench model."""


def class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def save_bundle(
    folder: str | Path,
    model: LanguageModel,
    *,
    vocab,
    tokenizer=None,
    model_cfg: dict[str, Any],
    tokenizer_cfg: dict[str, Any],
    eval_batch_size: int,
    info: dict[str, Any] | None = None,
    components: Sequence[Path] = (),
) -> Path:
    """Write `model` (any family with `save(folder)` and a `load(folder)` classmethod) as a bundle.

    `model_cfg`/`tokenizer_cfg` are the resolved Hydra nodes (`_target_` included); `tokenizer` is
    the one that made the ids (`CorpusData.tokenizer`), whose learned model, if any, is written
    beside the vocabulary (`Tokenizer.save_model`); `info` holds
    provenance worth keeping (dataset, run id, metrics). `components`: the bundle folders of the
    models this one is made of (a mixture's), copied into `components/<k>/` so that the bundle
    stands alone; `load_model` hands their models to the class's `load`."""
    folder = Path(folder)
    model.save(folder)
    vocab.save(folder / VOCAB_FILE)
    if tokenizer is not None:
        tokenizer.save_model(folder)  # nothing for a rule-based tokenizer
    parts = []
    for k, source in enumerate(components):
        target = folder / COMPONENTS_DIR / str(k)
        if target.resolve() != Path(source).resolve():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target)
        parts.append(f"{COMPONENTS_DIR}/{k}")
    meta = {
        "format_version": FORMAT_VERSION,
        "class": class_path(model),
        "family": family_of(model),
        "model": model_cfg,
        "tokenizer": tokenizer_cfg,
        "eval_batch_size": int(eval_batch_size),
        **({"components": parts} if parts else {}),
        **(info or {}),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return folder


def load_model(folder: str | Path, components: Sequence[LanguageModel] = ()) -> LanguageModel:
    """The model of a bundle folder, by the class its metadata names; `components`: the models of
    its component bundles (see `save_bundle`), already loaded."""
    folder = Path(folder)
    meta = read_meta(folder)
    try:
        cls = get_class(meta["class"])
    except Exception as ex:
        raise ModelNotFound(
            f"{folder / META_FILE} names the model class {meta['class']!r}, which cannot be imported: {ex}"
        ) from None
    return cls.load(folder, components=components) if components else cls.load(folder)


def component_paths(folder: Path, meta: dict[str, Any]) -> list[str]:
    """The component bundles of a bundle (see `save_bundle`), relative to it. Bundles written
    before the metadata listed them kept them in `components/<k>/` all the same."""
    if "components" in meta:
        return list(meta["components"])
    found = Path(folder) / COMPONENTS_DIR
    numbered = [p.name for p in found.iterdir() if p.name.isdigit()] if found.is_dir() else []
    return [f"{COMPONENTS_DIR}/{name}" for name in sorted(numbered, key=int)]


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise ModelNotFound(f"{folder} is not an lmbench model folder: it has no {META_FILE}")
    with reading_file(path):
        meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelNotFound(f"{path} has format {meta.get('format_version')}, this lmbench reads {FORMAT_VERSION}")
    return meta


def damaged(folder: Path, ex: DamagedFile) -> str:
    """What to say of a bundle one of whose files is missing or cannot be read."""
    return (
        f"the model folder {folder} is incomplete or damaged: {ex}. A model folder is used whole, as its run "
        "wrote it: copy it again from the run's folder (<run folder>/model), or name the run instead (its MLflow "
        "run id, or runs:/<run id>/model) to use the copy MLflow keeps"
    )


def find_bundle_folder(path: Path) -> Path | None:
    """The bundle inside `path`: itself, a Hydra run folder's model/, or an MLflow model's copy
    (the `bundle` artifact its MLmodel file names)."""
    for candidate in (path, path / "model"):
        if (candidate / META_FILE).is_file():
            return candidate
        mlmodel = candidate / "MLmodel"
        if mlmodel.is_file():
            flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
            relative = (flavor.get("artifacts") or {}).get(PYFUNC_ARTIFACT, {}).get("path")
            if relative and (candidate / relative / META_FILE).is_file():
                return candidate / relative
    return None
