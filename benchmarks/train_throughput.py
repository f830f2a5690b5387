"""Training speed of each neural family with lmbench's own train step, against PyTorch.

    python benchmarks/train_throughput.py [--families rnn gru lstm transformer transformer_modern] [--vocab 10000 33278]
        [--steps 20] [--warmup 3] [--repeats 3] [--jit] [--mixed-bf16] [--no-torch] [--omp-passive] [--d-ff 800]
        [--peak-flops FLOP/s]

Every model is 2 layers of width 200 (rnn: tanh units; the Transformer: 4 heads, d_ff 800, learned positions;
transformer_modern: the same with conf/model/transformer_modern.yaml's blocks -- rotary positions, RMSNorm,
SwiGLU of hidden swiglu_hidden(d_ff), no biases, 2 key/value heads -- on PyTorch's side written out
with `nn.RMSNorm` and `F.scaled_dot_product_attention(enable_gqa=True)`, PyTorch's fused attention),
dropout 0.2, trained on batches of 20 x 35 random ids by SGD (lr 20, global-norm clip 0.25): the
set-up of PyTorch's word_language_model example. The Keras rows use lmbench's `make_train_step` and
`build_optimizer`, state carried from step to step as the trainer does; the PyTorch rows run the
same architecture (pre-LN encoder layers with a causal mask for the Transformer) with
`torch.optim.SGD`. PyTorch is not an lmbench dependency: its rows are skipped when it is absent.

Each framework runs in a process of its own (this script re-launched with `--worker`): TensorFlow's
and PyTorch's thread pools in one process disturb each other (measured on an idle machine,
|V| = 33,278, LSTM, both in one process: with OMP_WAIT_POLICY=ACTIVE PyTorch took 356 ms but
Keras slowed from 262 to 409 ms).

Why PyTorch is slower here than the figures quoted for its word_language_model example (LSTM
241 ms/batch at |V| = 33,278): on this machine (AMD EPYC, Zen 4: AVX-512 with bf16 dot products,
no AMX) the example's own step -- sequence-first layout, log-softmax + NLL, hand-written SGD
update -- takes the same time as the model here (646 ms at one thread for both), and
`benchmarks/projection_kernels.py` shows where: MKL runs the projection's forward GEMM at 82
GFLOP/s on two threads against TensorFlow's 193 (MKL picks a slower code path on AMD CPUs; with
MKL's CPU check forced to "Intel", that GEMM took 131 instead of 212 ms at one thread), its
cross-entropy and gradient take 100 ms against lmbench's 32, and each fresh logits-sized buffer
costs 31 ms of page faults. The quoted figures, which speak of AMX units, were presumably taken on
an Intel CPU. The example's Transformer (246 ms quoted) is also smaller than the one here: 2 heads,
d_ff 200, post-LN with ReLU, against 4 heads, d_ff 800, pre-LN with GELU.

The MFU column: the model FLOPs a row's tokens/s implies, as a share of the machine's peak. Its
FLOPs per token are lmbench's count for the architecture (`flops_per_token(context=35)`, 3 x the
forward GEMMs), the same for the PyTorch row of the same family and |V| (the same architecture);
the peak is `lmbench.training.peak.resolve_peak`: `--peak-flops` if given, else TensorFlow's
measured GEMM rate in the run's precision, cached under lmbench's cache folder (measured in the
Keras worker, once per machine and precision). The PyTorch rows are divided by TensorFlow's GEMM
peak too: what the same machine can do, not what MKL's GEMM reaches.

Repetitions are interleaved over frameworks and models, so that load from other jobs on a shared
machine spreads over every row instead of one: each repetition starts one worker per framework in
turn, which builds every model, runs `--warmup` untimed steps of each, then times `--steps` single
steps of each and reports their median; the table gives the median over repetitions and the spread
(min-max) of the repetition medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# PyTorch's OpenMP threads spin while they wait for each other. On a 2-core machine shared with
# other jobs a spinning thread holds a core its partner needs: measured here, a 2-thread LSTM step
# took 860 ms instead of 50 (1 thread: 47). --omp-passive makes them sleep (OMP_WAIT_POLICY=PASSIVE)
# for measuring on a busy machine; on an idle one PyTorch's default is the fair comparison (idle,
# |V| = 33,278, LSTM: 376 ms/batch with PASSIVE, 365 with the default).

import numpy as np  # noqa: E402

BATCH, BPTT, WIDTH, LAYERS, DROPOUT, LR, CLIP = 20, 35, 200, 2, 0.2, 20.0, 0.25
HEADS, D_FF = 4, 800
FAMILIES = ("rnn", "gru", "lstm", "transformer", "transformer_modern")
KV_HEADS = 2  # transformer_modern's key/value heads
MODERN = {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_kv_head": KV_HEADS}


def random_batch(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(seed).integers(0, vocab, (BATCH, BPTT + 1), dtype=np.int64)
    return ids[:, :-1], ids[:, 1:]


def keras_runner(family: str, vocab: int, jit: bool):
    """A no-argument function doing one lmbench train step; returns the model's parameter count."""
    import tensorflow as tf
    from omegaconf import OmegaConf

    from lmbench.models.recurrent import RecurrentLM
    from lmbench.models.transformer import TransformerLM
    from lmbench.training.steps import build_optimizer, make_train_step

    if family.startswith("transformer"):
        model = TransformerLM(
            vocab, 0, n_layer=LAYERS, n_head=HEADS, d_model=WIDTH, d_ff=D_FF, dropout=DROPOUT, context=BPTT,
            **(MODERN if family == "transformer_modern" else {}),
        )
    else:
        model = RecurrentLM(
            vocab, 0, cell=family, embedding_dim=WIDTH, hidden_size=WIDTH, num_layers=LAYERS, dropout=DROPOUT
        )
    optimizer = build_optimizer(OmegaConf.create({"_target_": "keras.optimizers.SGD", "learning_rate": LR}))
    model.build_for_inference()
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, jit, clip_norm=CLIP)
    x, y = (tf.constant(a, dtype=tf.int32) for a in random_batch(vocab, 0))
    states = model.initial_state(BATCH)

    def run_step():
        nonlocal states
        loss, states = step(x, y, states)
        float(loss)  # wait for the step to finish, as the trainer does

    return run_step, model.num_params(), model.flops_per_token(context=BPTT)


