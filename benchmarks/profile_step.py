"""Where a training step's time goes: TensorFlow's profiler over a few steps, summed per op.

    python benchmarks/profile_step.py [--steps 10] [--warmup 5] [--timed 20] [--top 25] OVERRIDE...

OVERRIDEs are lmbench's Hydra overrides (`dataset=... model=lstm model/head=adaptive ...`); the
step is the trainer's own (`run.prepare`, `run.build`, `steps.make_train_step` on the train
split's bptt windows, state carried). After `--warmup` untimed steps, `--timed` steps are timed
(median, no profiler), then `--steps` run under `tf.profiler`; the host plane of the trace is
summed by TensorFlow op (the op events on the executor's threads) and by op type, each with its
share of the summed op time. The trace is read from its `.xplane.pb` with TensorFlow's own
protobuf module, so nothing else is needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def op_times(logdir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per op name and per op type, from the host plane's TensorFlow op events."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    by_name: dict[str, float] = defaultdict(float)
    by_type: dict[str, float] = defaultdict(float)
    for path in logdir.rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):  # the executor's threads run the ops
                    continue
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name  # "op name:OpType"
                    if ":" not in name or "::" in name:  # the executor's own regions, not ops
                        continue
                    seconds = event.duration_ps * 1e-12
                    by_name[name] += seconds
                    by_type[name.rsplit(":", 1)[-1]] += seconds
    return by_name, by_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--timed", type=int, default=20, help="steps timed without the profiler first")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    import tensorflow as tf
    from hydra import compose, initialize_config_dir

    from lmbench.cli.plugins import register_configs
    from lmbench.data.batching import as_streams
    from lmbench.paths import CONF_DIR
    from lmbench.training.run import build, prepare
    from lmbench.training.steps import bptt_windows, make_train_step

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["tracking=none", "trainer.progress=false", *args.overrides])
    with tempfile.TemporaryDirectory() as out:
        plan = prepare(cfg, Path(out))
        built = build(plan, Path(out))
    model, optimizer, data = built.model, built.optimizer, built.data
    batch, bptt = cfg.trainer.batch_size, cfg.trainer.bptt
    model.build_for_inference()
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, jit_compile=cfg.trainer.jit_compile, clip_norm=cfg.trainer.clip_norm)
    states = model.initial_state(batch)
    windows = iter(bptt_windows(as_streams(data.train.ids, batch, bptt), bptt))
    for _ in range(args.warmup):
        x, y = next(windows)
        loss, states = step(x, y, states)
        float(loss)
    untraced = []
    for _ in range(args.timed):
        x, y = next(windows)
        start = time.perf_counter()
        loss, states = step(x, y, states)
        float(loss)
        untraced.append(time.perf_counter() - start)
    if untraced:
        print(f"untraced: median {1000 * statistics.median(untraced):.1f} ms/step over {len(untraced)} steps")
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(args.steps):
            x, y = next(windows)
            loss, states = step(x, y, states)
            float(loss)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        by_name, by_type = op_times(Path(logdir))
    per_step = wall / args.steps
    print(f"{plan.policy}, |V| = {len(data.vocab):,}, {model.num_params():,} parameters: "
          f"{1000 * per_step:.1f} ms/step over {args.steps} traced steps (profiler on)")
    ops_total = sum(by_name.values())
    print(f"op time summed over the executor's threads: {1000 * ops_total / args.steps:.1f} ms/step")
    for title, table in (("by op type", by_type), ("by op", by_name)):
        print(f"\n{title} (ms per step, share of summed op time)")
        for name, seconds in sorted(table.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {1000 * seconds / args.steps:8.2f}  {100 * seconds / ops_total:5.1f}%  {name[:110]}")


if __name__ == "__main__":
    main()
