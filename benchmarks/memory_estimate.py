"""The memory estimate (lmbench/training/memory.py) against real runs: is it below what training
really adds, and by how much?

    python benchmarks/memory_estimate.py OUT_DIR [--steps 20]

Runs a few short trainings (lstm_small and transformer_small on PTB, an LSTM with an adaptive head
on WikiText-2, |V| = 33k), each in its own process with tracking off, and reads from each: the
estimate and the process's resident memory when the estimate was made (the log line
"memory: training needs ..."), and the process's peak resident memory (GNU time's %M).
What training added = peak - resident at the estimate; the margin = added / estimate. Expected:
every estimate below what was added (a refused model can then never have fitted).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

RUNS = {
    "lstm_small": ["model=lstm_small", "dataset=ptb"],
    "transformer_small": ["model=transformer_small", "dataset=ptb"],
    "lstm_small, adaptive, wikitext-2": ["model=lstm_small", "dataset=wikitext2", "model/head=adaptive",
                                         "model.head.cutoffs=[2000,10000]"],
    "lstm 2x650 (lstm_medium), fp32, adam": ["model=lstm_medium", "dataset=ptb", "trainer.precision=float32",
                                             "optimizer=adam"],
}
LINE = re.compile(r"memory: training needs at least ([\d,.]+) GB .*the process holds ([\d.]+) GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| run | estimate GB | held at estimate GB | peak GB | added GB | added / estimate |")
    print("|---|---|---|---|---|---|")
    for name, overrides in RUNS.items():
        started = time.monotonic()
        proc = subprocess.run(  # GNU time: the child's own peak (getrusage's children figure is a maximum over all)
            ["/usr/bin/time", "-f", "MAXRSS_KB %M", sys.executable, "-m", "lmbench", *overrides, "tracking=none",
             f"trainer.max_steps={args.steps}",
             "trainer.progress=false", f"hydra.run.dir={args.out / re.sub(r'[^a-z0-9]+', '_', name)}"],
            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        found, rss = LINE.search(proc.stdout + proc.stderr), re.search(r"MAXRSS_KB (\d+)", proc.stderr)
        if proc.returncode or not found or not rss:
            print(f"| {name} | failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-300:]!r} |")
            continue
        estimate, held = float(found.group(1).replace(",", "")), float(found.group(2))
        peak = int(rss.group(1)) * 1024 / 1e9
        added = peak - held
        print(f"| {name} | {estimate:.3f} | {held:.2f} | {peak:.2f} | {added:.2f} | {added / estimate:.1f}x "
              f"({time.monotonic() - started:.0f} s) |", flush=True)


if __name__ == "__main__":
    main()
