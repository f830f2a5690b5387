"""KN-5 estimation at scale, lmbench against KenLM's `lmplz`, side by side in one run.

    python benchmarks/ngram_scale.py CORPUS_DIR --kenlm KENLM_BIN --work WORK [--repeats 3] [--memory 1G 4G]

CORPUS_DIR holds train.txt, valid.txt and test.txt (e.g. made by benchmarks/make_corpus.py); KENLM_BIN
holds `lmplz` and `build_binary`, built from KenLM's public source outside this repository; WORK
receives the token-id cache, copies of the text for lmplz, its ARPA files and temporary files.

The text is read as lmbench's word tokenizer reads it (dataset=text_files, tokenizer=word): the ids
are made once (`encode`, a fresh process, cold cache; its time and peak RSS are printed) and every
later run loads them from the cache (memory-mapped). `lmplz` refuses `<unk>` in its input, so it
reads copies in which `<unk>` is the ordinary word UNK_WORD; for lmbench `<unk>` is an ordinary word
anyway, so both estimate the same model up to KenLM's own `<unk>` entry (probability mass given to
an unseen word, which the text never asks for).

Each repetition runs, in this order and each in a fresh process: lmbench (load the ids, then
`NGramLM.fit`: count + adjust + discount/interpolate, the estimation; then score valid and test),
then `lmplz -o 5 -S <memory>` for each --memory setting, under /usr/bin/time -v. lmbench's
estimation excludes loading the ids (reported apart, as is the cold encode); lmplz's time includes
reading and counting its text and writing the ARPA file, which is how it works. Peak memory: the
process's maximum RSS; for lmbench also the peak during `fit` alone (VmHWM reset after loading).
Medians over the repetitions.

Then, once: the per-pass profile of lmbench's estimator (wall, CPU and peak RSS of each pass), and
the valid/test perplexity of KenLM's model (its ARPA made binary by build_binary, read with the
`kenlm` Python module) next to lmbench's.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")
UNK_WORD = "UNK_WORD_FOR_LMPLZ"
ORDER = 5


def dataset_config(corpus: Path):
    from omegaconf import OmegaConf

    from lmbench.config.schema import DatasetConfig

    paths = {s: str(corpus / f"{s}.txt") for s in SPLITS}
    return OmegaConf.structured(DatasetConfig(name=corpus.name, **paths))


def load_ids(corpus: Path, cache: Path):
    from lmbench.data.pipeline import load_corpus
    from lmbench.data.tokenizers import WordTokenizer

    return load_corpus(dataset_config(corpus), WordTokenizer(), cache_dir=cache)


def status_mb(field: str) -> float:
    """VmHWM (peak RSS since the last reset) or VmRSS of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


class Pass:
    """Wall time, CPU time and peak RSS of one block of code."""

    def __init__(self, name: str, report: dict):
        self.name, self.report = name, report

    def __enter__(self):
        reset_peak_rss()
        self.start, self.cpu, self.rss = time.perf_counter(), time.process_time(), status_mb("VmRSS")

    def __exit__(self, *exc):
        self.report[self.name] = {
            "wall_s": time.perf_counter() - self.start, "cpu_s": time.process_time() - self.cpu,
            "peak_mb": status_mb("VmHWM"), "before_mb": self.rss, "after_mb": status_mb("VmRSS"),
        }


