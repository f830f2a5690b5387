"""The kernels that dominate a word-level training step, timed alone in TensorFlow and PyTorch.

    python benchmarks/projection_kernels.py [--vocab 33278] [--threads 2] [--repeats 10]
        [--frameworks tensorflow pytorch]

A 2x200 model on batches of 20 x 35 tokens spends most of its step in the output projection
(positions 700 x width 200 -> |V| logits) and the softmax cross-entropy over those logits. This
script times, for each framework in a process of its own (their thread pools disturb each other
in one process), with `--threads` threads:

- the projection's three GEMMs: forward (h @ W), input gradient (g @ W^T), weight gradient
  (h^T @ g), in float32 and bfloat16, as ms and GFLOP/s (2·700·200·|V| flops each);
- the loss and its gradient over float32 logits: TensorFlow's fused
  `sparse_softmax_cross_entropy_with_logits`, lmbench's `token_nll` (XLA, hand-written gradient),
  PyTorch's `cross_entropy`;
- allocating and filling a fresh logits-sized buffer against filling an existing one (PyTorch
  takes each fresh buffer of this size from the kernel, page by page).

It explains the train-step table of `train_throughput.py` rather than replacing it: the sum of
these kernels is most of a step. PyTorch is optional (a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

POSITIONS, WIDTH = 20 * 35, 200


def median_ms(fn, repeats: int) -> float:
    fn()
    fn()  # build graphs / warm caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def tensorflow_rows(vocab: int, repeats: int):
    import tensorflow as tf

    from lmbench.models.heads import token_nll

    rows = []
    for dtype in (tf.float32, tf.bfloat16):
        h = tf.cast(tf.random.normal((POSITIONS, WIDTH)), dtype)
        w = tf.cast(tf.random.normal((WIDTH, vocab)), dtype)
        g = tf.cast(tf.random.normal((POSITIONS, vocab)), dtype)
        # each wrapped in a compiled function returning a scalar, so the time is the kernel's
        gemms = {
            "gemm forward": tf.function(lambda: tf.reduce_sum(tf.cast((h @ w)[:, :1], tf.float32))),
            "gemm input-grad": tf.function(
                lambda: tf.reduce_sum(tf.cast(tf.matmul(g, w, transpose_b=True)[:, :1], tf.float32))
            ),
            "gemm weight-grad": tf.function(
                lambda: tf.reduce_sum(tf.cast(tf.matmul(h, g, transpose_a=True)[:, :1], tf.float32))
            ),
        }
        for name, fn in gemms.items():
            rows.append((f"{name} {dtype.name}", median_ms(lambda: fn().numpy(), repeats), True))
    logits = tf.random.normal((POSITIONS, vocab))
    labels = tf.random.uniform((POSITIONS,), 0, vocab, dtype=tf.int32)

    def loss_and_grad(loss_fn):
        @tf.function
        def fn():
            with tf.GradientTape() as tape:
                tape.watch(logits)
                loss = tf.reduce_mean(loss_fn())
            return tf.reduce_sum(tape.gradient(loss, logits)[:, :1])

        return lambda: fn().numpy()

    fused = loss_and_grad(lambda: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    rows.append(("loss+grad fused TF op", median_ms(fused, repeats), False))
    rows.append(
        ("loss+grad lmbench token_nll", median_ms(loss_and_grad(lambda: token_nll(labels, logits)), repeats), False)
    )
    return rows, f"TF {tf.__version__}"


def pytorch_rows(vocab: int, repeats: int):
    import torch

    rows = []
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            h = torch.randn(POSITIONS, WIDTH, dtype=dtype)
            w = torch.randn(vocab, WIDTH, dtype=dtype)  # nn.Linear's layout
            g = torch.randn(POSITIONS, vocab, dtype=dtype)
            name = str(dtype).split(".")[1]
            rows.append((f"gemm forward {name}", median_ms(lambda: h @ w.t(), repeats), True))
            rows.append((f"gemm input-grad {name}", median_ms(lambda: g @ w, repeats), True))
            rows.append((f"gemm weight-grad {name}", median_ms(lambda: g.t() @ h, repeats), True))
        fresh = median_ms(lambda: torch.empty(POSITIONS, vocab).fill_(0.0), repeats)
        buffer = torch.empty(POSITIONS, vocab)
        rows.append(("fresh logits buffer, fill", fresh, False))
        rows.append(("existing buffer, fill", median_ms(lambda: buffer.fill_(0.0), repeats), False))
    logits = torch.randn(POSITIONS, vocab, requires_grad=True)
    labels = torch.randint(0, vocab, (POSITIONS,))

    def loss_and_grad():
        logits.grad = None
        torch.nn.functional.cross_entropy(logits, labels).backward()

    rows.append(("loss+grad cross_entropy", median_ms(loss_and_grad, repeats), False))
    return rows, f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=33_278)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--frameworks", nargs="+", choices=("tensorflow", "pytorch"), default=["tensorflow", "pytorch"])
    parser.add_argument("--worker", choices=("tensorflow", "pytorch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rows, version = (tensorflow_rows if args.worker == "tensorflow" else pytorch_rows)(args.vocab, args.repeats)
        print(json.dumps({"rows": rows, "version": version}))
        return

    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        TF_NUM_INTRAOP_THREADS=str(args.threads),
        TF_NUM_INTEROP_THREADS="1",
    )
    flops = 2 * POSITIONS * WIDTH * args.vocab
    print(
        f"|V| = {args.vocab:,}, {POSITIONS} positions x width {WIDTH}, {args.threads} thread(s), "
        f"median of {args.repeats}; GEMM = {flops / 1e9:.2f} GFLOP"
    )
    for framework in args.frameworks:
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--worker", framework], capture_output=True, text=True, env=env
        )
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            print(f"\n{framework}: skipped ({tail[0]})")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"\n{result['version']}")
        for name, ms, is_gemm in result["rows"]:
            rate = f"{flops / ms / 1e6:8.1f} GFLOP/s" if is_gemm else ""
            print(f"  {name:32s} {ms:8.1f} ms {rate}")


if __name__ == "__main__":
    main()