def torch_modern_block():
    """transformer_modern's block in PyTorch: pre-RMSNorm, rotary positions (the "rotate half" pairs,
    as lmbench's), grouped-query SDPA, SwiGLU, no biases."""
    import torch
    from torch import nn
    from torch.nn import functional

    from lmbench.models.transformer_blocks import rope_tables, swiglu_hidden

    head_dim, hidden = WIDTH // HEADS, swiglu_hidden(D_FF)
    cos, sin = (torch.from_numpy(t) for t in rope_tables(BPTT, head_dim))

    def rope(x):
        half = head_dim // 2
        x1, x2 = x[..., :half], x[..., half:]
        c, s = cos[: x.shape[-2]].to(x.dtype), sin[: x.shape[-2]].to(x.dtype)
        return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.RMSNorm(WIDTH, eps=1e-6), nn.RMSNorm(WIDTH, eps=1e-6)
            self.qkv = nn.Linear(WIDTH, (HEADS + 2 * KV_HEADS) * head_dim, bias=False)
            self.out = nn.Linear(WIDTH, WIDTH, bias=False)
            self.fc = nn.Linear(WIDTH, 2 * hidden, bias=False)
            self.proj = nn.Linear(hidden, WIDTH, bias=False)
            self.drop = nn.Dropout(DROPOUT)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split([HEADS * head_dim, KV_HEADS * head_dim, KV_HEADS * head_dim], -1)
            q = rope(q.view(b, t, HEADS, head_dim).transpose(1, 2))
            k = rope(k.view(b, t, KV_HEADS, head_dim).transpose(1, 2))
            v = v.view(b, t, KV_HEADS, head_dim).transpose(1, 2)
            y = functional.scaled_dot_product_attention(
                q, k, v, dropout_p=DROPOUT if self.training else 0.0, is_causal=True, enable_gqa=True
            )
            x = x + self.drop(self.out(y.transpose(1, 2).reshape(b, t, WIDTH)))
            gate, up = self.fc(self.ln2(x)).chunk(2, dim=-1)
            return x + self.drop(self.proj(functional.silu(gate) * up))

    return Block


