"""`lmbench-evaluate`: score a trained model on another split, another dataset, or any text files.

    lmbench-evaluate <run id>                                # its own dataset's test split
    lmbench-evaluate <run id> --dataset wikitext2 --split valid test
    lmbench-evaluate runs:/<id>/model --files notes.txt book.txt

Text is cut by the model's own tokenizer (a subword model's trained pieces, from its bundle) and
mapped to its own vocabulary: a token it never saw becomes its unknown token (`<unk>`), and the
share of such tokens is reported as the OOV rate (none for `byte_bpe`) —
a perplexity with many unknowns is flattering, since `<unk>` is an easy word. Above --max-oov-rate
(5 % by default) a figure is marked "not comparable", and one paragraph says why and how the text
should look to this model (`Bundle.normalization`). Each split or file is scored as one document,
every token once, exactly as a run scores its splits: evaluating a run's own test split reproduces
its logged test perplexity.

Unless --no-log, an evaluation run is logged to MLflow (experiment `lmbench-eval` by default),
tagged with the source run (`lmbench.source_run_id`), with metrics `eval/<name>/{loss,ppl,bpc,
tokens,oov_rate}` per split or file (and `eval/all/...` when there are several); marked figures
also give it the tag `lmbench.not_comparable`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from lmbench import interrupts, names, tracking
from lmbench.cli.plugins import register_configs
from lmbench.config import DatasetConfig
from lmbench.data.pipeline import read_split_texts
from lmbench.data.text import decode_text
from lmbench.errors import DataError, LmbenchError, exit_with
from lmbench.paths import CONF_MODULE
from lmbench.progress import progress_bar
from lmbench.scoring import Totals
from lmbench.training.native import quiet_tensorflow_import

PROG = "lmbench-evaluate"
DEFAULT_EXPERIMENT = "lmbench-eval"
MAX_OOV_RATE = 0.05


def dataset_config(name: str | None, bundle, overrides: list[str]):
    """The DatasetConfig to read: conf/dataset/<name>.yaml (with `dataset.*` overrides), or the
    one the model was trained on."""
    if name is None:
        stored = bundle.meta.get("dataset_config")
        if stored is None:
            raise LmbenchError("the model does not record its dataset; name one with --dataset or use --files")
        node = OmegaConf.merge(OmegaConf.structured(DatasetConfig), stored)
        return OmegaConf.merge(node, OmegaConf.from_dotlist([o.removeprefix("dataset.") for o in overrides]))
    register_configs()
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        return compose("config", overrides=[f"dataset={name}", *overrides]).dataset


def targets(args, bundle) -> list[tuple[str, str]]:
    """(name, text) pairs to score."""
    if args.files:
        out = []
        for path in map(Path, args.files):
            if not path.is_file():
                raise DataError(f"{path}: no such file")
            out.append(
                (
                    path.stem,
                    decode_text(path.read_bytes(), path, errors=args.encoding_errors, allow_binary=args.allow_binary),
                )
            )
        return out
    cfg = dataset_config(args.dataset, bundle, args.set)
    texts = read_split_texts(cfg)
    return [(split, texts[split]) for split in args.split]


def evaluate(bundle, named_texts: list[tuple[str, str]], *, show_progress: bool = True) -> dict[str, dict[str, float]]:
    """name -> {loss, ppl, bpc, tokens, oov_rate} for each text, and "all" when there are several."""
    results, everything = {}, Totals()
    for name, text in named_texts:
        encoded = bundle.encode(text)
        with progress_bar(len(encoded[1]), f"eval {name}", "tok", show_progress) as bar:
            s = bundle.score_text(text, progress=lambda n, nats=None: bar.update(n), encoded=encoded)
        if s.n_tokens == 0:
            raise DataError(f"{name} has no tokens for this model's tokenizer")
        results[name] = s.totals().figures()
        everything += s.totals()
    if len(named_texts) > 1:
        results["all"] = everything.figures()
    return results


def too_unknown(results: dict[str, dict[str, float]], max_oov_rate: float) -> dict[str, float]:
    """name -> OOV rate of each text whose rate passes the limit: its figures are not comparable."""
    return {name: r["oov_rate"] for name, r in results.items() if r["oov_rate"] > max_oov_rate}


def oov_warning(bundle, too_many: dict[str, float], max_oov_rate: float) -> str:
    """One paragraph: how much is unknown, what that does to perplexity, how text should look to
    this model, and what to do."""
    shares = ", ".join(f"{rate:.1%} ({name})" for name, rate in too_many.items())
    dataset = bundle.meta.get("dataset", "its training corpus")
    own = bundle.meta.get("metrics", {}).get(names.split_metric(names.TEST, names.PPL))
    own = f" (its own {dataset} test perplexity: {own:.2f})" if own is not None else ""
    form = bundle.normalization()
    expects = f" It expects text as it was trained on: {', '.join(form)}." if form else ""
    return (
        f"{PROG}: warning: {shares} of the tokens are out of the model's vocabulary ({len(bundle.vocab):,} "
        f"tokens from {dataset}), more than --max-oov-rate {max_oov_rate:g}: these figures are not "
        f"comparable with perplexities on text the model knows. Every unknown word is scored as the one "
        f"token {bundle.vocab.unk}, which stands for all rare words of the training text and so is "
        f"predicted far more readily than any real word: the more words are unknown, the better the "
        f"perplexity looks{own}.{expects} Normalize the text the same way, train a model on text like it, "
        f"or use a subword or character tokenizer (tokenizer=bpe, tokenizer=char), which leaves few or no "
        f"tokens unknown."
    )


def log_evaluation(bundle, source: str, results, args, too_many: dict[str, float]) -> str | None:
    uri = tracking.resolve_uri(args.tracking_uri, Path.cwd())
    tracker = tracking.Tracker(True, uri, args.experiment)
    what = (
        ",".join(Path(f).name for f in args.files)
        if args.files
        else f"{args.dataset or bundle.meta.get('dataset')}:{'+'.join(args.split)}"
    )
    tags = {
        names.KIND: "evaluation",
        names.FAMILY: bundle.family,
        names.SOURCE: source,
        names.EVALUATED_ON: what,
        names.DATASET: str(bundle.meta.get("dataset")),
    }
    if bundle.source_run_id:
        tags[names.SOURCE_RUN_ID] = bundle.source_run_id
    if too_many:
        rates = ", ".join(f"{name} {rate:.1%}" for name, rate in too_many.items())
        tags[names.NOT_COMPARABLE] = f"OOV rate above --max-oov-rate {args.max_oov_rate:g}: {rates}"
    tracker.start(
        f"eval-{bundle.family}",
        tags,
        {"source": source, "evaluated_on": what, "eval_batch_size": bundle.eval_batch_size,
         "max_oov_rate": args.max_oov_rate},
    )
    run_id = tracker.run_id
    try:
        tracker.log_metrics({names.eval_metric(name, k): v for name, r in results.items() for k, v in r.items()})
    except KeyboardInterrupt as ex:  # Ctrl-C or SIGTERM
        interrupts.caught()
        tracker.finish("KILLED", interrupts.reason(ex))
        raise
    except BaseException as ex:
        tracker.finish("FAILED", f"{type(ex).__name__}: {ex}")
        raise
    tracker.finish("FINISHED")
    return run_id


def share_of_tokens(text: str) -> float:
    """--max-oov-rate: a share from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share from 0 to 1 (0.05 is 5 %), got {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model", help="run id, runs:/<id>/model, models:/<name>/<version>, a run folder or a model folder"
    )
    parser.add_argument("--dataset", help="a conf/dataset name (default: the dataset the model was trained on)")
    parser.add_argument(
        "--split", nargs="+", default=["test"], choices=["train", "valid", "test"], help="default: test"
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="dataset.KEY=VALUE", help="dataset config overrides")
    parser.add_argument("--files", nargs="+", help="score these text files instead (each as one document)")
    parser.add_argument("--encoding-errors", default="strict", choices=["strict", "replace"], help="for --files")
    parser.add_argument("--allow-binary", action="store_true",
                        help="for --files: read binary data (a NUL byte, > 1 %% control bytes) as text")
    parser.add_argument(
        "--max-oov-rate", type=share_of_tokens, default=MAX_OOV_RATE, metavar="RATE",
        help=f"above this share of unknown tokens a figure is marked not comparable (default {MAX_OOV_RATE})",
    )
    parser.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})"
    )
    parser.add_argument("--no-log", action="store_true", help="print only; log no MLflow run")
    parser.add_argument("--tracking-uri", help="store (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    args = parser.parse_args(argv)

    quiet_tensorflow_import()
    from lmbench.artifacts.bundle import load_bundle

    interrupts.handle_signals()  # SIGTERM stops scoring as Ctrl-C does
    try:
        with interrupts.signal_errors():
            bundle = load_bundle(args.model, tracking_uri=args.tracking_uri)
            results = evaluate(bundle, targets(args, bundle))
            too_many = too_unknown(results, args.max_oov_rate)
            run_id = None if args.no_log else log_evaluation(bundle, args.model, results, args, too_many)
    except LmbenchError as ex:
        exit_with(PROG, ex)
    except KeyboardInterrupt as ex:  # no traceback; an evaluation run already started ends KILLED
        interrupts.caught()
        print(f"\n{PROG}: {interrupts.said(ex)}", file=sys.stderr, flush=True)
        sys.exit(interrupts.exit_status(ex))
    print(f"{'text':<16} {'tokens':>10} {'OOV rate':>9} {'ppl':>10} {'bits/char':>10}")
    for name, r in results.items():
        row = f"{name:<16} {r['tokens']:>10,} {r['oov_rate']:>9.2%} {r['ppl']:>10.2f} {r['bpc']:>10.4f}"
        print(f"{row}  not comparable: {too_many[name]:.1%} OOV" if name in too_many else row)
    if too_many:
        print(flush=True)
        print(oov_warning(bundle, too_many, args.max_oov_rate), file=sys.stderr)
    if run_id:
        print(f"Logged as MLflow run {run_id} (experiment '{args.experiment}')")


if __name__ == "__main__":
    main()
