"""One network data-parallel over several devices (training/distributed.py): 2 logical CPU devices
train what one device trains, number for number; what cannot be split is refused in one paragraph.

The logical devices must exist before TensorFlow's first op, so the runs are lmbench commands in
processes of their own (two at a time: one per core)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, lmbench, sweep_runs, tiny_cfg, write_corpus
from mlflow import MlflowClient

from lmbench.errors import ConfigError

STEPS = 20
TINY_TRANSFORMER = ("model=transformer_small", "model.n_layer=1", "model.d_model=32", "model.d_ff=64", "model.n_head=2")
TINY_LSTM = ("model=lstm_small", "model.hidden_size=32", "model.embedding_dim=32", "model.num_layers=1")


def start(tmp_path: Path, name: str, *overrides: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m lmbench` on the tiny corpus, float32, every step's loss logged, as experiment `name`."""
    paths = write_corpus(tmp_path)
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable, "-m", "lmbench", "dataset=text_files", *(f"dataset.{s}={p}" for s, p in paths.items()),
        "trainer.batch_size=4", "trainer.bptt=8", "trainer.eval_batch_size=2", "trainer.progress=false",
        f"trainer.max_steps={STEPS}", "trainer.precision=float32", "seed=3", "tracking.log_every_n_steps=1",
        f"tracking.experiment={name}", f"hydra.run.dir={tmp_path / name}", *overrides,
    ]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def workers(tmp_path: Path, name: str, *overrides: str) -> list[subprocess.Popen]:
    """Two lmbench processes, one worker each of a `multi_worker` run on 127.0.0.1, in one run folder."""
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [
        start(tmp_path, name, *TINY_LSTM, "trainer.strategy=multi_worker", *overrides,
              env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)
    ]


