"""Where a recurrent scoring window's time goes: the layers, the output head, and the head's GEMM.

    python benchmarks/score_parts.py [--family lstm] [--vocab 10000] [--batch-size 10] [--repeats 7]

One window of `model.score` (`--batch-size` streams x `eval_window` = 256 steps, float32, the
model of `benchmarks/eval_throughput.py`) timed in parts, each a compiled function of its own, as
the median of `--repeats` calls after one untimed call: the recurrent layers alone, the output
head's `token_nll` alone (on random hidden states), the whole scoring step, and, for scale, the
head's projection as one dense matmul and as one matmul plus a log-sum-exp over its logits (its
GFLOP/s: 2 * positions * width * |V| flops). The sum of the first two is about the whole step;
the dense matmul is the float32 floor of the head on this CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import build  # noqa: E402


def median_ms(fn, *args, repeats: int) -> float:
    import tensorflow as tf

    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("rnn", "gru", "lstm"), default="lstm")
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import numpy as np
    import tensorflow as tf

    model = build(args.family, args.vocab)
    rng = np.random.default_rng(0)
    shape = (args.batch_size, model.eval_window)
    x = tf.constant(rng.integers(0, args.vocab, shape), tf.int32)
    y = tf.constant(rng.integers(0, args.vocab, shape), tf.int32)
    width = model.hidden_size
    h = tf.constant(rng.standard_normal((*shape, width)).astype(np.float32))
    flat = tf.reshape(h, [-1, width])
    kernel = tf.constant(rng.standard_normal((width, args.vocab)).astype(np.float32) * 0.05)
    states = model.initial_state(args.batch_size)
    parts = {
        "recurrent layers": median_ms(tf.function(lambda x, s: model(x, states=s)), x, states, repeats=args.repeats),
        "output head (token_nll)": median_ms(
            tf.function(lambda h, y: model.output_head.token_nll(h, y)), h, y, repeats=args.repeats),
        "whole scoring step": median_ms(model._scoring_step(), x, y, states, repeats=args.repeats),
        "dense matmul": median_ms(tf.function(lambda f: tf.reduce_sum(tf.matmul(f, kernel))), flat,
                                  repeats=args.repeats),
        "dense matmul + logsumexp": median_ms(
            tf.function(lambda f: tf.reduce_logsumexp(tf.matmul(f, kernel), axis=1)), flat, repeats=args.repeats),
    }
    positions = shape[0] * shape[1]
    gflop = 2 * positions * width * args.vocab / 1e9
    print(f"{args.family}, |V| = {args.vocab:,}, one scoring window of {shape[0]} x {shape[1]} = {positions:,} "
          f"positions, float32, medians of {args.repeats}")
    for name, ms in parts.items():
        rate = f"  ({gflop / ms * 1000:.0f} GFLOP/s)" if name == "dense matmul" else ""
        print(f"  {name:26s} {ms:7.1f} ms{rate}")


if __name__ == "__main__":
    main()