def torch_runner(family: str, vocab: int, bf16: bool):
    import torch
    from torch import nn

    class TorchLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, WIDTH)
            self.drop = nn.Dropout(DROPOUT)
            if family == "transformer_modern":
                block = torch_modern_block()
                self.body = nn.Sequential(*[block() for _ in range(LAYERS)], nn.RMSNorm(WIDTH, eps=1e-6))
            elif family == "transformer":
                self.pos = nn.Embedding(BPTT, WIDTH)
                layer = nn.TransformerEncoderLayer(
                    WIDTH, HEADS, D_FF, DROPOUT, activation="gelu", batch_first=True, norm_first=True
                )
                self.body = nn.TransformerEncoder(layer, LAYERS, norm=nn.LayerNorm(WIDTH), enable_nested_tensor=False)
                self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(BPTT))
            else:
                cell = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[family]
                self.body = cell(WIDTH, WIDTH, LAYERS, dropout=DROPOUT, batch_first=True)
            self.decoder = nn.Linear(WIDTH, vocab)

        def forward(self, x, hidden):
            if family == "transformer_modern":
                return self.decoder(self.body(self.drop(self.embed(x)))), None
            if family == "transformer":
                h = self.drop(self.embed(x) + self.pos(torch.arange(x.shape[1])))
                return self.decoder(self.body(h, mask=self.mask, is_causal=True)), None
            out, hidden = self.body(self.drop(self.embed(x)), hidden)
            return self.decoder(self.drop(out)), hidden

    model = TorchLM()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = (torch.from_numpy(a) for a in random_batch(vocab, 0))
    hidden = None

    def run_step():
        nonlocal hidden
        if hidden is not None:  # truncated BPTT: keep the state, cut its history
            hidden = tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, hidden = model(x, hidden)
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        loss.item()

    return run_step, sum(p.numel() for p in model.parameters()), None  # FLOPs: the Keras row's count


