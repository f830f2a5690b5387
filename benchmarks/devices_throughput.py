"""Training throughput of whole lmbench runs, by checkout and number of devices, interleaved.

    python benchmarks/devices_throughput.py --runs main=/tmp/main-ref:1 branch=.:1 branch-x2=.:2
        [--model lstm_small] [--steps 60] [--repeats 3] [--ptb]

Each run is `python -m lmbench` in a fresh process with PYTHONPATH set to its checkout and
`trainer.devices` as given (`name=checkout:devices`), float32, logging every 10 steps. Repetitions
are interleaved over the runs, so that load from other jobs spreads over all of them. The table
gives, per run, the medians over repetitions of the run's `train/tokens_per_sec` (all its steps,
the first one's tracing included) and of the median window speed after the first window
(`train/window_tokens_per_sec`: steady state), and their ratio to the first run.

Without a GPU, `trainer.devices=2` is 2 logical devices on the same cores: it measures the cost of
the data-parallel step, not a speed-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow import MlflowClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_check import write_corpus  # noqa: E402


def one_run(folder: Path, store: str, name: str, checkout: str, devices: int, args, corpus: list[str], i: int):
    tag = f"{name}-{i}"
    cmd = [sys.executable, "-m", "lmbench", f"model={args.model}", *corpus, f"trainer.max_steps={args.steps}",
           "trainer.precision=float32", *([f"trainer.devices={devices}"] if devices != 1 else []),  # main lacks the key
           "trainer.progress=false", "seed=1",
           "tracking.log_every_n_steps=10", "tracking.experiment=throughput", f"tracking.run_name=r{i}-{name}-end",
           f"hydra.run.dir={folder / tag}", f"cache_dir={folder / 'cache'}", "tracking.log_model=false"]
    env = {**os.environ, "PYTHONPATH": str(Path(checkout).resolve()), "TF_CPP_MIN_LOG_LEVEL": "3",
           "MLFLOW_TRACKING_URI": store}
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("throughput")
    (run,) = client.search_runs([experiment.experiment_id], f"attributes.run_name LIKE 'r{i}-{name}-end-%'")  # + -<id>
    windows = sorted(client.get_metric_history(run.info.run_id, "train/window_tokens_per_sec"), key=lambda m: m.step)
    steady = statistics.median(m.value for m in windows[1:]) if len(windows) > 1 else float("nan")
    return run.data.metrics["train/tokens_per_sec"], steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="name=checkout:devices")
    parser.add_argument("--model", default="lstm_small")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ptb", action="store_true", help="PTB from $LMBENCH_DATA_DIR instead of the fixed corpus")
    args = parser.parse_args()
    runs = []
    for spec in args.runs:
        name, rest = spec.split("=", 1)
        checkout, devices = rest.rsplit(":", 1)
        runs.append((name, checkout, int(devices)))
    with tempfile.TemporaryDirectory(prefix="devices_throughput-") as tmp:
        folder = Path(tmp)
        corpus = ["dataset=ptb"] if args.ptb else write_corpus(folder)
        store = f"sqlite:///{folder / 'mlflow.db'}"
        MlflowClient(store).search_experiments()
        figures = {name: [] for name, _, _ in runs}
        for i in range(args.repeats):
            for name, checkout, devices in runs:
                figures[name].append(one_run(folder, store, name, checkout, devices, args, corpus, i))
                print(f"repeat {i + 1}: {name}: {figures[name][-1][0]:,.0f} tok/s run, "
                      f"{figures[name][-1][1]:,.0f} tok/s steady", flush=True)
    first = runs[0][0]
    base = [statistics.median(f[k] for f in figures[first]) for k in (0, 1)]
    print(f"\n{args.model}, {args.steps} steps, medians of {args.repeats}\n"
          "| run | devices | tokens/s (run) | ratio | tokens/s (steady) | ratio |\n|---|---:|---:|---:|---:|---:|")
    for name, _, devices in runs:
        run_speed, steady = (statistics.median(f[k] for f in figures[name]) for k in (0, 1))
        print(f"| {name} | {devices} | {run_speed:,.0f} | {run_speed / base[0]:.2f} | {steady:,.0f} "
              f"| {steady / base[1]:.2f} |")


if __name__ == "__main__":
    main()
