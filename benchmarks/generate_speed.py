"""Transformer generation speed: tokens per second of `model.generate`.

    python benchmarks/generate_speed.py [--tokens 500] [--context 256] [--vocab 10000] [--repeats 3]
    PYTHONPATH=/path/to/other/checkout python benchmarks/generate_speed.py   # another version's code

A transformer_small-sized model (2 layers of width 200, 4 heads, d_ff 400; random weights: the speed
does not depend on them) with `context` positions, a prompt of context - 1 tokens (with the leading
end-of-sentence token the window starts full), `tokens` tokens sampled at temperature 1 (seed 0).
A short generation first traces what needs tracing; the figure is the median over `repeats` of the
whole `generate` call, sampling in NumPy included. It prints the lmbench it imported, so that two
checkouts' figures can be told apart; `--modern` (this branch only) builds transformer_modern's
blocks (RoPE, RMSNorm, SwiGLU, no biases, 2 key/value heads) instead of GPT-2's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modern", action="store_true")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    import lmbench
    from lmbench.models.transformer import TransformerLM

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    options = {}
    if args.modern:
        options = {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_kv_head": 2}
    model = TransformerLM(
        args.vocab, 0, n_layer=2, n_head=4, d_model=200, d_ff=400, context=args.context, dropout=0.0, **options
    )
    model.build_for_inference()
    prompt = np.random.default_rng(0).integers(1, args.vocab, args.context - 1)
    model.generate(prompt, 8, seed=0)  # traces
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = model.generate(prompt, args.tokens, seed=0)
        times.append(time.perf_counter() - start)
    assert len(out) == args.tokens
    seconds = statistics.median(times)
    print(
        f"{os.path.dirname(lmbench.__file__)}: {'modern' if args.modern else 'gpt-2'} blocks, context "
        f"{args.context}, |V| {args.vocab}, {args.tokens} tokens: {seconds:.2f} s, "
        f"{args.tokens / seconds:.1f} tokens/s (median of {args.repeats}: "
        + ", ".join(f"{t:.2f}" for t in times) + ")",
        flush=True,
    )


if __name__ == "__main__":
    main()
