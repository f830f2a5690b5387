"""Peak memory of a training run against the size of its corpus (the table of experiments/README.md,
"Memory against corpus size").

    python benchmarks/make_corpus.py /work/bigmem/corpus --vocab 354253 --all-installed
    python benchmarks/make_corpus.py /work/bigmem/corpus-0.25 --vocab 354253 --all-installed --train-fraction 0.25
    python benchmarks/make_corpus.py /work/bigmem/corpus-0.5 --vocab 354253 --all-installed --train-fraction 0.5
    python benchmarks/memory_scale.py /work/bigmem/corpus-0.25 /work/bigmem/corpus-0.5 /work/bigmem/corpus \\
        --cache-dir /work/bigmem/cache --runs-dir /work/bigmem/runs [--head adaptive] [--steps 300]
        [--fresh-cache] [--stages] [--label before] [--json out.jsonl] [-- more overrides]
    python benchmarks/memory_scale.py --report before.jsonl after.jsonl   # the markdown table

Each corpus folder ({train,valid,test}.txt) is trained on by the `lmbench` command itself, in a
process of its own, one after the other:

    lmbench dataset=text_files dataset.train=... dataset.valid=... dataset.test=... model=lstm_small
        model/head=adaptive model.head.cutoffs=[20000,100000] trainer.max_steps=300 tracking=none
        trainer.progress=false cache_dir=<--cache-dir>/<corpus folder name> hydra.run.dir=<--runs-dir>/...

(`--head full` drops the two adaptive overrides.) With `--fresh-cache` the corpus's token-id cache is
deleted first, so the first run tokenizes; a second run of the same command then reads the ids from
the cache (memory-mapped), which is the figure the table is about. The peak is the child's ru_maxrss
(`os.wait4`: resident pages, file-backed ones of the mapped ids included); the anonymous and
file-backed parts are sampled from /proc/<pid>/status every 0.1 s, so they may miss a short peak.

`--stages` adds one more run of the cached corpus with the process reporting its own peak per stage
(load the ids, build the model, adapt the head, each training step, each scoring, checkpoints,
token scores, the bundle): /proc/self/clear_refs resets the high-water mark before each stage, so
each figure is that stage's own peak. That resetting would spoil the whole run's ru_maxrss, hence a
run of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ADAPTIVE = ["model/head=adaptive", "model.head.cutoffs=[20000,100000]"]
STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM of a process, in bytes (missing keys: absent)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in STATUS_KEYS:
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


# -- the measured run ------------------------------------------------------------------------------


def command(args, corpus: Path, run_dir: Path) -> list[str]:
    head = ADAPTIVE if args.head == "adaptive" else ["model/head=full"]
    return [
        sys.executable, "-m", "lmbench.cli.main",
        "dataset=text_files",
        *(f"dataset.{s}={corpus / f'{s}.txt'}" for s in ("train", "valid", "test")),
        "model=lstm_small", *head, f"trainer.max_steps={args.steps}", "tracking=none", "trainer.progress=false",
        f"cache_dir={Path(args.cache_dir) / corpus.name}", f"hydra.run.dir={run_dir}", *args.overrides,
    ]


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `cmd`; its peak RSS (ru_maxrss), sampled peaks of RssAnon/RssFile, wall time, output."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            for key, value in status(proc.pid).items():
                if key in peaks:
                    peaks[key] = max(peaks[key], value)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()
    _, code, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(code)
    done.set()
    sampler.join()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)}\nexited {proc.returncode}:\n{output[-3000:]}")
    return {"peak_rss": usage.ru_maxrss * 1024, "peak_anon": peaks["RssAnon"], "peak_file": peaks["RssFile"],
            "seconds": time.perf_counter() - start, "output": output}


def corpus_size(corpus: Path, cache: Path) -> dict:
    """Training tokens and |V| of the corpus, from its token-id cache's meta.json and vocab.json."""
    for meta in sorted(cache.glob("ids/*/meta.json")):
        info = json.loads(meta.read_text())
        vocab = json.loads((meta.parent / "vocab.json").read_text())["tokens"]
        return {"train_tokens": info["tokens"]["train"], "vocab": len(vocab)}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", nargs="+", type=Path, help="folders with train/valid/test.txt")
    parser.add_argument("--cache-dir", required=True, help="each corpus gets <cache-dir>/<its folder name>")
    parser.add_argument("--runs-dir", required=True, help="the runs' folders (hydra.run.dir) go here")
    parser.add_argument("--head", choices=("adaptive", "full"), default="adaptive")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fresh-cache", action="store_true", help="delete the corpus's cache first: a tokenizing run")
    parser.add_argument("--stages", action="store_true", help="also one run reporting its peak per stage")
    parser.add_argument("--label", default="", help="names the run folders (e.g. before/after)")
    parser.add_argument("--json", type=Path, help="append every row here as a JSON line")
    argv = sys.argv[1:]
    if argv[:1] == ["--report"]:
        return report([Path(a) for a in argv[1:]])
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.overrides = argv[cut + 1 :]  # more lmbench overrides, after --
    rows = []
    for corpus in args.corpora:
        cache = Path(args.cache_dir) / corpus.name
        if args.fresh_cache:
            shutil.rmtree(cache, ignore_errors=True)
        kinds = ["tokenizing", "cached"] if not list(cache.glob("ids/*/meta.json")) else ["cached"]
        for kind in kinds:
            run_dir = Path(args.runs_dir) / f"{args.label or 'run'}-{args.head}-{corpus.name}-{kind}"
            shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resume
            result = measure(command(args, corpus, run_dir))
            outcome = re.search(r"test ppl ([\d.]+)", result.pop("output"))
            row = {"label": args.label, "corpus": corpus.name, "head": args.head, "run": kind,
                   **corpus_size(corpus, cache), **result, "test_ppl": float(outcome[1]) if outcome else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
        if args.stages:
            run_dir = Path(args.runs_dir) / f"{args.label or 'run'}-{args.head}-{corpus.name}-stages"
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = command(args, corpus, run_dir)
            cmd[1:3] = [__file__, "--stage-worker"]  # the same overrides, through the profiling worker
            print(measure(cmd)["output"].split("STAGES\n")[-1], flush=True)
    print(f"\n{'corpus':<14} {'run':<10} {'train tokens':>13} {'|V|':>8} {'peak RSS':>9} {'anon':>7} {'file':>7} "
          f"{'wall':>6} {'test ppl':>9}")
    for r in rows:
        print(f"{r['corpus']:<14} {r['run']:<10} {r.get('train_tokens', 0):>13,} {r.get('vocab', 0):>8,} "
              f"{r['peak_rss'] / 2**30:>7.2f} G {r['peak_anon'] / 2**30:>5.2f} G {r['peak_file'] / 2**30:>5.2f} G "
              f"{r['seconds']:>5.0f}s {r['test_ppl'] or float('nan'):>9.2f}")


def report(files: list[Path]) -> None:
    """A markdown table of the rows in `files` (JSON lines of --json): one line per corpus, head and
    run, one peak column per label (e.g. before, after)."""
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    table: dict[tuple, dict] = {}
    for r in rows:  # the last row of a label wins
        table.setdefault((r["corpus"], r["head"], r["run"]), {})[r["label"]] = r
    print("| corpus | head | run | train tokens | vocabulary | " + " | ".join(f"peak RSS {x}" for x in labels)
          + " | test ppl |")
    print("|---|---|---|---:|---:|" + "---:|" * len(labels) + "---:|")
    for (corpus, head, run), by_label in table.items():
        first = next(iter(by_label.values()))
        peaks = [f"{by_label[x]['peak_rss'] / 1e9:.2f} GB ({by_label[x]['peak_rss'] / 2**30:.2f} GiB)"
                 if x in by_label else "" for x in labels]
        ppl = " / ".join(dict.fromkeys(f"{r['test_ppl']:.2f}" for r in by_label.values()))
        print(f"| {corpus} | {head} | {run} | {first.get('train_tokens', 0):,} | {first.get('vocab', 0):,} | "
              + " | ".join(peaks) + f" | {ppl} |")


# -- the profiling worker (--stages) ---------------------------------------------------------------


class Stages:
    """Each wrapped call's own peak RSS: the high-water mark is reset when a stage starts and read
    when it ends; a reset first folds the mark into every stage still open, so nesting is exact."""

    def __init__(self):
        self.open: list[list] = []  # [name, peak so far]
        self.rows: dict[str, dict] = {}

    def reset(self) -> None:
        hwm = status()["VmHWM"]
        for entry in self.open:
            entry[1] = max(entry[1], hwm)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def wrap(self, owner, attr: str, name: str) -> None:
        inner = getattr(owner, attr)

        def wrapped(*a, **kw):
            self.reset()
            before = status()["VmRSS"]
            entry = [name, 0]
            self.open.append(entry)
            try:
                return inner(*a, **kw)
            finally:
                self.open.pop()
                peak = max(entry[1], status()["VmHWM"])
                for outer in self.open:
                    outer[1] = max(outer[1], peak)
                row = self.rows.setdefault(name, {"calls": 0, "before": before, "peak": 0})
                row["calls"] += 1
                row["peak"] = max(row["peak"], peak)
                row["after"] = status()["VmRSS"]

        setattr(owner, attr, wrapped)

    def report(self) -> None:
        print("STAGES", flush=True)
        print(f"{'stage':<26} {'calls':>5} {'RSS before':>11} {'own peak':>9} {'RSS after':>10}")
        for name, r in self.rows.items():
            print(f"{name:<26} {r['calls']:>5} {r['before'] / 2**20:>8.0f} MB {r['peak'] / 2**20:>6.0f} MB "
                  f"{r['after'] / 2**20:>7.0f} MB", flush=True)


def stage_worker() -> None:
    import atexit

    from lmbench.cli import main as cli
    from lmbench.models.neural import NeuralLM
    from lmbench.training import neural_loop, run, trainer

    stages = Stages()
    for owner, attr, name in [
        (run, "prepare", "prepare (imports done)"), (run, "load_corpus", "load_corpus"),
        (run, "build_model", "build the model"), (NeuralLM, "adapt", "adapt the head"),
        (neural_loop.NeuralLoop, "__init__", "lay out the streams"),
        (neural_loop, "bptt_dataset", "the window dataset"),  # before 2026-12-07: tf.data over the whole split
        (neural_loop.NeuralLoop, "_step", "a training step"),
        (neural_loop.NeuralLoop, "_save", "checkpoint (last)"), (NeuralLM, "save", "save weights (best, bundle)"),
        (trainer.Trainer, "_scorer", "float32 copy"),  # before 2026-12-07: a copy of the network
        (trainer, "evaluate", "score a split"),
        (run, "log_token_scores", "token scores"), (run, "save", "the bundle"),
    ]:
        if hasattr(owner, attr):
            stages.wrap(owner, attr, name)
    atexit.register(stages.report)
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    cli.main()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--stage-worker":
        stage_worker()
    else:
        main()