def finished(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def run_figures(tmp_path: Path, name: str) -> tuple[list[float], float, dict]:
    """(every logged train/loss in step order, test/ppl, params) of experiment `name`'s only run."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.info.status == "FINISHED"
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    return [m.value for m in history], run.data.metrics["test/ppl"], run.data.params


@pytest.mark.parametrize(
    ("model", "precision", "rel_loss", "rel_ppl"),
    [
        (TINY_LSTM, "float32", 1e-5, 1e-4),
        ((*TINY_TRANSFORMER, "model.dropout=0"), "float32", 1e-5, 1e-4),
        # bfloat16 runs (states gathered as float32); bf16 GEMMs of another batch shape round
        # differently, so close (2e-4 measured), not equal
        (TINY_LSTM, "mixed_bfloat16", 2e-3, 2e-3),
    ],
    ids=["lstm", "transformer", "lstm-bf16"],
)
def test_two_devices_train_what_one_device_trains(tmp_path, model, precision, rel_loss, rel_ppl):
    # dropout 0: with dropout the replicas draw their own masks, not one device's (distributed.py)
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # the schema, before two runs meet it
    common = (*model, "optimizer=adam", "optimizer.learning_rate=0.01", f"trainer.precision={precision}")
    one = start(tmp_path, "one", *common)
    two = start(tmp_path, "two", *common, "trainer.devices=2")
    finished(one)
    assert "training on 2 replicas (MirroredStrategy)" in finished(two)
    losses_1, ppl_1, params = run_figures(tmp_path, "one")
    losses_2, ppl_2, params_2 = run_figures(tmp_path, "two")
    assert len(losses_1) == len(losses_2) == STEPS
    assert params["trainer.devices"] == "1" and params_2["trainer.devices"] == "2"
    for step, (a, b) in enumerate(zip(losses_1, losses_2), 1):
        assert b == pytest.approx(a, rel=rel_loss), f"step {step}"
    assert losses_1[-1] < losses_1[0] - 0.3  # it learned: the equality is not that of two idle runs
    assert ppl_2 == pytest.approx(ppl_1, rel=rel_ppl)
    # the recipe clips (LSTM 0.25, Transformer 1.0): the global norm of the reduced gradients
    assert float(params["trainer.clip_norm"]) > 0


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (("trainer.devices=3",), "cannot be split evenly over 3 replicas"),
        (("trainer.devices=2", "trainer.jit_compile=true"), "trainer.jit_compile=true is for one device"),
        (("trainer.devices=0",), "trainer.devices must be a number of devices >= 1 or `all`"),
        (("trainer.devices=two",), "trainer.devices must be a number of devices >= 1 or `all`"),
        (("trainer.devices=2", "trainer.accumulate_steps=2"), "trainer.accumulate_steps and several devices are not"),
        (("trainer.devices=2", "trainer.nt_asgd=true", "trainer.variable_bptt=true"),
         "trainer.nt_asgd, trainer.variable_bptt and several devices"),
        (("trainer.strategy=ring",), "trainer.strategy='ring'; valid: auto, mirrored, multi_worker"),
        (("trainer.strategy=multi_worker",), "needs to know its workers: set TF_CONFIG"),
    ],
)
def test_what_cannot_be_split_is_refused_before_anything_runs(tmp_path, monkeypatch, overrides, says):
    from lmbench.training import distributed

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    cfg = tiny_cfg(tmp_path, *overrides)
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        distributed.configure(cfg.trainer)
    assert distributed.active() is None


def test_one_device_has_no_strategy(tmp_path):
    from lmbench.training import distributed

    cfg = tiny_cfg(tmp_path)
    assert cfg.trainer.devices == 1 and cfg.trainer.strategy == "auto"
    assert distributed.configure(cfg.trainer) is None
    assert distributed.active() is None and distributed.is_chief()
    assert distributed.own_folder(tmp_path) == tmp_path


def test_two_workers_on_localhost_are_one_run_and_resume_after_one_is_killed(tmp_path):
    """multi_worker over 2 processes on 127.0.0.1: one MLflow run (the chief's), which worker 1 names
    in its log and its folder; SIGKILL to worker 1
    ends the chief with one paragraph within 60 s (the run FAILED); the same command again resumes
    both from their checkpoints and finishes the same run, with one device's figures."""
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
    common = (
        "optimizer=adam", "optimizer.learning_rate=0.01", "trainer.checkpoint_every_n_steps=10",
        "trainer.validate_every_n_steps=10", "trainer.max_steps=60",
    )
    one = start(tmp_path, "one", *TINY_LSTM, *common)
    chief, worker = workers(tmp_path, "two", *common)
    finished(one)
    last = tmp_path / "two" / "checkpoints" / "last" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (last.is_file() and json.loads(last.read_text())["global_step"] >= 20):
        time.sleep(0.2)
    assert chief.poll() is None, chief.communicate()[0][-3000:]
    worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    out, _ = chief.communicate(timeout=120)
    assert time.monotonic() - killed < 60
    assert chief.returncode == 2, out[-3000:]
    assert "another worker stopped answering or is gone" in out and "Traceback" not in out
    worker.wait()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("two").experiment_id])
    assert run.info.status == "FAILED" and "another worker" in run.data.tags["lmbench.error"]

    outs = [finished(p) for p in workers(tmp_path, "two", *common)]  # the same command again
    assert all("Resuming from" in out for out in outs)
    assert (tmp_path / "two" / "workers" / "1" / "checkpoints" / "last").is_dir()  # worker 1's own
    assert not (tmp_path / "two" / "workers" / "1" / "model").exists()  # the bundle is the chief's
    losses, test_ppl = {}, {}
    for name in ("one", "two"):
        (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])  # one run each
        assert run.info.status == "FINISHED"
        # steps between the last checkpoint and the kill were logged twice: the same values
        losses[name] = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
        test_ppl[name] = run.data.metrics["test/ppl"]
    assert sorted(losses["two"]) == list(range(1, 61))
    # worker 1 knows the chief's run: in its log line and in its own folder
    (two,) = client.search_runs([client.get_experiment_by_name("two").experiment_id])
    assert f"MLflow run {two.info.run_id} in " in outs[1] and "logged by the chief (worker 0)" in outs[1]
    recorded = json.loads((tmp_path / "two" / "workers" / "1" / "mlflow_run.json").read_text())
    assert recorded["run_id"] == two.info.run_id and recorded["worker"] == 1
    for step, loss in losses["one"].items():
        assert losses["two"][step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    assert test_ppl["two"] == pytest.approx(test_ppl["one"], rel=1e-4)


# Run in a process of its own (the logical devices come before TensorFlow's first op): what every
# replica of a step draws on the same inputs, twice, and the noise generator's state afterwards.
MASKS_PER_REPLICA = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from lmbench.models import regularization as reg
from lmbench.models.transformer import TransformerLM
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
ids = tf.constant([[1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]])
with strategy.scope():
    keras.utils.set_random_seed(3)
    noise = keras.random.SeedGenerator(5)
    dropped = TransformerLM(vocab_size=9, eos_id=0, n_layer=1, n_head=2, d_model=16, d_ff=32, dropout=0.3, context=8)
    plain = TransformerLM(vocab_size=9, eos_id=0, n_layer=1, n_head=2, d_model=16, d_ff=32, dropout=0.0, context=8)
    dropped(ids), plain(ids)
def replica():
    ones = tf.ones([2, 8, 64])
    return {
        "locked": reg.locked_dropout(ones, 0.5, noise), "plain": reg.locked_dropout(ones, 0.5, noise, locked=False),
        "weight": reg.weight_drop(tf.ones([64, 64]), 0.5, noise),
        "words": reg.embedding_dropout(ones, ids, 9, 0.5, noise),
        "transformer": dropped.features(ids, training=True), "transformer_0": plain.features(ids, training=True),
    }
step = tf.function(lambda: strategy.run(replica))
draws = [step(), step()]
print(json.dumps({
    "draws": [{k: [r.numpy().tolist() for r in strategy.experimental_local_results(v)] for k, v in d.items()}
              for d in draws],
    "state": [s.numpy().tolist() for s in strategy.experimental_local_results(noise.state.value)],
}))
"""


def test_replicas_draw_their_own_dropout_masks_and_share_the_per_window_ones(tmp_path):
    """2 replicas on identical inputs: a mask over streams (dropout, locked dropout, the
    Transformer's Dropout layers) differs between them, as one device's streams' masks do; a mask
    one device shares over the whole batch (weight drop, embedding dropout) is the same on both; the
    generator's state stays mirrored; without dropout the replicas compute the same."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", MASKS_PER_REPLICA], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = ({k: [np.array(r) for r in v] for k, v in d.items()} for d in out["draws"])
    for key in ("locked", "plain", "transformer"):
        assert not np.array_equal(first[key][0], first[key][1]), key
    for key in ("locked", "plain", "weight", "words"):
        for mask in first[key]:  # each replica's mask: keep with probability 1/2, kept values scaled by 2
            assert set(np.unique(mask)) == {0.0, 2.0} and 0.4 < (mask > 0).mean() < 0.6, key
    locked = first["locked"][0]
    assert (locked == locked[:, :1]).all() and not (first["plain"][0] == first["plain"][0][:, :1]).all()
    for key in ("weight", "words"):
        np.testing.assert_array_equal(first[key][0], first[key][1], err_msg=key)
        assert not np.array_equal(first[key][0], second[key][0]), key  # a new mask every window
    np.testing.assert_array_equal(first["transformer_0"][0], first["transformer_0"][1])
    assert out["state"][0] == out["state"][1] == [5, 8]  # 4 draws a step, the same on both replicas


def test_one_device_draws_are_keras_own():
    """Outside a data-parallel step, `regularization.dropout` and its `Dropout` layer draw what Keras
    draws from the same generator state, so one-device runs keep their numbers."""
    import keras
    import tensorflow as tf

    from lmbench.models import regularization

    x = tf.ones([3, 5, 7])
    ours, keras_own = keras.random.SeedGenerator(11), keras.random.SeedGenerator(11)
    for _ in range(2):
        drawn = regularization.dropout(x, 0.3, ours)
        np.testing.assert_array_equal(drawn, keras.random.dropout(x, 0.3, seed=keras_own))
    layer, reference = regularization.Dropout(0.3, seed=4), keras.layers.Dropout(0.3, seed=4)
    np.testing.assert_array_equal(layer(x, training=True), reference(x, training=True))
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_a_counting_model_in_a_sweep_on_two_devices_counts_as_on_one(tmp_path):
    """`-m model=ngram,lstm_small trainer.devices=2`: the n-gram counts as on one device, saying once
    that the devices do not apply to it; the network after it, in the same process, still trains on
    2 replicas (the CPU was split before TensorFlow's first op all the same)."""
    out = lmbench(tmp_path, "-m", "model=ngram,lstm_small", "trainer.devices=2", "trainer.max_steps=2",
                  "tracking.experiment=mixed").stdout
    assert out.count("trainer.devices=2 does not apply to counting") == 1
    assert out.count("training on 2 replicas (MirroredStrategy)") == 1
    _, _, runs = sweep_runs(tmp_path, "mixed")
    assert sorted(r.data.tags["lmbench.family"] for r in runs) == ["lstm", "ngram"]
    assert all(r.info.status == "FINISHED" and r.data.metrics["test/ppl"] > 1 for r in runs)


def test_a_counting_model_under_multi_worker_is_counted_by_the_chief_alone(tmp_path):
    """The same n-gram command on 2 workers: worker 1 stops at once with status 0, saying why,
    without waiting for the chief or touching the store; the chief counts and records the run
    alone, without waiting for worker 1."""
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}

    def alone(index: int) -> str:
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        proc = start(tmp_path, "ngram", "model=ngram", "trainer.strategy=multi_worker", env={"TF_CONFIG": config})
        try:
            return finished(proc, timeout=300)
        finally:
            proc.kill()  # still waiting for the other worker (before): not left behind

    said = alone(1)
    assert "worker 1 of 2: trainer.strategy=multi_worker does not apply to a counting model" in said
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("ngram") is None
    assert not (tmp_path / "ngram" / "workers").exists()
    assert "this chief counts and records alone" in alone(0)
    _, test_ppl, params = run_figures(tmp_path, "ngram")
    assert test_ppl > 1 and params["trainer.strategy"] == "multi_worker"
