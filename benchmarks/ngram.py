"""Benchmark of the n-gram baseline on Penn Treebank.

    python benchmarks/ngram.py                          # KN-5 time/memory + NLTK KN-3 extrapolation
    python benchmarks/ngram.py --repeats 9 --skip-nltk  # only ours, 9 runs
    python benchmarks/ngram.py --orders 2 3 4 5 6       # valid/test perplexity per order (mkn)

PTB is read from --data-dir (default $LMBENCH_DATA_DIR)/ptb/ptb.{train,valid,test}.txt and tokenized
as lmbench's word tokenizer does: whitespace split per line plus "<eos>" per line.

Timing: each repetition runs in a fresh Python process (`--child`), so its peak RSS
(getrusage ru_maxrss) is that run's own. Reported: fit (count + estimate on train) + score (valid and
test) wall time, excluding reading/tokenizing the text, which is reported apart; the median over runs.

NLTK: KneserNeyInterpolated(3) with its own padding helpers cannot be run on all of PTB in reasonable
time, so it is fitted on growing subsets of the training sentences and times ~`--nltk-tokens` test
tokens. Its fit time is extrapolated linearly in training tokens. Its per-token scoring time is
extrapolated linearly in the number of n-gram contexts NLTK scans per query (its continuation counts
loop over every stored bigram and trigram context, `nltk/lm/smoothing.py`), counted exactly for the
full training set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from lmbench.data.vocab import Vocabulary
from lmbench.models.ngram import NGramLM

SPLITS = ("train", "valid", "test")


def read_ptb(data_dir: Path) -> dict[str, list[list[str]]]:
    lines = {}
    for split in SPLITS:
        path = data_dir / "ptb" / f"ptb.{split}.txt"
        if not path.is_file():
            sys.exit(f"{path} not found: pass --data-dir or set LMBENCH_DATA_DIR")
        lines[split] = [line.split() + ["<eos>"] for line in path.read_text(encoding="utf-8").splitlines()]
    return lines


def encode(lines: dict[str, list[list[str]]]) -> tuple[Vocabulary, dict[str, np.ndarray]]:
    vocab = Vocabulary.build(Counter(t for line in lines["train"] for t in line), eos="<eos>", unk="<unk>")
    return vocab, {s: vocab.encode(t for line in lines[s] for t in line) for s in SPLITS}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def child_ours(data_dir: Path, order: int) -> dict:
    start = time.perf_counter()
    vocab, ids = encode(read_ptb(data_dir))
    loaded, rss_before = time.perf_counter(), peak_rss_mb()
    model = NGramLM(len(vocab), vocab.eos_id, order=order)
    model.fit(ids["train"])
    fitted = time.perf_counter()
    nll = {s: -float(model.score(ids[s]).mean()) for s in ("valid", "test")}
    done = time.perf_counter()
    return {
        "load_s": loaded - start, "fit_s": fitted - loaded, "score_s": done - fitted, "total_s": done - loaded,
        "peak_rss_mb": peak_rss_mb(), "rss_after_load_mb": rss_before,
        "valid_ppl": math.exp(nll["valid"]), "test_ppl": math.exp(nll["test"]),
    }


def child_nltk(data_dir: Path, n_sentences: int, n_tokens: int) -> dict:
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import pad_both_ends, padded_everygram_pipeline

    lines = read_ptb(data_dir)
    train = [line[:-1] for line in lines["train"][:n_sentences]]  # NLTK adds <s>/</s> itself
    lm = KneserNeyInterpolated(3)
    start = time.perf_counter()
    lm.fit(*padded_everygram_pipeline(3, train))
    fitted = time.perf_counter()
    # Counted before scoring: NLTK's counts are defaultdicts, and lookups add the contexts they miss.
    contexts_scanned = len(lm.counts[2]) + len(lm.counts[3])
    scored = 0
    for line in lines["test"]:
        padded = list(pad_both_ends(line[:-1], n=3))
        for i in range(2, len(padded) - 1):  # each word and one </s>, as our model predicts them
            lm.score(padded[i], padded[i - 2 : i])
            scored += 1
        if scored >= n_tokens:
            break
    done = time.perf_counter()
    return {
        "sentences": n_sentences, "train_tokens": sum(len(s) + 1 for s in train),
        "contexts_scanned": contexts_scanned,
        "fit_s": fitted - start, "score_tokens": scored, "score_s_per_token": (done - fitted) / scored,
        "peak_rss_mb": peak_rss_mb(),
    }


def nltk_contexts_scanned(train: list[list[str]]) -> int:
    """len(counts[2]) + len(counts[3]) of NLTK's KN-3 on these sentences (padded as NLTK pads)."""
    unigram_contexts, bigram_contexts = set(), set()
    for line in train:
        padded = ["<s>", "<s>"] + line + ["</s>", "</s>"]
        unigram_contexts.update(padded[:-1])
        bigram_contexts.update(zip(padded[:-2], padded[1:-1]))
    return len(unigram_contexts) + len(bigram_contexts)


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def linear_fit(x: list[float], y: list[float], at: float) -> float:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope * at + intercept)


