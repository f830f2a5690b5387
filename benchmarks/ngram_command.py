"""The whole n-gram command, `lmbench model=ngram dataset=ptb tracking=none`, against KenLM's
`lmplz -o 5` + `query`, side by side: wall time and peak memory of each, interleaved repeats.

    LMBENCH_DATA_DIR=... python benchmarks/ngram_command.py --checkout main=/work/main \\
        --checkout branch=. [--kenlm KENLM_BIN] [--work WORK] [--repeats 5] [--tracked]

Each `--checkout NAME=PATH` runs the command with that checkout's lmbench (`python -m lmbench`,
PYTHONPATH=PATH), in a fresh process, in WORK/NAME (its outputs/ go there), reading PTB from
$LMBENCH_DATA_DIR and its token ids from lmbench's cache (a first, untimed run of each fills it, as
any second command finds it). `--tracked` adds, per checkout, the same command logging to a sqlite
store in WORK/NAME (`tracking.uri=sqlite:///...`, the tracking group's defaults otherwise).

KenLM (`--kenlm` names the folder holding `lmplz` and `query`, built from its source outside this
repository; left out, or the files missing: KenLM is skipped and said so): `lmplz -o 5 -T WORK`
reads PTB's train split and writes an ARPA file, then `query` reads that file and PTB's test split
(`-v summary`); the two processes' wall times are added, the peak is the larger one. lmplz refuses
`<unk>` in its text, so both read copies in which `<unk>` is the ordinary word UNK_WORD (as lmbench
treats it).

Every repeat runs each command once, in turn (interleaved, so that another process's load falls on
all of them); the figures are medians. Wall time: from start to exit, measured here; peak memory:
the process's maximum resident set (`wait4`'s ru_maxrss, what `/usr/bin/time -v` reports). The
perplexities each lmbench checkout prints are checked to be the same in every run of every
checkout, and printed with KenLM's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

COMMAND = ("model=ngram", "dataset=ptb")
FIGURES = re.compile(r"valid ppl ([\d.]+) \| test ppl ([\d.]+), bpc ([\d.]+)")
UNK_WORD = "UNK_WORD_FOR_LMPLZ"


def run_child(argv: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: Path | None = None,
              stdout: Path | None = None) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, stdout) of `argv` run in `cwd` (stdout into the file `stdout` instead,
    when given): forked and waited for here, so that `wait4` gives this one process's peak."""
    out_path, err_path = stdout or cwd / ".stdout", cwd / ".stderr"
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child becomes the command
        os.chdir(cwd)
        write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for fd, path, flags in ((0, stdin or os.devnull, os.O_RDONLY), (1, out_path, write), (2, err_path, write)):
            os.dup2(os.open(str(path), flags, 0o644), fd)
        os.execvpe(argv[0], argv, env if env is not None else os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err_path.read_text()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, "" if stdout else out_path.read_text()


def lmbench_command(checkout: Path, folder: Path, tracked: bool) -> tuple[list[str], dict[str, str]]:
    tracking = [f"tracking.uri=sqlite:///{folder / 'mlflow.db'}"] if tracked else ["tracking=none"]
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
    env.pop("MLFLOW_TRACKING_URI", None)
    return [sys.executable, "-m", "lmbench", *COMMAND, *tracking], env


def kenlm_texts(data: Path, work: Path) -> dict[str, Path]:
    """PTB's train and test splits with `<unk>` as an ordinary word, for lmplz and query."""
    texts = {}
    for split in ("train", "test"):
        source = data / "ptb" / f"ptb.{split}.txt"
        texts[split] = work / f"{split}.kenlm.txt"
        texts[split].write_text(source.read_text().replace("<unk>", UNK_WORD))
    return texts


def kenlm_once(kenlm: Path, work: Path, texts: dict[str, Path]) -> tuple[float, float, str]:
    arpa = work / "ptb.5.arpa"
    wall_a, peak_a, _ = run_child([str(kenlm / "lmplz"), "-o", "5", "-T", str(work)], work, stdin=texts["train"],
                                  stdout=arpa)
    wall_b, peak_b, out = run_child([str(kenlm / "query"), "-v", "summary", str(arpa)], work, stdin=texts["test"])
    found = re.search(r"Perplexity including OOVs:\s*([\d.]+)", out)
    return wall_a + wall_b, max(peak_a, peak_b), f"test ppl {found.group(1) if found else '?'} (query)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", required=True, help="NAME=PATH of an lmbench checkout")
    parser.add_argument("--kenlm", type=Path, help="the folder holding KenLM's lmplz and query")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ngram_command"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tracked", action="store_true", help="also each checkout's command with tracking on")
    args = parser.parse_args()
    data = Path(os.environ["LMBENCH_DATA_DIR"])
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)

    commands = {}
    for entry in args.checkout:
        name, _, path = entry.partition("=")
        for tracked in (False, True) if args.tracked else (False,):
            label = f"{name}{' tracked' if tracked else ''}"
            folder = args.work / label.replace(" ", "_")
            folder.mkdir()
            commands[label] = (folder, *lmbench_command(Path(path), folder, tracked))
    kenlm = args.kenlm if args.kenlm and (args.kenlm / "lmplz").is_file() and (args.kenlm / "query").is_file() else None
    if kenlm is None:
        print(f"KenLM skipped: no lmplz and query in {args.kenlm}" if args.kenlm else "KenLM skipped: no --kenlm")
    texts = kenlm_texts(data, args.work) if kenlm else {}

    for folder, argv, env in commands.values():  # untimed: fills the token-id cache
        run_child(argv, folder, env)
    results: dict[str, list[tuple[float, float, str]]] = {label: [] for label in commands}
    if kenlm:
        results["lmplz -o 5 + query"] = []
    for repeat in range(args.repeats):
        for label, (folder, argv, env) in commands.items():
            wall, peak, out = run_child(argv, folder, env)
            found = FIGURES.search(out)
            results[label].append((wall, peak, found.group(0) if found else "no figures printed"))
        if kenlm:
            results["lmplz -o 5 + query"].append(kenlm_once(kenlm, args.work, texts))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    report(results)


def report(results: dict[str, list[tuple[float, float, str]]]) -> None:
    print(f"\n{'command':<24} {'wall s (median)':>16} {'peak RSS MB':>12}  walls; figures")
    for label, runs in results.items():
        walls, peaks = [r[0] for r in runs], [r[1] for r in runs]
        figures = sorted({r[2] for r in runs})
        print(f"{label:<24} {statistics.median(walls):>16.2f} {statistics.median(peaks):>12.0f}  "
              f"{' '.join(f'{w:.2f}' for w in walls)}; {' / '.join(figures)}")
    lmbench = {r[2] for label, runs in results.items() if not label.startswith("lmplz") for r in runs}
    print("lmbench's perplexities " + ("identical in every run" if len(lmbench) == 1 else f"DIFFER: {lmbench}"))


if __name__ == "__main__":
    main()
