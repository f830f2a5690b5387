"""On a machine with a GPU: does lmbench train there as it does on the CPU, how fast, and does each
job of a sweep get a GPU of its own?

    python benchmarks/gpu_check.py [--families rnn lstm gru transformer transformer_modern awd_lstm]
        [--steps 100] [--ptb]
        [--precision float32] [--rtol 0.05] [--no-sweep]

1. Each family trains the same short run twice with the same seed, in a process of its own: on the
   CPU (CUDA_VISIBLE_DEVICES="") and on the GPU. The validation and test perplexities of the two
   must agree within --rtol (relative; float32 by default, so that only the kernels differ -- cuDNN
   against Keras' CPU loops -- not the precision), and the table gives both runs' training tokens/s.
   `awd_lstm` (model=awd_lstm, the paper's 24M-parameter PTB network) trains its weight-dropped
   LSTM unrolled on both devices (no cuDNN while training: the masked recurrent kernel is the
   family's own GEMM), scores through cuDNN on the GPU; its dropout masks come from Keras' seeded
   generators on either device. The corpus is a fixed synthetic one written into a temporary
   folder (a 500-word vocabulary, a first-order Markov chain: something to learn), or PTB from
   $LMBENCH_DATA_DIR with --ptb.
2. A sweep of as many LSTM jobs as there are GPUs through `launcher=ray` with
   `hydra.launcher.ray.remote.num_gpus=1` (needs `pip install -e ".[ray]"`; skipped without it):
   every job's run must have seen exactly one GPU (tag lmbench.gpus) and jobs must have been given
   different ones (tag lmbench.cuda_visible_devices, set by Ray). Ray started without an address
   listens on every interface: the sweep runs in a network namespace of its own (`unshare -n`,
   loopback only) when that is permitted, else it is skipped too.

3. With `--devices all` (or a number) instead: one network on several GPUs (`trainer.devices`,
   lmbench/training/distributed.py). Each family trains the same short run (same seed, global batch
   `--batch-size`, float32) on one GPU and on N; the training losses and perplexities must agree
   within --rtol, and the table gives both tokens/s and the scaling efficiency, tokens/s on N over
   N x tokens/s on one (the global batch is fixed: each device gets 1/N of it). `--cpu-devices N`
   runs the same comparison on N logical CPU devices, without a GPU (the same cores: efficiency
   about 1/N; it checks that the script and the figures work, e.g. `--cpu-devices 2 --steps 20`).

Exit status: 0 every check passed; 1 a check failed; 77 no GPU visible to TensorFlow (nothing was
checked; the conventional "skipped" status of test harnesses). Written on a machine without a
GPU, where only the 77 path has run; it runs unchanged where TensorFlow sees a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

NO_GPU = 77
FAMILIES = ("rnn", "lstm", "gru", "transformer", "transformer_modern", "awd_lstm")  # model=<name> presets
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def gpu_count() -> int:
    probe = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**os.environ, **QUIET}, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def write_corpus(folder: Path, seed: int = 0) -> list[str]:
    """A 500-word Markov chain (each word followed by one of 8 others), 200k/20k/20k tokens."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, 500, size=(500, 8))
    overrides = ["dataset=text_files"]
    for split, n_lines in (("train", 10_000), ("valid", 1_000), ("test", 1_000)):
        word, lines = 0, []
        for _ in range(n_lines):
            line = []
            for _ in range(20):
                word = successors[word, rng.integers(0, 8)]
                line.append(f"w{word}")
            lines.append(" ".join(line))
        path = folder / f"{split}.txt"
        path.write_text("\n".join(lines) + "\n")
        overrides.append(f"dataset.{split}={path}")
    return overrides


