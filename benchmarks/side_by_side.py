"""Two lmbench checkouts side by side: training step time and peak memory, scoring throughput.

    python benchmarks/side_by_side.py --checkouts /path/to/main /path/to/branch
        [--families lstm transformer] [--vocab 10000 33278] [--precisions float32 mixed_bfloat16]
        [--score-families rnn gru lstm transformer] [--score-vocab 10000] [--repeats 2] [--steps 10]

Every measurement runs in a fresh process (this script re-launched with `--worker`) whose
PYTHONPATH is the checkout measured, so that each imports its own lmbench, and so that its peak
RSS (`ru_maxrss`) is that one model's: `peak MB` is the process's peak, `step MB` the peak minus
the RSS just before the first step, after the step's graph was traced (training) or after one
untimed call (scoring): the memory the steps themselves take (logits, gradients, buffers).
Repetitions are interleaved over checkouts and rows, so that load from other jobs spreads over all
of them; the table gives medians over repetitions and the ratios (how many times better new is).

Training rows: the set-up of `benchmarks/train_throughput.py` (2 x 200, dropout 0.2, batch
20 x 35 random ids, SGD lr 20, global-norm clip 0.25), lmbench's own `make_train_step`. Scoring
rows: `model.score` of `--score-tokens` random ids (an eos every 20) at eval batch 10, after one
untimed call that builds the graphs, as `benchmarks/eval_throughput.py` does.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def train_worker(family: str, vocab: int, precision: str, steps: int, warmup: int) -> dict:
    import keras
    import tensorflow as tf
    from omegaconf import OmegaConf

    from lmbench.models.recurrent import RecurrentLM
    from lmbench.models.transformer import TransformerLM
    from lmbench.training.steps import build_optimizer, make_train_step

    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    sys.path.insert(0, BENCH_DIR)
    import train_throughput as tt

    if family == "transformer":
        model = TransformerLM(vocab, 0, n_layer=tt.LAYERS, n_head=tt.HEADS, d_model=tt.WIDTH, d_ff=tt.D_FF,
                              dropout=tt.DROPOUT, context=tt.BPTT)
    else:
        model = RecurrentLM(vocab, 0, cell=family, embedding_dim=tt.WIDTH, hidden_size=tt.WIDTH,
                            num_layers=tt.LAYERS, dropout=tt.DROPOUT)
    sgd = OmegaConf.create({"_target_": "keras.optimizers.SGD", "learning_rate": tt.LR})
    if len(inspect.signature(build_optimizer).parameters) == 2:  # a checkout whose optimizer clips (Keras)
        optimizer, clip = build_optimizer(sgd, tt.CLIP), {}
    else:  # since the adaptive branch: make_train_step clips (tf.clip_by_global_norm)
        optimizer, clip = build_optimizer(sgd), {"clip_norm": tt.CLIP}
    model.build_for_inference()
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, False, **clip)
    x, y = (tf.constant(a, dtype=tf.int32) for a in tt.random_batch(vocab, 0))
    states = model.initial_state(tt.BATCH)
    # Trace the step's graph before measuring: tracing takes memory of its own, not the step's.
    step.get_concrete_function(x, y, states)
    before = rss_mb()
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        loss, states = step(x, y, states)
        float(loss)
        times.append(time.perf_counter() - start)
    return {"ms": 1000 * statistics.median(times[warmup:]), "peak": peak_rss_mb(), "step_mb": peak_rss_mb() - before}


def score_worker(family: str, vocab: int, tokens: int) -> dict:
    import keras

    keras.utils.set_random_seed(0)
    sys.path.insert(0, BENCH_DIR)
    from eval_throughput import build

    ids = np.random.default_rng(0).integers(1, vocab, tokens)
    ids[19::20] = 0
    model = build(family, vocab)
    model.score(ids[:2000], batch_size=10)
    before = rss_mb()
    start = time.perf_counter()
    model.score(ids, batch_size=10)
    rate = tokens / (time.perf_counter() - start)
    return {"tokens_s": rate, "peak": peak_rss_mb(), "step_mb": peak_rss_mb() - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkouts", nargs=2, required=True, metavar=("OLD", "NEW"))
    parser.add_argument("--families", nargs="*", default=["lstm", "transformer"])
    parser.add_argument("--vocab", nargs="*", type=int, default=[10_000, 33_278])
    parser.add_argument("--precisions", nargs="*", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--score-families", nargs="*", default=["rnn", "gru", "lstm", "transformer"])
    parser.add_argument("--score-vocab", nargs="*", type=int, default=[10_000])
    parser.add_argument("--score-tokens", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, family, vocab, *rest = args.worker
        if kind == "train":
            out = train_worker(family, int(vocab), rest[0], args.steps, args.warmup)
        else:
            out = score_worker(family, int(vocab), args.score_tokens)
        print(json.dumps(out), flush=True)
        return

    rows = [("train", f, v, p) for p in args.precisions for v in args.vocab for f in args.families]
    rows += [("score", f, v, "float32") for v in args.score_vocab for f in args.score_families]
    results: dict[tuple, list[dict]] = {}
    for rep in range(args.repeats):
        for row in rows:
            for checkout in args.checkouts:
                kind, family, vocab, precision = row
                cmd = [sys.executable, __file__, "--checkouts", *args.checkouts, "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--score-tokens", str(args.score_tokens),
                       "--worker", kind, family, str(vocab), precision]
                env = {**os.environ, "PYTHONPATH": checkout}
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
                results.setdefault((row, checkout), []).append(json.loads(out.strip().splitlines()[-1]))
                print(f"rep {rep + 1}: {row} {checkout} {results[(row, checkout)][-1]}", file=sys.stderr, flush=True)

    old, new = args.checkouts
    print(f"\nold = {old}\nnew = {new}\n{os.cpu_count()} CPUs; medians of {args.repeats} interleaved repetitions")
    print(f"{'row':34s} {'old':>9s} {'new':>9s} {'ratio':>7s} {'peak MB old/new':>17s} {'step MB old/new':>17s}")
    for row in rows:
        kind, family, vocab, precision = row
        a, b = results[(row, old)], results[(row, new)]
        med = lambda rs, key: statistics.median(r[key] for r in rs)  # noqa: E731
        if kind == "train":
            speed_a, speed_b, ratio = med(a, "ms"), med(b, "ms"), med(a, "ms") / med(b, "ms")
            unit = "ms"
        else:
            speed_a, speed_b, ratio = med(a, "tokens_s"), med(b, "tokens_s"), med(b, "tokens_s") / med(a, "tokens_s")
            unit = "tok/s"
        label = f"{kind} {family} |V|={vocab} {precision}"
        print(
            f"{label:34s} {speed_a:9.1f} {speed_b:9.1f} {ratio:6.2f}x {med(a, 'peak'):8.0f}/{med(b, 'peak'):<8.0f}"
            f" {med(a, 'step_mb'):8.0f}/{med(b, 'step_mb'):<8.0f} ({unit}; ratio: new better by)"
        )


if __name__ == "__main__":
    main()