def benchmark(args) -> None:
    runs = [run_child("--child", "ours", "--data-dir", str(args.data_dir)) for _ in range(args.repeats)]
    print(f"KN-5 (mkn) on PTB, {args.repeats} fresh processes, median (min-max):")
    for key in ("fit_s", "score_s", "total_s", "peak_rss_mb", "rss_after_load_mb", "load_s"):
        values = [r[key] for r in runs]
        print(f"  {key:18s} {statistics.median(values):8.3f}   ({min(values):.3f}-{max(values):.3f})")
    print(f"  valid ppl {runs[0]['valid_ppl']:.3f}, test ppl {runs[0]['test_ppl']:.3f}")
    if args.skip_nltk:
        return
    subsets = [run_child("--child", "nltk", "--data-dir", str(args.data_dir), "--sentences", str(n),
                         "--nltk-tokens", str(args.nltk_tokens)) for n in args.nltk_sentences]
    print("NLTK KneserNeyInterpolated(3) on subsets of the training sentences:")
    for r in subsets:
        print(f"  {r['sentences']:6d} sentences ({r['train_tokens']} tokens, "
              f"{r['contexts_scanned']} contexts): "
              f"fit {r['fit_s']:.2f} s, score {1 / r['score_s_per_token']:.1f} tokens/s "
              f"({r['score_tokens']} tokens), peak RSS {r['peak_rss_mb']:.0f} MB")
    lines = read_ptb(args.data_dir)
    full_tokens = sum(len(line) for line in lines["train"])
    full_contexts = nltk_contexts_scanned([line[:-1] for line in lines["train"]])
    test_tokens = sum(len(line) for line in lines["test"])
    fit_s = linear_fit([r["train_tokens"] for r in subsets], [r["fit_s"] for r in subsets], full_tokens)
    per_token = linear_fit([r["contexts_scanned"] for r in subsets],
                           [r["score_s_per_token"] for r in subsets], full_contexts)
    print(f"  extrapolated to all of PTB ({full_tokens} train tokens, {full_contexts} contexts): "
          f"fit {fit_s:.1f} s, score {1 / per_token:.2f} tokens/s, "
          f"test set ({test_tokens} tokens) {per_token * test_tokens / 3600:.1f} h")


def perplexities(args) -> None:
    vocab, ids = encode(read_ptb(args.data_dir))
    print("| order | valid ppl | test ppl | n-grams (top order) | fit s | score s |")
    print("|---|---|---|---|---|---|")
    for order in args.orders:
        model = NGramLM(len(vocab), vocab.eos_id, order=order, smoothing=args.smoothing)
        start = time.perf_counter()
        stats = model.fit(ids["train"])
        fitted = time.perf_counter()
        valid, test = (math.exp(-model.score(ids[s]).mean()) for s in ("valid", "test"))
        done = time.perf_counter()
        print(f"| {order} | {valid:.2f} | {test:.2f} | {int(stats[f'ngrams/order{order}'])} "
              f"| {fitted - start:.2f} | {done - fitted:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("LMBENCH_DATA_DIR"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--orders", type=int, nargs="+", help="print valid/test perplexity for these orders")
    parser.add_argument("--smoothing", default="mkn", help="smoothing for --orders")
    parser.add_argument("--skip-nltk", action="store_true")
    parser.add_argument("--nltk-sentences", type=int, nargs="+", default=[2000, 4000, 8000])
    parser.add_argument("--nltk-tokens", type=int, default=1000, help="test tokens NLTK scores per subset")
    parser.add_argument("--child", choices=("ours", "nltk"), help=argparse.SUPPRESS)
    parser.add_argument("--sentences", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_dir is None:
        sys.exit("no data folder: pass --data-dir or set LMBENCH_DATA_DIR")
    if args.child == "ours":
        print(json.dumps(child_ours(args.data_dir, order=5)))
    elif args.child == "nltk":
        print(json.dumps(child_nltk(args.data_dir, args.sentences, args.nltk_tokens)))
    elif args.orders:
        perplexities(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
