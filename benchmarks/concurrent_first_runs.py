"""Identical commands started at one instant on a fresh sqlite store: is every run recorded?

    python benchmarks/concurrent_first_runs.py OUT_DIR [--commands 4] [--times 10] [--model ngram]

Each round makes a fresh folder under OUT_DIR with the tests' 4-sentence corpus, then starts
`--commands` identical `python -m lmbench` commands in it at one instant (each waits, after its
imports, for the same start signal: a file the script creates once all are waiting; so the
commands meet the store within milliseconds of each other, not spread by their TensorFlow
imports), all with `tracking.uri=sqlite:///x.db` (a file that does not exist yet) and the default
run folder (outputs/<date>/<time>, the same second for all). Recorded per round: the exit codes,
the runs in the store and their statuses, the run folders made, and the first line of any error.
Expected: every command exits 0, the store holds `--commands` FINISHED runs, each in its own
run folder.

The script only reads what lmbench writes: it runs unchanged against another checkout
(PYTHONPATH) to record the behaviour before a change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "a dog saw the cat on the mat"]

# Run inside each command: wait for the start signal after the imports, then run lmbench's main.
STARTER = """
import os, sys, time
import lmbench.cli.main as m
import tensorflow, mlflow  # imported before the signal: the commands then meet the store together
go = os.environ["LMBENCH_GO_FILE"]
while not os.path.exists(go):
    time.sleep(0.002)
sys.argv = ["lmbench", *sys.argv[1:]]
m.main()
"""


NOISE = ("HYDRA_FULL_ERROR", "Background on this error")


def write_corpus(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    args = []
    for i, (split, n) in enumerate((("train", 200), ("valid", 20), ("test", 20))):
        path = folder / f"{split}.txt"
        path.write_text("\n".join(SENTENCES[(j * 7 + i) % 4] for j in range(n)) + "\n", encoding="utf-8")
        args.append(f"dataset.{split}={path}")
    return args


def one_round(folder: Path, commands: int, model: str) -> dict:
    folder.mkdir(parents=True)
    corpus = write_corpus(folder / "data")
    go = folder / "go"
    env = {**os.environ, "LMBENCH_GO_FILE": str(go), "LMBENCH_CACHE_DIR": str(folder / "cache"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [f"model={model}", "dataset=text_files", *corpus, "tracking.uri=sqlite:///x.db",
            "tracking.experiment=race", "trainer.progress=false", "trainer.batch_size=4", "trainer.bptt=8",
            "trainer.eval_batch_size=2", "trainer.max_steps=3"]
    if model != "ngram":
        argv += ["model.hidden_size=8", "model.embedding_dim=8", "model.num_layers=1"]
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, *argv], cwd=folder, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(commands)]
    time.sleep(12)  # every command has imported TensorFlow and MLflow and waits (two busy cores: 5-10 s)
    go.touch()
    start = time.monotonic()
    outs = [p.communicate(timeout=600) for p in procs]
    seconds = time.monotonic() - start
    errors = []
    for (_, err), p in zip(outs, procs):
        if p.returncode:
            lines = [ln for ln in err.splitlines() if ln.strip() and not any(w in ln for w in NOISE)]
            said = [ln for ln in lines if ln.startswith("lmbench:")]  # lmbench's paragraph, else the last line
            first = said[0] if said else (lines[-1] if lines else "")
            errors.append(first[:200])
    statuses: Counter = Counter()
    db = folder / "x.db"
    if db.exists():
        from mlflow import MlflowClient

        try:
            client = MlflowClient(tracking_uri=f"sqlite:///{db}")
            exp = client.get_experiment_by_name("race")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            statuses = Counter(r.info.status for r in runs)
        except Exception as ex:  # a half-migrated store cannot be read
            statuses = Counter({f"unreadable: {str(ex).splitlines()[0][:100]}": 1})
    folders = [p for p in (folder / "outputs").glob("*/*")] if (folder / "outputs").exists() else []
    return {"exit": [p.returncode for p in procs], "runs": dict(statuses), "run_folders": len(folders),
            "seconds": round(seconds, 1), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--commands", type=int, default=4)
    parser.add_argument("--times", type=int, default=10)
    parser.add_argument("--model", default="ngram")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    good = 0
    for i in range(args.times):
        result = one_round(args.out / f"round{i:02d}-{time.time_ns()}", args.commands, args.model)
        ok = (result["exit"] == [0] * args.commands and result["runs"] == {"FINISHED": args.commands}
              and result["run_folders"] == args.commands)
        good += ok
        print(json.dumps({"round": i, "ok": ok, **result}), flush=True)
    print(f"{good} of {args.times} rounds: all {args.commands} runs recorded FINISHED, each in its own folder")
    sys.exit(0 if good == args.times else 1)


if __name__ == "__main__":
    main()