def child_encode(args) -> dict:
    start = time.perf_counter()
    data = load_ids(args.corpus, args.work / "cache")
    return {"encode_s": time.perf_counter() - start, "from_cache": data.info["from_cache"],
            "tokens": data.info["tokens"], "vocab_size": len(data.vocab), "dtype": str(data.train.ids.dtype),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_ours(args) -> dict:
    from lmbench.models.ngram import NGramLM

    start = time.perf_counter()
    data = load_ids(args.corpus, args.work / "cache")
    loaded = time.perf_counter()
    model = NGramLM(len(data.vocab), data.vocab.eos_id, order=ORDER)
    reset_peak_rss()
    before = status_mb("VmRSS")
    cpu = time.process_time()
    model.fit(data.train.ids)
    fitted, fit_cpu, fit_peak = time.perf_counter(), time.process_time() - cpu, status_mb("VmHWM")
    ppl = {s: math.exp(-float(model.score(data.splits[s].ids).mean())) for s in ("valid", "test")}
    return {"load_s": loaded - start, "fit_s": fitted - loaded, "fit_cpu_s": fit_cpu, "fit_peak_mb": fit_peak,
            "rss_before_fit_mb": before, "score_s": time.perf_counter() - fitted,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "valid_ppl": ppl["valid"], "test_ppl": ppl["test"],
            "ngrams": [int(model.stats[f"ngrams/order{k}"]) for k in range(1, ORDER + 1)]}


def child_profile(args) -> dict:
    """The passes of `NGramLM.fit`, one by one, as fit runs them (keep the two alike)."""
    from lmbench.models.ngram.counting import adjusted_counts, count_ngrams, index_dtype
    from lmbench.models.ngram.model import release_pages
    from lmbench.models.ngram.smoothing import estimate

    data = load_ids(args.corpus, args.work / "cache")
    ids, vocab_size, eos = data.train.ids, len(data.vocab), data.vocab.eos_id
    report: dict = {}
    with Pass("sequence (ids -> seq)", report):
        seq = np.empty(len(ids) + 1, dtype=index_dtype(max(len(ids) + 1, vocab_size)))
        seq[0], seq[1:] = eos, ids
        release_pages(ids)
    with Pass("count (orders 1-5)", report):
        tables = count_ngrams(seq, ORDER, vocab_size, eos, reset=True)
    del seq
    with Pass("adjust (continuation counts)", report):
        counts = adjusted_counts(tables, eos, reset=True)
    with Pass("discount + interpolate + backoff", report):
        estimate(tables, counts, "mkn", None, 1.0, vocab_size)
    return report


def child_kenlm_ppl(args) -> dict:
    import kenlm

    model = kenlm.Model(str(args.work / "kn5.binary"))
    ppl = {}
    for split in ("valid", "test"):
        log10, n = 0.0, 0
        with open(args.work / "kenlm_text" / f"{split}.txt", encoding="utf-8") as lines:
            for line in lines:
                log10 += model.score(line.strip(), bos=True, eos=True)
                n += len(line.split()) + 1  # the words and </s>, as lmbench predicts them
        ppl[f"{split}_ppl"] = 10.0 ** (-log10 / n)
    return ppl


def run_child(args, mode: str) -> dict:
    command = [sys.executable, __file__, str(args.corpus), "--work", str(args.work), "--child", mode]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_lmplz(args, memory: str) -> dict:
    command = ["/usr/bin/time", "-v", str(args.kenlm / "lmplz"), "-o", str(ORDER), "-S", memory,
               "-T", str(args.work / "tmp"), "--text", str(args.work / "kenlm_text" / "train.txt"),
               "--arpa", str(args.work / "kn5.arpa")]
    (args.work / "tmp").mkdir(exist_ok=True)
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", out.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.split(":"))))
    user = float(re.search(r"User time \(seconds\): (\S+)", out.stderr).group(1))
    system = float(re.search(r"System time \(seconds\): (\S+)", out.stderr).group(1))
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    return {"wall_s": seconds, "cpu_s": user + system, "peak_rss_mb": peak_kb / 1024}


def write_lmplz_copies(corpus: Path, out: Path) -> None:
    """The splits with `<unk>` as the ordinary word UNK_WORD (lmplz refuses `<unk>` in its input)."""
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        target = out / f"{split}.txt"
        if target.is_file():
            continue
        with open(corpus / f"{split}.txt", encoding="utf-8") as src, open(target, "w", encoding="utf-8") as dst:
            for line in src:
                words = line.split()
                if UNK_WORD in words:
                    sys.exit(f"{corpus / split}.txt contains {UNK_WORD}; pick another UNK_WORD")
                dst.write(" ".join(UNK_WORD if w == "<unk>" else w for w in words) + "\n")


def median_row(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs]
    return f"{statistics.median(values):9.2f}  ({min(values):.2f}-{max(values):.2f})"


def benchmark(args) -> None:
    args.work.mkdir(parents=True, exist_ok=True)
    encoded = run_child(args, "encode")
    print(f"encode (word tokenizer, {'cached' if encoded['from_cache'] else 'cold'}): "
          f"{encoded['encode_s']:.1f} s, peak RSS {encoded['peak_rss_mb']:.0f} MB; tokens {encoded['tokens']}, "
          f"|V| = {encoded['vocab_size']}, ids {encoded['dtype']}")
    write_lmplz_copies(args.corpus, args.work / "kenlm_text")
    ours, theirs = [], {m: [] for m in args.memory}
    for _ in range(args.repeats):
        ours.append(run_child(args, "ours"))
        for memory in args.memory:
            theirs[memory].append(run_lmplz(args, memory))
    print(f"\nKN-5 estimation, {args.repeats} repetitions, median (min-max), each a fresh process:")
    print(f"  lmbench load ids (cached) s      {median_row(ours, 'load_s')}")
    print(f"  lmbench fit (estimation) s       {median_row(ours, 'fit_s')}")
    print(f"  lmbench fit CPU s                {median_row(ours, 'fit_cpu_s')}")
    print(f"  lmbench peak RSS during fit MB   {median_row(ours, 'fit_peak_mb')}")
    print(f"  lmbench peak RSS of process MB   {median_row(ours, 'peak_rss_mb')}")
    print(f"  lmbench score valid+test s       {median_row(ours, 'score_s')}")
    for memory, runs in theirs.items():
        print(f"  lmplz -S {memory} wall s             {median_row(runs, 'wall_s')}")
        print(f"  lmplz -S {memory} CPU s              {median_row(runs, 'cpu_s')}")
        print(f"  lmplz -S {memory} peak RSS MB        {median_row(runs, 'peak_rss_mb')}")
        fit = statistics.median(r["fit_s"] for r in ours)
        peak = statistics.median(r["peak_rss_mb"] for r in ours)
        print(f"  ratio lmbench/lmplz -S {memory}: time {fit / statistics.median(r['wall_s'] for r in runs):.2f}x, "
              f"peak memory {peak / statistics.median(r['peak_rss_mb'] for r in runs):.2f}x")
    print(f"  n-grams per order (lmbench): {ours[0]['ngrams']}")

    profile = run_child(args, "profile")
    print("\nlmbench per-pass profile (one run):")
    print(f"  {'pass':34s} {'wall s':>7s} {'CPU s':>7s} {'peak MB':>8s} {'RSS after MB':>12s}")
    for name, p in profile.items():
        print(f"  {name:34s} {p['wall_s']:7.2f} {p['cpu_s']:7.2f} {p['peak_mb']:8.0f} {p['after_mb']:12.0f}")

    subprocess.run([str(args.kenlm / "build_binary"), str(args.work / "kn5.arpa"), str(args.work / "kn5.binary")],
                   check=True, capture_output=True)
    kenlm_ppl = run_child(args, "kenlm_ppl")
    print("\nperplexity       lmbench              KenLM (query via the kenlm module)")
    for split in ("valid", "test"):
        print(f"  {split:6s}   {ours[0][f'{split}_ppl']:.10f}   {kenlm_ppl[f'{split}_ppl']:.10f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="folder with train.txt, valid.txt, test.txt")
    parser.add_argument("--work", type=Path, required=True, help="cache, lmplz copies and outputs (not the repo)")
    parser.add_argument("--kenlm", type=Path, help="folder with lmplz and build_binary")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", nargs="+", default=["1G", "4G"], help="lmplz -S settings to run")
    parser.add_argument("--child", choices=("encode", "ours", "profile", "kenlm_ppl"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(globals()[f"child_{args.child}"](args)))
        return
    if args.kenlm is None or not (args.kenlm / "lmplz").is_file():
        sys.exit("pass --kenlm, the folder of KenLM's lmplz and build_binary (built from its source)")
    benchmark(args)


if __name__ == "__main__":
    main()
