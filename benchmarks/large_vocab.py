"""Full softmax against adaptive softmax at a large word vocabulary, side by side on one corpus.

    python benchmarks/large_vocab.py --corpus /work/runs/big --cache-dir /work/runs/adaptive_cache
        [--budget 600] [--cutoffs 20000 100000] [--factor 4] [--variants full adaptive]

The corpus is `benchmarks/make_corpus.py`'s ({train,valid,test}.txt, word level; never in git).
Each variant is a 2 x 200 LSTM (untied, dropout 0), trained by lmbench's own pieces -- `run.prepare`
and `run.build` (the token-id cache, the model, `adapt` of the output head, the optimizer: SGD lr 20,
clip 0.25), `steps.make_train_step` over `steps.bptt_windows` windows of bptt 35 x batch 20, state
carried between windows -- under `trainer.precision=auto`, for `--budget` seconds of training wall
time (the first step's tracing included), and then scored on the first `--valid-tokens` tokens of
the validation split (cut at a line end) computing in float32, as the trainer scores. Variants
differ only in `model.head`.

Each variant runs in a fresh process of its own (this script with `--worker`), one after the other,
never two at once: its peak RSS (ru_maxrss) is the process's alone, and a full softmax at |V| =
250,000 is heavy. Printed per variant: steps, median step time, training tokens/s (tokens of the
steps after the first 5 / their time), validation perplexity, peak RSS; then the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WARMUP_STEPS = 5  # untimed for tokens/s (tracing, first allocations); they count against the budget


def overrides(args, variant: str) -> list[str]:
    head = ["model/head=full"]
    if variant == "adaptive":
        cutoffs = ",".join(str(c) for c in args.cutoffs)
        head = ["model/head=adaptive", f"model.head.cutoffs=[{cutoffs}]", f"model.head.factor={args.factor}"]
    corpus = Path(args.corpus)
    return [
        "dataset=text_files",
        *(f"dataset.{s}={corpus / f'{s}.txt'}" for s in ("train", "valid", "test")),
        f"cache_dir={args.cache_dir}",
        "model=lstm",
        "model.tie_embeddings=false",
        "model.dropout=0.0",
        *head,
        "optimizer=sgd",
        "trainer.batch_size=20",
        "trainer.bptt=35",
        "trainer.eval_batch_size=10",
        "trainer.progress=false",
        "tracking=none",
    ]


def worker(args) -> None:
    import numpy as np
    import tensorflow as tf
    from hydra import compose, initialize_config_dir

    from lmbench.cli.plugins import register_configs
    from lmbench.data import Split
    from lmbench.data.batching import as_streams
    from lmbench.paths import CONF_DIR
    from lmbench.scoring import evaluate
    from lmbench.training.run import build, prepare
    from lmbench.training.steps import bptt_windows, make_train_step

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides(args, args.worker))
    with tempfile.TemporaryDirectory() as out:
        plan = prepare(cfg, Path(out))
        built = build(plan, Path(out))
    model, optimizer, data = built.model, built.optimizer, built.data
    model.build_for_inference()
    optimizer.build(model.trainable_variables)
    step_fn = make_train_step(model, optimizer, jit_compile=False, clip_norm=cfg.trainer.clip_norm)
    states = model.initial_state(20)
    times, start = [], time.perf_counter()
    for x, y in bptt_windows(as_streams(data.train.ids, 20, 35), 35):
        t0 = time.perf_counter()
        loss, states = step_fn(x, y, states)
        loss = float(loss)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= args.budget:
            break
    trained = time.perf_counter() - start
    ids = data.valid.ids
    if args.valid_tokens < len(ids):  # the slice ends at a line end, like a split
        ids = ids[: int(np.flatnonzero(ids[: args.valid_tokens] == data.vocab.eos_id)[-1]) + 1]
    with model.computing_in_float32() as scorer:
        valid = evaluate(scorer, Split("valid", ids, data.valid.n_chars), batch_size=10, show_progress=False)
    steady = times[WARMUP_STEPS:]
    print(json.dumps({
        "variant": args.worker, "precision": plan.policy, "vocab": len(data.vocab), "params": model.num_params(),
        "steps": len(times), "train_seconds": trained, "last_loss": loss,
        "median_step_ms": 1000 * statistics.median(steady),
        "tokens_per_sec": 700 * len(steady) / sum(steady),
        "valid_ppl": valid.ppl, "valid_tokens": len(ids), "valid_seconds": valid.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tf": tf.__version__, "numpy": np.__version__,
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/work/runs/big", help="folder with train/valid/test.txt")
    parser.add_argument("--cache-dir", required=True, help="lmbench's cache (token ids are reused from it)")
    parser.add_argument("--budget", type=float, default=600.0, help="training wall seconds per variant")
    parser.add_argument("--valid-tokens", type=int, default=50_000,
                        help="score the first this many validation tokens (cut at a line end)")
    parser.add_argument("--cutoffs", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--variants", nargs="+", choices=("full", "adaptive"), default=["full", "adaptive"])
    parser.add_argument("--worker", choices=("full", "adaptive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    rows = {}
    for variant in args.variants:
        cmd = [sys.executable, __file__, "--worker", variant, *sys.argv[1:]]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        rows[variant] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(rows[variant]), flush=True)
    print(f"\n{'variant':<9} {'steps':>6} {'ms/step':>8} {'tok/s':>8} {'valid ppl':>10} {'peak RSS':>9}")
    for r in rows.values():
        print(f"{r['variant']:<9} {r['steps']:>6} {r['median_step_ms']:>8.0f} {r['tokens_per_sec']:>8.0f} "
              f"{r['valid_ppl']:>10.1f} {r['peak_rss_mb'] / 1024:>7.2f} GB")
    if {"full", "adaptive"} <= rows.keys():
        full, adaptive = rows["full"], rows["adaptive"]
        print(f"adaptive / full: {adaptive['tokens_per_sec'] / full['tokens_per_sec']:.1f}x tokens/s, "
              f"valid ppl {adaptive['valid_ppl']:.1f} vs {full['valid_ppl']:.1f} after {args.budget:.0f} s each")


if __name__ == "__main__":
    main()
