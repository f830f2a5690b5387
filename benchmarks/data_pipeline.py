"""How long the data pipeline takes on a real corpus, cold (empty cache) and warm (from the cache).

    LMBENCH_DATA_DIR=/path/to/data python benchmarks/data_pipeline.py [--runs 5]
        [--dataset wikitext2] [--tokenizer word]

A cold run is a full `load_corpus` into an empty temporary cache: read and hash the files, tokenize
all three splits, build the vocabulary, make the id arrays, write the cache. A warm run is the same
call once the cache exists (ids memory-mapped). A learned tokenizer (bpe, unigram, wordpiece,
byte_bpe) is trained on the train split in every cold run. Targets (WikiText-2, every tokenizer,
2 cores): cold <= 3 s, warm <= 0.5 s.
A breakdown of the steps on the training file (the whole file for a one-file corpus) follows, to
show where the time goes (a learned tokenizer's training first: it is part of cold, done by the library).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lmbench.cli.plugins import register_configs
from lmbench.data.corpora import locate_corpus
from lmbench.data.pipeline import load_corpus
from lmbench.data.text import read_text
from lmbench.paths import CONF_DIR, default_cache_dir

TARGETS_S = {"cold": 3.0, "warm": 0.5}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(label: str, seconds: list[float]) -> None:
    verdict = "ok" if statistics.median(seconds) <= TARGETS_S[label] else "SLOWER THAN TARGET"
    print(
        f"{label:5s} median {statistics.median(seconds):.3f} s  min {min(seconds):.3f}  "
        f"max {max(seconds):.3f}  (target <= {TARGETS_S[label]} s: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dataset", default="wikitext2")
    parser.add_argument("--tokenizer", default="word")
    args = parser.parse_args()

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={args.dataset}", f"tokenizer={args.tokenizer}"])
    tokenizer = recipe = instantiate(cfg.tokenizer)

    with tempfile.TemporaryDirectory(prefix="lmbench-bench-") as tmp:
        # Each cold run gets its own empty cache; the warm runs reuse the last one.
        caches = [Path(tmp) / f"cold{i}" for i in range(args.runs)]
        cold = [timed(lambda c=c: load_corpus(cfg.dataset, tokenizer, cache_dir=c)) for c in caches]
        warm = [timed(lambda: load_corpus(cfg.dataset, tokenizer, cache_dir=caches[-1]))
                for _ in range(args.runs)]
        data = load_corpus(cfg.dataset, tokenizer, cache_dir=caches[-1])
        assert data.info["from_cache"]
        tokenizer = data.tokenizer  # a learned one, trained

        files = locate_corpus(cfg.dataset, default_cache_dir(tmp))
        train_path = files.paths.get("train", files.paths.get("file"))
        steps: dict[str, float] = {}
        start = time.perf_counter()
        text = read_text(train_path)
        steps["read"] = time.perf_counter() - start
        if recipe.needs_fit:  # a learned tokenizer: its training is part of every cold run
            recipe.fit(text, cfg.dataset.unk_token)
            steps["train tokenizer"] = time.perf_counter() - start - sum(steps.values())
        provisional: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        first_seen = tokenizer.provisional_ids(text, provisional)  # as load_corpus tokenizes
        steps["tokenize"] = time.perf_counter() - start - sum(steps.values())
        names = list(provisional)
        counts = np.bincount(first_seen, minlength=len(names))
        vocab = tokenizer.build_vocab(Counter(dict(zip(names, counts.tolist()))), unk_token=cfg.dataset.unk_token)
        steps["count + vocabulary"] = time.perf_counter() - start - sum(steps.values())
        to_vocab = np.fromiter((vocab.index.get(t, -1) for t in names), dtype=np.int32, count=len(names))
        to_vocab[first_seen]
        steps["ids"] = time.perf_counter() - start - sum(steps.values())

    print(f"{cfg.dataset.name} with {type(tokenizer).__name__}: |V|={len(vocab)}, "
          f"tokens {data.info['tokens']}, {args.runs} runs each, Python {sys.version.split()[0]}")
    report("cold", cold)
    report("warm", warm)
    print(f"{train_path.name} ({len(first_seen):,} tokens), one cold pass: "
          + ", ".join(f"{k} {v:.3f} s" for k, v in steps.items()))


if __name__ == "__main__":
    main()
