"""Compute accounting: every network's FLOPs per token against a count by hand and against
TensorFlow's profiler, and the peak-FLOP/s probe that MFU divides by.

The profiler (`tf.compat.v1.profiler.profile` with `float_operation()` options) counts the ops that
have a registered "flops" statistic and fully known shapes. It is asked for MatMul and BatchMatMul
only (`account_type_regexes`), 2 FLOPs per multiply-add, as lmbench counts: it also registers
elementwise ops (Add, Mul, Softmax...), which lmbench's count leaves out by convention. What it
cannot see: the body of a graph loop (a recurrent layer run as Keras' while loop, as on a GPU; on a
CPU lmbench unrolls windows of known length, so the profiler sees every step's GEMMs) and GEMMs of a
size known only when the step runs (the adaptive softmax's tail clusters, which get the positions
whose target falls in them): those are checked against the hand count only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from helpers import only_run, tiny_cfg

from lmbench.errors import ConfigError
from lmbench.models.interpolated import InterpolatedLM
from lmbench.models.ngram import NGramLM
from lmbench.models.recurrent import RecurrentLM
from lmbench.models.transformer import TransformerLM
from lmbench.training import peak
from lmbench.training.run import run

V, H, E, LAYERS, BATCH, STEPS = 50, 8, 6, 2, 3, 5
D, HEADS, D_FF, CONTEXT = 8, 2, 16, 5


def recurrent(cell: str, **kwargs) -> RecurrentLM:
    """Embedding 6 (layer 1 reads 6 wide, layer 2 8 wide), 2 layers of 8, |V| 50."""
    model = RecurrentLM(V, 0, cell=cell, embedding_dim=kwargs.pop("embedding_dim", E), hidden_size=H,
                        num_layers=LAYERS, **kwargs)
    model.build_for_inference()
    return model


def transformer(**kwargs) -> TransformerLM:
    model = TransformerLM(V, 0, n_layer=LAYERS, n_head=HEADS, d_model=D, d_ff=D_FF, context=CONTEXT, **kwargs)
    model.build_for_inference()
    return model


def profiled_gemm_flops(fn, *specs) -> float:
    """MatMul and BatchMatMul FLOPs of the graph of `fn` traced for `specs`, by TF's profiler."""
    graph = tf.function(fn).get_concrete_function(*specs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
    options = options.with_empty_output().build()
    options["account_type_regexes"] = ["MatMul", "BatchMatMul.*"]
    return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def ids_spec(steps: int = STEPS):
    return tf.TensorSpec([BATCH, steps], tf.int32)


def profiled_forward(model, steps: int = STEPS) -> float:
    """Profiled forward FLOPs per token: the network, then the head's `token_nll` (the loss)."""

    def forward(x, y):
        hidden, _ = model(x)
        return model.output_head.token_nll(hidden, y)

    return profiled_gemm_flops(forward, ids_spec(steps), ids_spec(steps)) / (BATCH * steps)


def profiled_training(model, steps: int = STEPS) -> float:
    """Profiled FLOPs per token of the loss and its gradient (the graph of a training step)."""

    def train(x, y):
        with tf.GradientTape() as tape:
            hidden, _ = model(x, training=True)
            loss = tf.reduce_mean(model.output_head.token_nll(hidden, y))
        return tape.gradient(loss, model.trainable_variables)

    return profiled_gemm_flops(train, ids_spec(steps), ids_spec(steps)) / (BATCH * steps)


needs_unrolled_cells = pytest.mark.skipif(
    bool(tf.config.list_logical_devices("GPU")),
    reason="with a GPU the recurrent layers run as graph loops (cuDNN), whose GEMMs the profiler does not see",
)

# -- recurrent families ------------------------------------------------------------------------------
# Per layer 2 x gates x (input width + 8) x 8; layer 1 reads the embedding (6), layer 2 the layer
# below (8); the head 2 x 8 x 50 = 800.
#   rnn  (1 gate block):  2*1*14*8 = 224  + 2*1*16*8 = 256  -> 480  + 800 = 1280 forward
#   gru  (3 gate blocks): 2*3*14*8 = 672  + 2*3*16*8 = 768  -> 1440 + 800 = 2240
#   lstm (4 gate blocks): 2*4*14*8 = 896  + 2*4*16*8 = 1024 -> 1920 + 800 = 2720
RECURRENT_FORWARD = {"rnn": 1280, "gru": 2240, "lstm": 2720}


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_recurrent_network_counts_its_gemms_by_hand(cell):
    model = recurrent(cell)
    assert model.flops_per_token(training=False) == pytest.approx(RECURRENT_FORWARD[cell], rel=0.05)
    assert model.flops_per_token() == pytest.approx(3 * RECURRENT_FORWARD[cell], rel=0.05)
    assert model.flops_per_token(context=99) == model.flops_per_token()  # no attention: no window


@needs_unrolled_cells
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_recurrent_network_counts_what_the_profiler_counts(cell):
    model = recurrent(cell)
    assert profiled_forward(model) == pytest.approx(model.flops_per_token(training=False), rel=0.05)
    # The gradient graph has 2 GEMMs per forward one, but for the state carried in: its gradient is
    # not asked for, so one recurrent GEMM per layer (of 5 steps) is missing (3,789 vs 3,840 for rnn).
    assert profiled_training(model) == pytest.approx(model.flops_per_token(), rel=0.05)


@needs_unrolled_cells
def test_tied_embeddings_cost_the_same_head():
    """The tied head multiplies by the embedding transposed: the same 2 x 8 x 50 per token."""
    model = recurrent("lstm", embedding_dim=H, tie_embeddings=True)
    forward = 2 * 4 * 16 * 8 * 2 + 800  # both layers read 8 wide
    assert model.flops_per_token(training=False) == pytest.approx(forward, rel=0.05)
    assert profiled_forward(model) == pytest.approx(forward, rel=0.05)


# -- the Transformer ---------------------------------------------------------------------------------
# Per layer, d 8, d_ff 16, window T: QKV 2*8*24 = 384, output projection 2*8*8 = 128, MLP 2*8*16*2 =
# 512, QKᵀ and AV over the whole T x T matrix (the code masks it, it does not skip it) 2*2*T*8 = 32 T.
#   T = 5: 1024 + 160 = 1184 per layer -> 2368, + head 800 = 3168 forward
#   T = 3: 1024 +  96 = 1120 per layer -> 2240, + head 800 = 3040 forward
TRANSFORMER_FORWARD = {5: 3168, 3: 3040}


@pytest.mark.parametrize("window", [5, 3])
def test_the_transformer_counts_by_hand_and_as_the_profiler(window):
    model = transformer()
    forward = TRANSFORMER_FORWARD[window]
    assert model.flops_per_token(context=window) == pytest.approx(3 * forward, rel=0.05)
    assert profiled_forward(model, window) == pytest.approx(forward, rel=0.05)
    assert profiled_training(model, window) == pytest.approx(3 * forward, rel=0.05)


def test_the_transformer_context_defaults_to_the_models_and_must_fit():
    model = transformer()
    assert model.flops_per_token() == model.flops_per_token(context=CONTEXT)
    with pytest.raises(ValueError, match="context"):
        model.flops_per_token(context=CONTEXT + 1)


def test_transformer_scoring_pays_the_network_context_over_stride_times_per_token():
    """`score` runs windows of 5 positions and scores their last 5 // 2 = 2: per scored token the
    network costs 2368 x 5 / 2 = 5920, the head (scored positions only) 800 -> 6720. The profiler
    sees the same in the scoring step's graph (windows [3, 5], scored tails [3, 2])."""
    model = transformer()
    assert model.flops_per_token(training=False) == pytest.approx(6720, rel=0.05)
    step = model._tail_scoring_step().python_function  # traced inline: the profiler skips function calls
    graph_flops = profiled_gemm_flops(step, ids_spec(CONTEXT), ids_spec(2)) / (BATCH * 2)
    assert graph_flops == pytest.approx(6720, rel=0.05)


# The modern options, d 8, 2 heads of 4, one key/value head, d_ff 16 -> SwiGLU hidden 8 (2/3 of 16
# rounded to a multiple of 8): QKV 2*8*(8 + 2*4) = 256, output 128, MLP three 8 x 8 matrices
# 2*3*8*8 = 384, attention 32 T as above (every query head reads all T keys).
#   T = 5: 768 + 160 = 928 per layer -> 1856, + head 800 = 2656 forward
#   T = 3: 768 +  96 = 864 per layer -> 1728, + head 800 = 2528 forward
MODERN = {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_kv_head": 1, "qk_norm": True}
MODERN_FORWARD = {5: 2656, 3: 2528}


@pytest.mark.parametrize("window", [5, 3])
def test_the_modern_transformer_counts_swiglu_and_grouped_heads_by_hand_and_as_the_profiler(window):
    model = transformer(**MODERN)
    forward = MODERN_FORWARD[window]
    assert model.flops_per_token(context=window) == pytest.approx(3 * forward, rel=1e-9)
    assert profiled_forward(model, window) == pytest.approx(forward, rel=0.05)
    assert profiled_training(model, window) == pytest.approx(3 * forward, rel=0.05)


# -- the heads ---------------------------------------------------------------------------------------


def test_the_full_softmax_head_is_2_d_v():
    assert recurrent("lstm").output_head.flops_per_token() == 2 * 8 * 50


# The adaptive head of |V| 50 over 8 wide states, cutoffs [10, 30], factor 2: the head layer scores 10
# tokens + 2 clusters (2*8*12 = 192, every position); tail 1 projects to 4 and scores 20 tokens
# (2*8*4 + 2*4*20 = 224), tail 2 to 2 and scores 20 (2*8*2 + 2*2*20 = 112), each for its share.
ADAPTIVE = {"kind": "adaptive", "cutoffs": [10, 30], "factor": 2.0}


def train_ids_with_shares() -> np.ndarray:
    """Ids 0-9 100 times each, 10-29 30 times, 30-49 20 times: shares 0.5, 0.3, 0.2 once ranked."""
    counts = np.repeat([100, 30, 20], [10, 20, 20])
    return np.random.default_rng(0).permutation(np.repeat(np.arange(V), counts))


def test_the_adaptive_head_weighs_each_cluster_by_its_share_of_the_training_tokens():
    """The tails' GEMMs take the positions whose target falls in them, a number known only when the
    step runs (`tf.where`): the profiler cannot size them, so this is the hand count only."""
    model = recurrent("lstm", head=ADAPTIVE)
    model.adapt(train_ids_with_shares())
    softmax = model.output_head.softmax
    assert softmax.cluster_shares() == pytest.approx([0.3, 0.2])
    assert softmax.shares_from == "training ids"
    head = 192 + 0.3 * 224 + 0.2 * 112  # = 281.6
    assert model.output_head.flops_per_token() == pytest.approx(head, rel=0.05)
    assert model.flops_per_token() == pytest.approx(3 * (1920 + head), rel=0.05)


def test_before_adapt_the_adaptive_head_assumes_zipfs_law_and_observe_changes_no_rank():
    model = recurrent("lstm", head=ADAPTIVE)
    softmax = model.output_head.softmax
    harmonic = [sum(1 / r for r in range(1, n + 1)) for n in (10, 30, 50)]  # p(rank r) ∝ 1/(r+1)
    zipf = [(harmonic[1] - harmonic[0]) / harmonic[2], (harmonic[2] - harmonic[1]) / harmonic[2]]
    assert softmax.shares_from.startswith("Zipf")
    assert softmax.cluster_shares() == pytest.approx(zipf)
    assert model.output_head.flops_per_token() == pytest.approx(192 + zipf[0] * 224 + zipf[1] * 112)
    # A fine-tune keeps its source's ranks and only observes its training ids (here: the identity
    # ranking, which the ids above follow).
    model.output_head.observe(train_ids_with_shares())
    assert softmax.cluster_shares() == pytest.approx([0.3, 0.2])
    assert softmax.rank.numpy().tolist() == list(range(V))


# -- models that count no FLOPs ----------------------------------------------------------------------


def test_the_ngram_counts_no_flops_and_a_mixture_scores_with_its_networks():
    ngram = NGramLM(V, 0, order=2)
    assert ngram.flops_per_token() is None and ngram.flops_per_token(training=False) is None
    lstm = recurrent("lstm")
    mixture = InterpolatedLM(V, 0, [ngram, lstm])
    assert mixture.flops_per_token() is None  # nothing trained by gradient
    assert mixture.flops_per_token(training=False) == lstm.flops_per_token(training=False)
    assert InterpolatedLM(V, 0, [ngram, lstm], weights=[1.0, 0.0]).flops_per_token(training=False) is None


# -- the peak FLOP/s probe ---------------------------------------------------------------------------


def test_the_peak_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(peak.ENV, raising=False)
    rate, how = peak.peak_flops("float32", tmp_path, sizes=(128, 256))
    assert rate > 0 and math.isfinite(rate)
    assert how.startswith("measured: ") and "GEMM fp32" in how and str(tmp_path) in how

    def no_measuring(*args):
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(peak, "measure", no_measuring)
    again, how_again = peak.peak_flops("float32", tmp_path)
    assert again == rate and "cached" in how_again


def test_each_precision_is_measured_apart_and_a_configured_peak_wins(tmp_path, monkeypatch):
    measured = []

    def fake_measure(policy, sizes):
        measured.append(policy)
        return {"float32": 1e11, "mixed_bfloat16": 2e11}[policy], f"fake {policy}"

    monkeypatch.setattr(peak, "measure", fake_measure)
    monkeypatch.delenv(peak.ENV, raising=False)
    assert peak.resolve_peak(None, "float32", tmp_path)[0] == 1e11
    assert peak.resolve_peak(None, "mixed_bfloat16", tmp_path)[0] == 2e11
    assert peak.resolve_peak(None, "float32", tmp_path)[0] == 1e11
    assert measured == ["float32", "mixed_bfloat16"]
    assert peak.resolve_peak(5e12, "float32", tmp_path) == (5e12, "configured: trainer.peak_flops")
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="trainer.peak_flops"):
            peak.resolve_peak(bad, "float32", tmp_path)
    # a cluster's environment may give every job its node type's figure; the config still wins
    monkeypatch.setenv(peak.ENV, "3.5e12")
    assert peak.resolve_peak(None, "float32", tmp_path) == (3.5e12, "configured: $LMBENCH_PEAK_FLOPS")
    assert peak.resolve_peak(5e12, "float32", tmp_path)[0] == 5e12
    for bad in ("fast", "-2", "nan"):
        monkeypatch.setenv(peak.ENV, bad)
        with pytest.raises(ConfigError, match=r"\$LMBENCH_PEAK_FLOPS must be a positive number"):
            peak.resolve_peak(None, "float32", tmp_path)
    assert measured == ["float32", "mixed_bfloat16"]


def test_a_network_run_logs_its_flops_and_mfu_against_the_measured_peak(tmp_path, monkeypatch):
    monkeypatch.delenv(peak.ENV, raising=False)
    cfg = tiny_cfg(tmp_path, "trainer.max_steps=20", "tracking.log_model=false")
    summary = run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    client, r = only_run(cfg.tracking.uri)
    m, tags = r.data.metrics, r.data.tags
    per_token = m["train/flops_per_token"]
    # 1 x 32 LSTM tied to |V| = 10: forward 2*4*(32+32)*32 + head 2*32*10, times 3 for training
    assert per_token == 3 * (2 * 4 * 64 * 32 + 2 * 32 * 10)
    assert m["eval/flops_per_token"] == per_token / 3
    assert m["train/flops"] == per_token * summary["train/tokens"] == per_token * 20 * 4 * 8
    assert tags["lmbench.peak_flops_method"].startswith("measured: ")
    peak_rate = float(tags["lmbench.peak_flops"])
    assert m["train/mfu"] == pytest.approx(m["train/flops"] / m["time/train_s"] / peak_rate, rel=1e-3)
    assert tags["lmbench.cpu"] == peak.cpu_model()
    # the probe's figure is cached in the run's cache dir: a second run reads it
    assert str(tmp_path / "cache") in tags["lmbench.peak_flops_method"]


def test_an_ngram_run_logs_no_flops(tmp_path):
    cfg = tiny_cfg(tmp_path, "tracking.log_model=false", model=("model=ngram",))
    run(cfg, output_dir=tmp_path / "out", launch_dir=tmp_path)
    m = only_run(cfg.tracking.uri)[1].data.metrics
    assert not {k for k in m if "flops" in k or "mfu" in k} and m["train/tokens_per_sec"] > 0


def test_mfu_is_achieved_flops_per_second_over_the_peak():
    assert peak.mfu(flops=6e11, seconds=2.0, peak=1e12) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        peak.mfu(1.0, 0.0, 1e12)