def median_step_ms(run_step, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run_step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def worker(framework: str, args) -> None:
    """One repetition for one framework: a JSON line per model on stdout."""
    if framework == "keras":
        import keras
        import tensorflow as tf

        if args.mixed_bf16:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.utils.set_random_seed(0)
        from lmbench.paths import default_cache_dir
        from lmbench.training.peak import resolve_peak

        version = f"TF {tf.__version__}, Keras {keras.__version__}"
        policy = "mixed_bfloat16" if args.mixed_bf16 else "float32"
        peak, how = resolve_peak(args.peak_flops, policy, default_cache_dir(None))
        print(json.dumps({"peak": peak, "peak_method": how}), flush=True)
        make = lambda family, vocab: keras_runner(family, vocab, args.jit)  # noqa: E731
    else:
        import torch

        torch.manual_seed(0)
        wait = os.environ.get("OMP_WAIT_POLICY", "default")
        version = f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY={wait})"
        make = lambda family, vocab: torch_runner(family, vocab, args.mixed_bf16)  # noqa: E731
    runners = [(family, vocab, *make(family, vocab)) for vocab in args.vocab for family in args.families]
    for _, _, run_step, *_ in runners:
        for _ in range(args.warmup):
            run_step()
    for family, vocab, run_step, params, flops in runners:
        ms = median_step_ms(run_step, args.steps)
        print(json.dumps({"family": family, "vocab": vocab, "framework": framework, "ms": ms,
                          "params": params, "flops_per_token": flops, "version": version}), flush=True)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False  # PyTorch is not an lmbench dependency: its rows are skipped
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES[:4]))
    parser.add_argument("--vocab", nargs="+", type=int, default=[10_000, 33_278])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each model in each worker")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the Keras train step")
    parser.add_argument("--mixed-bf16", action="store_true", help="mixed_bfloat16 (Keras) / bf16 autocast (PyTorch)")
    parser.add_argument("--no-torch", action="store_true", help="Keras rows only")
    parser.add_argument("--d-ff", type=int, default=D_FF,
                        help=f"the Transformer's MLP width (default {D_FF}; conf/model/transformer_small.yaml: 400)")
    parser.add_argument(
        "--omp-passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE for PyTorch (busy machines)"
    )
    parser.add_argument(
        "--peak-flops", type=float, help="the peak FLOP/s for the MFU column (default: measured, cached)"
    )
    parser.add_argument("--worker", choices=("keras", "pytorch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    globals()["D_FF"] = args.d_ff  # the workers get the same flag
    if args.omp_passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # inherited by the worker processes
    if args.worker:
        worker(args.worker, args)
        return

    frameworks = ["keras"] + ([] if args.no_torch or not torch_available() else ["pytorch"])
    passed = [a for a in sys.argv[1:] if a != "--no-torch"]
    results: dict[tuple[str, int, str], list[float]] = {}
    params, versions, flops, peak = {}, {}, {}, None
    for rep in range(args.repeats):
        for framework in frameworks:
            out = subprocess.run(
                [sys.executable, __file__, *passed, "--worker", framework],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for line in out.splitlines():
                if line.startswith("{"):
                    r = json.loads(line)
                    if "peak" in r:
                        peak = (r["peak"], r["peak_method"])
                        continue
                    key = (r["family"], r["vocab"], framework)
                    results.setdefault(key, []).append(r["ms"])
                    params[key], versions[framework] = r["params"], r["version"]
                    if r["flops_per_token"] is not None:  # same architecture, same count for PyTorch
                        flops[(r["family"], r["vocab"])] = r["flops_per_token"]
            print(f"repetition {rep + 1}/{args.repeats}: {framework} done", file=sys.stderr, flush=True)

    print(
        f"\n{'; '.join(versions.values())}{'' if 'pytorch' in versions else '; PyTorch rows skipped'}; "
        f"batch {BATCH} x {BPTT}; jit={args.jit}; mixed_bf16={args.mixed_bf16}; {os.cpu_count()} CPUs; "
        f"one process per framework; median of {args.repeats} repetitions x {args.steps} steps\n"
        f"MFU: lmbench's model FLOPs per token x tokens/s / peak {peak[0] / 1e9:,.1f} GFLOP/s ({peak[1]})"
    )
    header = ("family", "|V|", "framework", "params", "ms/batch", "(min-max)", "tokens/s", "MFLOP/tok", "MFU",
              "vs pytorch")
    print("{:12s} {:>7s} {:9s} {:>11s} {:>9s} {:>13s} {:>9s} {:>9s} {:>6s} {:>10s}".format(*header))
    for vocab in args.vocab:
        for family in args.families:
            for framework in frameworks:
                ms = results[(family, vocab, framework)]
                mid = statistics.median(ms)
                ref = results.get((family, vocab, "pytorch"))
                ratio = f"{mid / statistics.median(ref):.2f}x" if ref and framework != "pytorch" else ""
                tokens_per_s = BATCH * BPTT / mid * 1000
                per_token = flops[(family, vocab)]
                print(
                    f"{family:12s} {vocab:7d} {framework:9s} {params[(family, vocab, framework)]:11,d} {mid:9.1f} "
                    f"{f'({min(ms):.0f}-{max(ms):.0f})':>13s} {tokens_per_s:9,.0f} {per_token / 1e6:9.2f} "
                    f"{per_token * tokens_per_s / peak[0]:6.1%} {ratio:>10s}"
                )


if __name__ == "__main__":
    main()
