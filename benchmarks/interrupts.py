"""Ctrl-C and SIGTERM, many times over: does every interrupted run end KILLED, and does the same
command continue it?

    python benchmarks/interrupts.py OUT_DIR [--times 20] [--signals INT TERM] [--phases train score]
        [--max-delay 3] [--seed 0]

For each phase and signal, one run is started `--times` times with the same command (so from the
second start on it resumes its own checkpoint), and each time it is sent the signal at a random
moment (uniform in [0, --max-delay] s) after it reached the phase:

- train: after the run printed its MLflow run id (training starts right after) and has a
  checkpoint (the first start waits for its first one, so that every later one resumes). Metrics
  are logged at every step (tracking.log_every_n_steps=1), so that many signals land inside a write
  to the sqlite store, and a checkpoint is written every 10 steps.
- score: after the checkpoint says training is over (the first start trains 20 steps; every later
  start resumes straight to scoring: the best validation is scored again, then the test split,
  which is large enough to take seconds).

Each interruption records the exit status ("still running" when the process had not exited
--exit-wait seconds after the signal: it is then SIGKILLed), the seconds from the signal to the
exit, the MLflow run's status and `lmbench.error` tag, and whether stderr holds a traceback. After
the last one, the command runs once more to its end, which must finish the same (only) run (the
train phase's last start is given trainer.max_steps=<its step> + 50, so that it ends). The table
gives the counts.
Expected: every exit 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), every run
KILLED, no traceback, the final run FINISHED and the experiment holding one run.

The script only reads what lmbench writes (stdout, the checkpoint's trainer_state.json, the
store): it runs unchanged against another checkout (PYTHONPATH) to record the behaviour before a
change. Each start costs a TensorFlow import (~5-10 s on two busy cores): 4 x 21 starts take
15-20 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from mlflow import MlflowClient

SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "a dog saw the cat on the mat"]


def write_corpus(folder: Path, rng: random.Random) -> dict[str, Path]:
    """The tests' 4-sentence grammar; a long test split, so that scoring takes seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", 3000), ("valid", 200), ("test", 30000)):
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text("\n".join(rng.choice(SENTENCES) for _ in range(n)) + "\n", encoding="utf-8")
    return paths


def command(corpus: dict[str, Path], folder: Path, phase: str) -> list[str]:
    steps = ["trainer.max_epochs=100"] if phase == "train" else ["trainer.max_steps=20"]
    return [
        sys.executable, "-m", "lmbench", f"hydra.run.dir={folder / 'run'}",
        "dataset=text_files", *(f"dataset.{s}={p}" for s, p in corpus.items()), f"cache_dir={folder.parent / 'cache'}",
        "model.hidden_size=32", "model.embedding_dim=32", "model.num_layers=1", "optimizer=adam",
        "trainer.batch_size=4", "trainer.bptt=8", "trainer.eval_batch_size=1", "trainer.progress=false",
        "trainer.checkpoint_every_n_steps=10", "trainer.divergence_grace_steps=null", *steps,
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", "tracking.experiment=interrupts",
        "tracking.log_every_n_steps=1", "tracking.log_token_scores=false", "tracking.log_model=false",
    ]


def runs(folder: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("interrupts")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def reached(phase: str, folder: Path, out: Path) -> bool:
    """The run has started (or resumed) and has a checkpoint: from the phase's training or scoring."""
    started = "MLflow run " in out.read_text(errors="replace")
    try:
        state = json.loads((folder / "run" / "checkpoints" / "last" / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return started and (phase == "train" or state.get("finished_training", False))


def interrupt_once(cmd, folder: Path, phase: str, signum: int, delay: float, env: dict, exit_wait: float
                   ) -> dict:
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        # A shell's background job starts with SIGINT ignored, and Python then never raises
        # KeyboardInterrupt: give the child a terminal's foreground disposition.
        proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 600
        while proc.poll() is None and not reached(phase, folder, out) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        sent = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signum)
        else:
            sent = None
        try:
            proc.wait(timeout=exit_wait)
        except subprocess.TimeoutExpired:  # the signal was lost: the run goes on
            proc.kill()
            proc.wait()
        exited = time.monotonic()
    text = err.read_text(errors="replace")
    if "Traceback" in text:  # kept for a look: the next start overwrites stderr.txt
        (folder / f"stderr-traceback-{time.strftime('%H%M%S')}.txt").write_text(text)
    run = max(runs(folder), key=lambda r: r.info.start_time, default=None)
    return {
        "rc": "still running" if proc.returncode == -signal.SIGKILL else proc.returncode,
        "seconds": None if sent is None else exited - sent,
        "status": run.info.status if run else "no run", "error": run.data.tags.get("lmbench.error") if run else None,
        "traceback": "Traceback" in text, "ended_before_signal": sent is None,
        "first_line": next((line for line in text.splitlines() if line.startswith("lmbench")), ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--times", type=int, default=20)
    parser.add_argument("--signals", nargs="+", default=["INT", "TERM"], choices=["INT", "TERM"])
    parser.add_argument("--phases", nargs="+", default=["train", "score"], choices=["train", "score"])
    parser.add_argument("--max-delay", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exit-wait", type=float, default=60.0,
                        help="seconds a process may take to exit after the signal; then it is SIGKILLed and "
                        "counted as 'still running' (the signal was lost)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    corpus = write_corpus(args.out / "corpus", rng)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    rows = []
    for phase in args.phases:
        for name in args.signals:
            signum = getattr(signal, f"SIG{name}")
            folder = args.out / f"{phase}-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            cmd = command(corpus, folder, phase)
            results = []
            for i in range(args.times):
                r = interrupt_once(cmd, folder, phase, signum, rng.uniform(0, args.max_delay), env, args.exit_wait)
                results.append(r)
                print(f"{phase} SIG{name} {i + 1}/{args.times}: {r}", flush=True)
            try:  # the train phase's run is long; its last start trains 50 steps more and ends
                step = json.loads((folder / "run" / "checkpoints" / "last" / "trainer_state.json").read_text())[
                    "global_step"]
            except (OSError, ValueError, KeyError):
                step = 0
            last = [*cmd, f"trainer.max_steps={step + 50}"] if phase == "train" else cmd
            final = subprocess.run(last, env=env, capture_output=True, text=True, timeout=1800)
            every = runs(folder)
            rows.append((phase, name, results, final.returncode, [r.info.status for r in every],
                         "Resuming from" in final.stdout))
    print("\n| phase | signal | n | exit codes | run status after | tracebacks | seconds to exit (mean / max) "
          "| final rerun: exit, runs in the store, resumed |")
    print("|---|---|---|---|---|---|---|---|")
    for phase, name, results, rc, statuses, resumed in rows:
        sent = [r["seconds"] for r in results if r["seconds"] is not None]
        codes = ", ".join(f"{c}: {n}" for c, n in Counter(r["rc"] for r in results).most_common())
        status = ", ".join(f"{s}: {n}" for s, n in Counter(r["status"] for r in results).most_common())
        timing = f"{sum(sent) / len(sent):.2f} / {max(sent):.2f}" if sent else "-"
        print(f"| {phase} | SIG{name} | {len(results)} | {codes} | {status} | "
              f"{sum(r['traceback'] for r in results)} | {timing} | {rc}, {statuses}, {resumed} |")


if __name__ == "__main__":
    main()