def lmbench(folder: Path, store: str, overrides: list[str], env: dict[str, str] | None = None,
            prefix: tuple[str, ...] = ()) -> None:
    cmd = [*prefix, sys.executable, "-m", "lmbench", *overrides, f"cache_dir={folder / 'cache'}",
           "trainer.progress=false", "tracking.experiment=gpu_check"]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True,
                          env={**os.environ, **QUIET, "MLFLOW_TRACKING_URI": store, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"gpu_check: {' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def run_of(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name("gpu_check")
    runs = client.search_runs([experiment.experiment_id], f"attributes.run_name LIKE '{name}-%'")  # <name>-<id>
    return runs[0]


def compare_devices(args, folder: Path, store: str, corpus: list[str]) -> bool:
    client, ok = MlflowClient(store), True
    print("| family | device | GPUs seen | valid ppl | test ppl | train tokens/s |\n|---|---|---:|---:|---:|---:|")
    for family in args.families:
        figures = {}
        for device, env in (("cpu", {"CUDA_VISIBLE_DEVICES": ""}), ("gpu", {})):
            name = f"{family}-{device}"
            lmbench(folder, store, [f"model={family}", *corpus, f"trainer.max_steps={args.steps}", "seed=1",
                                    f"trainer.precision={args.precision}", f"tracking.run_name={name}",
                                    f"hydra.run.dir={folder / 'runs' / name}"], env)
            run = run_of(client, name)
            m, gpus = run.data.metrics, int(run.data.tags["lmbench.gpus"])
            figures[device] = (m["best_valid/ppl"], m["test/ppl"])
            print(f"| {family} | {device} | {gpus} | {m['best_valid/ppl']:.2f} | {m['test/ppl']:.2f} "
                  f"| {m['train/tokens_per_sec']:,.0f} |")
            if (gpus == 0) != (device == "cpu"):
                print(f"FAIL {name}: TensorFlow saw {gpus} GPU(s)")
                ok = False
        for what, cpu, gpu in zip(("valid ppl", "test ppl"), figures["cpu"], figures["gpu"]):
            if abs(gpu - cpu) > args.rtol * cpu:
                print(f"FAIL {family}: {what} {gpu:.3f} on the GPU against {cpu:.3f} on the CPU (rtol {args.rtol})")
                ok = False
    return ok


def one_gpu_per_job(args, folder: Path, n_gpus: int, corpus: list[str]) -> bool:
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        print("per-job GPUs: skipped, hydra-ray-launcher is not installed (pip install -e '.[ray]')")
        return True
    if not shutil.which("unshare") or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        print("per-job GPUs: skipped, `unshare -n` is not permitted here (Ray must not listen on every interface)")
        return True
    store = f"sqlite:///{folder / 'sweep.db'}"
    MlflowClient(store).search_experiments()  # the schema before parallel jobs meet the file
    seeds = ",".join(str(s) for s in range(1, n_gpus + 1))
    lmbench(folder, store, ["-m", "launcher=ray", "hydra.launcher.ray.remote.num_gpus=1", "model=lstm",
                            f"seed={seeds}", *corpus, "trainer.max_steps=20", f"hydra.sweep.dir={folder / 'sweep'}"],
            prefix=("unshare", "-n", "bash", "-c", 'ip link set lo up && exec "$@"', "bash"))
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("gpu_check")
    jobs = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    seen = [(r.data.tags["lmbench.gpus"], r.data.tags.get("lmbench.cuda_visible_devices")) for r in jobs]
    print(f"per-job GPUs: {len(jobs)} jobs saw (GPUs, CUDA_VISIBLE_DEVICES) = {seen}")
    ok = len(jobs) == n_gpus and all(g == "1" for g, _ in seen) and len({d for _, d in seen}) == n_gpus
    if not ok:
        print(f"FAIL per-job GPUs: expected {n_gpus} jobs seeing one GPU each, each a different one")
    return ok


def compare_replicas(args, folder: Path, store: str, corpus: list[str], n: int, env: dict[str, str]) -> bool:
    """The same run on one device and on `n` (trainer.devices): equal figures, and the speed-up."""
    client, ok = MlflowClient(store), True
    print("| family | devices | final train loss | valid ppl | test ppl | train tokens/s | scaling efficiency |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for family in args.families:
        figures = {}
        for devices in (1, n):
            name = f"{family}-x{devices}"
            lmbench(folder, store, [f"model={family}", *corpus, f"trainer.max_steps={args.steps}", "seed=1",
                                    "trainer.precision=float32", f"trainer.batch_size={args.batch_size}",
                                    f"trainer.devices={devices}", f"tracking.run_name={name}",
                                    f"hydra.run.dir={folder / 'runs' / name}"], env)
            run = run_of(client, name)
            m = run.data.metrics
            figures[devices] = (m["train/loss"], m["best_valid/ppl"], m["test/ppl"], m["train/tokens_per_sec"])
        base = figures[1][3]
        for devices in (1, n):
            loss, valid, test, speed = figures[devices]
            print(f"| {family} | {devices} | {loss:.5f} | {valid:.3f} | {test:.3f} | {speed:,.0f} "
                  f"| {speed / (devices * base):.2f} |")
        for what, one, many in zip(("train loss", "valid ppl", "test ppl"), figures[1], figures[n]):
            if abs(many - one) > args.rtol * abs(one):
                print(f"FAIL {family}: {what} {many:.5f} on {n} devices against {one:.5f} on one (rtol {args.rtol})")
                ok = False
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--ptb", action="store_true", help="PTB from $LMBENCH_DATA_DIR instead of the fixed corpus")
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16", "auto"))
    parser.add_argument("--rtol", type=float, default=0.05)
    parser.add_argument("--no-sweep", action="store_true", help="leave out the one-GPU-per-job sweep")
    parser.add_argument("--devices", help="`all` or N: compare one GPU with N (trainer.devices) instead")
    parser.add_argument("--cpu-devices", type=int, help="compare one CPU device with N logical ones (no GPU needed)")
    parser.add_argument("--batch-size", type=int, default=24, help="the global batch of --devices (N must divide it)")
    args = parser.parse_args()

    if args.cpu_devices:  # the --devices comparison on logical CPU devices: runs anywhere
        sys.exit(0 if replicas_check(args, args.cpu_devices, {"CUDA_VISIBLE_DEVICES": ""}) else 1)
    n_gpus = gpu_count()
    if n_gpus == 0:
        print("gpu_check: TensorFlow sees no GPU on this machine (tf.config.list_physical_devices('GPU') "
              "is empty), so there is nothing to compare; run it where a GPU and CUDA are present "
              "(pip install -e '.[gpu]'). Nothing was checked.", file=sys.stderr)
        sys.exit(NO_GPU)
    if args.devices:
        n = n_gpus if args.devices == "all" else int(args.devices)
        sys.exit(0 if replicas_check(args, n, {}) else 1)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        folder = Path(tmp)
        corpus = ["dataset=ptb"] if args.ptb else write_corpus(folder)
        store = f"sqlite:///{folder / 'mlflow.db'}"
        MlflowClient(store).search_experiments()
        ok = compare_devices(args, folder, store, corpus)
        if not args.no_sweep:
            ok = one_gpu_per_job(args, folder, n_gpus, corpus) and ok
    print("gpu_check: all checks passed" if ok else "gpu_check: some checks FAILED")
    sys.exit(0 if ok else 1)


def replicas_check(args, n: int, env: dict[str, str]) -> bool:
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        folder = Path(tmp)
        corpus = ["dataset=ptb"] if args.ptb else write_corpus(folder)
        store = f"sqlite:///{folder / 'mlflow.db'}"
        MlflowClient(store).search_experiments()
        ok = compare_replicas(args, folder, store, corpus, n, env)
    print("gpu_check: all checks passed" if ok else "gpu_check: some checks FAILED")
    return ok


if __name__ == "__main__":
    main()
