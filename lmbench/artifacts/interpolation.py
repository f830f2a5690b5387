"""`model=interpolated`: a mixture of trained models named by their runs or folders.

    lmbench model=interpolated 'model.components=[<n-gram run id>,<LSTM run id>]' dataset=ptb

`interpolate` is the config's `_target_`: it loads each component as a bundle (any source that
`load_bundle` accepts), checks its vocabulary against the run's token for token (ids must mean the
same tokens in all), and builds the pure mixture `models.interpolated.InterpolatedLM` over their
models. A mixture's bundle holds copies of its components' bundles (`components/<k>/`), so that it
stands alone; `load_bundle` loads them back before the mixture.
"""

from __future__ import annotations

from pathlib import Path

from lmbench.artifacts.bundle import Bundle, BundleLoader
from lmbench.data.vocab import Vocabulary, describe_difference
from lmbench.errors import ConfigError, LmbenchError
from lmbench.models.base import LanguageModel
from lmbench.models.interpolated import InterpolatedLM, Origin, check_weights


def interpolate(
    vocab_size: int,
    eos_id: int,
    components: list[str],
    weights: list[float] | None = None,
    em_tolerance: float = 1e-7,
    em_max_iterations: int = 1000,
    *,
    vocab: Vocabulary,
    loader: BundleLoader,
) -> InterpolatedLM:
    """The mixture of the models at `components` (>= 2 model sources), for a run whose vocabulary
    is `vocab` (lmbench supplies it, `vocab_size`, `eos_id` and the `loader` of bundles)."""
    sources = _check_sources(components)
    if weights is not None:  # before any component is fetched
        check_weights(weights, len(sources))
    bundles = [_load(k, source, loader) for k, source in enumerate(sources)]
    origins = [
        Origin(source, b.source_run_id, b.family, b.meta.get("dataset"), str(b.folder))
        for source, b in zip(sources, bundles)
    ]
    for k, bundle in enumerate(bundles):
        _check_vocabulary(f"model.components[{k}] ({origins[k].describe()})", bundle, vocab)
    return InterpolatedLM(
        vocab_size,
        eos_id,
        [b.model for b in bundles],
        weights=weights,
        em_tolerance=em_tolerance,
        em_max_iterations=em_max_iterations,
        origins=origins,
    )


def component_folders(model: LanguageModel) -> list[Path]:
    """The bundle folders a model is made of, to copy into its own bundle (none but a mixture's)."""
    return [Path(o.folder) for o in model.origins if o.folder] if isinstance(model, InterpolatedLM) else []


def _check_sources(components) -> list[str]:
    example = "e.g. model.components=[<n-gram run id>,<LSTM run id>]"
    if components is None or isinstance(components, (str, bytes)) or not hasattr(components, "__iter__"):
        raise ConfigError(
            f"model.components must be a list of at least two model sources, {example}; got {components!r}"
        )
    sources = [str(c) for c in components]
    if len(sources) < 2:
        raise ConfigError(
            f"model.components has {len(sources)} model(s); an interpolation needs at least two, {example}"
        )
    return sources


def _load(k: int, source: str, loader: BundleLoader) -> Bundle:
    try:
        return loader(source)
    except LmbenchError as ex:
        raise ConfigError(f"model.components[{k}]={source!r} cannot be used: {ex}") from None


def _check_vocabulary(where: str, bundle: Bundle, vocab: Vocabulary) -> None:
    if bundle.vocab != vocab:
        tokenizer = str(bundle.meta.get("tokenizer", {}).get("_target_", "?")).rsplit(".", 1)[-1]
        raise ConfigError(
            f"{where} was trained with another vocabulary than this run's: "
            f"{describe_difference(bundle.vocab, vocab)}. Interpolate models trained on "
            "the same dataset and tokenizer, and run with those (the component's: dataset="
            f"{bundle.meta.get('dataset', '?')}, tokenizer {tokenizer})"
        )
    if bundle.model.vocab_size != len(bundle.vocab):
        raise ConfigError(
            f"{where} is inconsistent: its model has vocab_size {bundle.model.vocab_size}, its vocabulary "
            f"{len(bundle.vocab)} tokens"
        )
