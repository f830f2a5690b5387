"""Causal self-attention on CPU: lmbench's matmuls against `keras.ops.dot_product_attention`.

    python benchmarks/attention_kernels.py [--repeats 30] [--threads 2]

Times, for the attention core only (the QKV and output projections are the same GEMMs either way),
a forward and backward pass (a training step's share) and a forward pass, each compiled by
`tf.function`, at the sizes the presets train with (batch 20, d_model 200, 4 heads of 50):

- `matmul`: lmbench's `CausalSelfAttention.attend` -- q, k, v as [batch, head, T, head_dim],
  q kᵀ and the weights times v as batched matmuls, the mask by `tf.where`, softmax in float32;
- `keras_dpa`: `keras.ops.dot_product_attention(q, k, v, is_causal=True)` on [batch, T, head,
  head_dim] (Keras' layout, which spares the transposes; its TensorFlow backend computes it with two
  einsums and a masked softmax);

with 4 key/value heads (full attention) and 2 (grouped-query). The two kernels alternate within
each repeat (interleaved, so that another process's load falls on both); the figure is the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH, HEADS, HEAD_DIM = 20, 4, 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[35, 128, 256])
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from lmbench.models.transformer_blocks import CausalSelfAttention

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {args.threads} threads, "
          f"batch {BATCH}, {HEADS} heads of {HEAD_DIM}, median of {args.repeats} interleaved repeats")
    print("| T | kv heads | pass | matmul ms | keras_dpa ms | dpa / matmul |")
    print("|---|---|---|---|---|---|")
    for length in args.lengths:
        for kv in (HEADS, HEADS // 2):
            layer = CausalSelfAttention(HEADS * HEAD_DIM, HEADS, 0.0, 0.02, 0.02, n_kv_head=kv)
            q = tf.random.normal((BATCH, HEADS, length, HEAD_DIM))
            k = tf.random.normal((BATCH, kv, length, HEAD_DIM))
            v = tf.random.normal((BATCH, kv, length, HEAD_DIM))
            causal = tf.linalg.band_part(tf.ones((length, length), tf.bool), -1, 0)
            qt, kt, vt = (tf.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))

            def ours(q, k, v):
                return layer.attend(q, k, v, causal)  # the output Dense included: both pay it

            def keras_dpa(q, k, v):
                y = keras.ops.dot_product_attention(q, k, v, is_causal=True)
                return layer.resid_drop(layer.out(tf.reshape(y, (BATCH, length, HEADS * HEAD_DIM))))

            def grad_of(fn):
                @tf.function
                def run(q, k, v):
                    with tf.GradientTape() as tape:
                        tape.watch([q, k, v])
                        loss = tf.reduce_sum(fn(q, k, v))
                    return tape.gradient(loss, [q, k, v])

                return run

            ours(q, k, v)  # builds the output Dense
            cases = {
                "fwd+bwd": (grad_of(ours), grad_of(keras_dpa)),
                "fwd": (tf.function(ours), tf.function(keras_dpa)),
            }
            for name, (a, b) in cases.items():
                times = {"a": [], "b": []}
                for _ in range(3):  # trace and warm up
                    a(q, k, v), b(qt, kt, vt)
                for _ in range(args.repeats):
                    for key, fn, inputs in (("a", a, (q, k, v)), ("b", b, (qt, kt, vt))):
                        start = time.perf_counter()
                        out = fn(*inputs)
                        _ = [t.numpy() for t in tf.nest.flatten(out)][:1]
                        times[key].append(1000 * (time.perf_counter() - start))
                ma, mb = statistics.median(times["a"]), statistics.median(times["b"])
                print(f"| {length} | {kv} | {name} | {ma:.2f} | {mb:.2f} | {mb / ma:.2f} |", flush=True)


if __name__ == "__main__":
    main()
