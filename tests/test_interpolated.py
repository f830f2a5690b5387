"""model=interpolated: an n-gram and an LSTM trained by real runs into one MLflow store, mixed by a
third run whose weights are fitted by EM on valid, and scored by the common trainer.

The corpus is a sparse random Markov chain over 12 words: on it a 3-gram (sharp, sometimes
overconfident on 300 sentences) and a small LSTM (smooth) each win on some tokens, so the best
mixture is strictly inside the simplex. (On test_training's 4-sentence grammar the better model wins
on every token and EM rightly goes to its corner.)"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers import TINY_LSTM, tiny_cfg
from mlflow import MlflowClient

from lmbench.artifacts.bundle import load_bundle
from lmbench.data.pipeline import load_corpus
from lmbench.data.tokenizers import WordTokenizer
from lmbench.errors import ConfigError
from lmbench.models.mixture import em_weights, mixture_log_probs
from lmbench.training.run import run

NGRAM = ("model=ngram", "model.order=3")


def write_markov_corpus(
    folder: Path, n_train: int = 300, n_eval: int = 40, n_words: int = 12, seed: int = 0
) -> dict[str, Path]:
    """Sentences of a first-order Markov chain whose transition rows are sparse (Dirichlet 0.3)."""
    rng = np.random.default_rng(seed)
    start = n_words  # row of the sentence start; column n_words ends the sentence
    trans = rng.dirichlet(np.full(n_words + 1, 0.3), size=n_words + 1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        lines = []
        for _ in range(n):
            state, words = start, []
            while len(words) < 12:
                state = int(rng.choice(n_words + 1, p=trans[state]))
                if state == n_words:
                    if words:
                        break
                    state = start
                    continue
                words.append(f"w{state}")
            lines.append(" ".join(words))
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def corpus_overrides(folder: Path) -> list[str]:
    return [f"dataset.{split}={path}" for split, path in write_markov_corpus(folder / "markov").items()]


def run_in(folder: Path, experiment: str, *overrides: str, model: tuple[str, ...] = TINY_LSTM):
    """One real run on the Markov corpus into `folder`'s store; returns (summary, the MLflow run)."""
    cfg = tiny_cfg(folder, f"tracking.experiment={experiment}", *corpus_overrides(folder), *overrides, model=model)
    summary = run(cfg, output_dir=folder / "out" / experiment, launch_dir=folder)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    [r] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return summary, r


def interpolate(parts, experiment: str, *overrides: str, components: list[str] | None = None):
    ids = components if components is not None else [parts["ngram"].info.run_id, parts["lstm"].info.run_id]
    return run_in(
        parts["folder"], experiment, f"model.components=[{','.join(ids)}]", *overrides, model=("model=interpolated",),
    )


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A 3-gram and a 1x32 LSTM trained on the same tiny corpus, both in one sqlite store."""
    folder = tmp_path_factory.mktemp("parts")
    _, ngram = run_in(folder, "ngram", model=NGRAM)
    _, lstm = run_in(folder, "lstm", "trainer.max_epochs=6")
    return {"folder": folder, "uri": f"sqlite:///{folder / 'mlflow.db'}", "ngram": ngram, "lstm": lstm}


@pytest.fixture(scope="module")
def tuned(parts):
    return interpolate(parts, "tuned")


def test_em_finds_the_best_weights_and_never_loses_to_a_single_component():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(3, 400))[:, :, 0]  # 3 components, 400 tokens
    log_probs = np.log(probs)
    weights, steps = em_weights(log_probs, tolerance=1e-12)
    assert 0 < steps < 1000 and weights.sum() == pytest.approx(1.0, abs=1e-12)
    best = mixture_log_probs(weights, log_probs).mean()
    for trial in rng.dirichlet(np.ones(3), size=500):  # no other weights do better
        assert mixture_log_probs(trial, log_probs).mean() <= best + 1e-9
    # One component better on every token: the optimum is its corner, which EM only approaches.
    dominated = np.stack([log_probs[0], log_probs[0] - 1.0])
    weights, _ = em_weights(dominated, tolerance=1e-3)
    assert mixture_log_probs(weights, dominated).mean() >= dominated[0].mean()


def test_tuned_mixture_beats_both_components_and_is_tracked_like_any_run(parts, tuned):
    summary, r = tuned
    ngram, lstm = parts["ngram"], parts["lstm"]
    m = r.data.metrics
    assert r.info.status == "FINISHED"
    weights = [m["interp/weight_0"], m["interp/weight_1"]]
    assert all(0 < w < 1 for w in weights) and sum(weights) == pytest.approx(1.0, abs=1e-12)
    assert m["interp/em_steps"] >= 1
    # EM on valid: never worse there than the better component (tolerance: EM's stopping rule).
    # best_valid: a neural run's last-epoch valid/ppl may be worse than the checkpoint it keeps.
    parts_valid = [ngram.data.metrics["best_valid/ppl"], lstm.data.metrics["best_valid/ppl"]]
    assert m["valid/ppl"] <= min(parts_valid) * (1 + 1e-6)
    assert m["valid/ppl"] < min(parts_valid) * 0.999  # and, on this corpus, clearly better
    # The run scored each component on valid exactly as the component's own run did.
    assert m["interp/valid_ppl_0"] == pytest.approx(parts_valid[0], rel=1e-9)
    assert m["interp/valid_ppl_1"] == pytest.approx(parts_valid[1], rel=1e-6)
    # Same figures as every other family, plus the weights.
    for key in ("test/loss", "test/ppl", "test/bpc", "test/tokens", "valid/loss", "valid/ppl", "valid/bpc",
                "best_valid/ppl", "train/tokens_per_sec", "time/train_s", "model/params"):
        assert key in m, key
    assert m["model/params"] == ngram.data.metrics["model/params"] + lstm.data.metrics["model/params"]
    tags = r.data.tags
    assert tags["lmbench.family"] == "interpolated"
    assert tags["lmbench.components"] == f"{ngram.info.run_id},{lstm.info.run_id}"
    assert tags["lmbench.component_families"] == "ngram,lstm"
    assert summary["test/ppl"] == pytest.approx(m["test/ppl"])


def test_test_perplexity_is_the_logsumexp_of_the_components_scores(parts, tuned):
    _, r = tuned
    uri, cache = parts["uri"], parts["folder"] / "cache"
    ngram = load_bundle(parts["ngram"].info.run_id, tracking_uri=uri, cache_dir=cache).model
    lstm = load_bundle(parts["lstm"].info.run_id, tracking_uri=uri, cache_dir=cache).model
    cfg = tiny_cfg(parts["folder"], *corpus_overrides(parts["folder"]), model=NGRAM)
    test_ids = load_corpus(cfg.dataset, WordTokenizer(), cache_dir=cache).test.ids
    w = [r.data.metrics["interp/weight_0"], r.data.metrics["interp/weight_1"]]
    by_hand = np.logaddexp(
        math.log(w[0]) + ngram.score(test_ids, batch_size=2), math.log(w[1]) + lstm.score(test_ids, batch_size=2)
    )
    assert r.data.metrics["test/ppl"] == pytest.approx(math.exp(-by_hand.mean()), rel=1e-9)


def test_fixed_weights_one_and_zero_reproduce_the_ngram_exactly(parts):
    _, r = interpolate(parts, "fixed", "model.weights=[1,0]")
    ngram = parts["ngram"].data.metrics
    m = r.data.metrics
    assert m["interp/weight_0"] == 1.0 and m["interp/weight_1"] == 0.0 and m["interp/em_steps"] == 0
    for key in ("valid/ppl", "test/ppl", "test/bpc", "test/loss"):
        assert m[key] == pytest.approx(ngram[key], rel=1e-12), key


def test_components_named_by_folder_and_uri_too(parts, tuned):
    """A Hydra run folder and a runs:/ URI are sources as good as run ids; same tuned weights."""
    folder = parts["folder"] / "out" / "ngram"
    _, r = interpolate(parts, "by-path", components=[str(folder), f"runs:/{parts['lstm'].info.run_id}/model"])
    assert r.data.metrics["interp/weight_0"] == pytest.approx(tuned[1].data.metrics["interp/weight_0"], rel=1e-9)
    # The folder's bundle still knows the run it came from.
    assert r.data.tags["lmbench.components"] == f"{parts['ngram'].info.run_id},{parts['lstm'].info.run_id}"


@pytest.fixture(scope="module")
def other_corpus_ngram(parts, tmp_path_factory):
    """A 3-gram trained on another corpus (test_training's grammar), logged in the same store."""
    folder = tmp_path_factory.mktemp("other")
    cfg = tiny_cfg(folder, "tracking.experiment=other", f"tracking.uri={parts['uri']}", model=NGRAM)
    run(cfg, output_dir=folder / "out", launch_dir=folder)
    client = MlflowClient(tracking_uri=parts["uri"])
    [r] = client.search_runs([client.get_experiment_by_name("other").experiment_id])
    return r.info.run_id


@pytest.mark.parametrize(
    "overrides,message",
    [
        pytest.param(("model.components=[{ngram}]",), "needs at least two", id="one component"),
        pytest.param(("model.weights=[1.0]",), "1 value\\(s\\) for 2 components", id="weights: wrong length"),
        pytest.param(("model.weights=[1.5,-0.5]",), "must be finite and >= 0", id="weights: negative"),
        pytest.param(("model.weights=[0.5,0.6]",), "must sum to 1", id="weights: sum"),
        pytest.param(
            ("model.components=[{ngram},0123456789abcdef0123456789abcdef]",),
            "components\\[1\\].*no run",
            id="unknown run",
        ),
        pytest.param(
            ("model.components=[{ngram},{folder}]",), "components\\[1\\].*holds no lmbench model", id="not a model"
        ),
        pytest.param(
            ("model.components=[{ngram},{other}]",),
            "another vocabulary than this run's: .*'cat'",
            id="other vocabulary",
        ),
    ],
)
def test_unusable_set_ups_are_refused_before_a_run_starts(parts, other_corpus_ngram, overrides, message):
    ids = {"ngram": parts["ngram"].info.run_id, "other": other_corpus_ngram, "folder": str(parts["folder"])}
    components = f"model.components=[{ids['ngram']},{parts['lstm'].info.run_id}]"
    overrides = [o.format(**ids) for o in overrides]
    if not any(o.startswith("model.components=") for o in overrides):
        overrides.insert(0, components)
    cfg = tiny_cfg(
        parts["folder"],
        "tracking.experiment=refused",
        *corpus_overrides(parts["folder"]),
        *overrides,
        model=("model=interpolated",),
    )
    with pytest.raises(ConfigError, match=message):
        run(cfg, output_dir=parts["folder"] / "out" / "refused", launch_dir=parts["folder"])
    assert MlflowClient(tracking_uri=parts["uri"]).get_experiment_by_name("refused") is None


def test_missing_components_are_refused(parts):
    cfg = tiny_cfg(
        parts["folder"],
        "tracking.experiment=refused",
        *corpus_overrides(parts["folder"]),
        model=("model=interpolated",),
    )
    with pytest.raises(ConfigError, match="missing required key.*components"):
        run(cfg, output_dir=parts["folder"] / "out" / "refused", launch_dir=parts["folder"])


def test_generation_samples_the_mixture_and_repeats_with_a_seed(parts, tuned):
    _, r = tuned
    bundle = load_bundle(r.info.run_id, tracking_uri=parts["uri"], cache_dir=parts["folder"] / "cache")
    model = bundle.model
    prompt = bundle.prompt_ids("w3 w5")
    a = model.generate(prompt, 30, seed=5)
    assert a.shape == (30,) and ((0 <= a) & (a < model.vocab_size)).all()
    np.testing.assert_array_equal(a, model.generate(prompt, 30, seed=5))
    assert not np.array_equal(a, model.generate(prompt, 30, seed=6))
    assert model.generate(prompt, 5, top_k=1, seed=0).tolist() == model.generate(prompt, 5, top_k=1, seed=1).tolist()
    with pytest.raises(ConfigError):
        model.generate(prompt, 5, temperature=-1.0)
    greedy = model.generate(prompt, 5, temperature=0, seed=0)  # greedy: the seed does not matter
    assert greedy.tolist() == model.generate(prompt, 5, temperature=0, seed=1).tolist()

    # The next-token distribution is the weighted sum of the components' distributions.
    ngram, lstm = model.parts
    w = model.mixture_weights
    stepper, history = model.stepper(prompt), prompt.astype(np.int64)
    for word in ("w1", "w2", "<eos>", "w4"):
        logits = lstm.stepper(history).next_logits()
        p_lstm = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        expected = w[0] * ngram.prob_distribution(history) + w[1] * p_lstm
        np.testing.assert_allclose(np.exp(stepper.next_logits()), expected, rtol=1e-5, atol=1e-9)
        stepper.append(bundle.vocab.index[word])
        history = np.append(history, bundle.vocab.index[word])


def test_pyfunc_round_trip_gives_the_logged_test_perplexity(parts, tuned):
    _, r = tuned
    mlflow.set_tracking_uri(parts["uri"])
    loaded = mlflow.pyfunc.load_model(f"runs:/{r.info.run_id}/model")
    test_text = (parts["folder"] / "markov" / "test.txt").read_text(encoding="utf-8")
    row = loaded.predict([test_text]).iloc[0]
    assert row["n_tokens"] == r.data.metrics["test/tokens"]
    assert row["ppl"] == pytest.approx(r.data.metrics["test/ppl"], rel=1e-6)
    assert row["bpc"] == pytest.approx(r.data.metrics["test/bpc"], rel=1e-6)

    # The logged bundle is self-contained: both components inside, the tuned weights restored.
    bundle = load_bundle(r.info.run_id, tracking_uri=parts["uri"], cache_dir=parts["folder"] / "cache")
    assert bundle.family == "interpolated"
    for k, family in enumerate(("ngram", "lstm")):
        part = bundle.folder / "components" / str(k)
        assert (part / "lmbench_model.json").is_file() and (part / "vocab.json").is_file()
        assert bundle.parts[k].folder == part  # loaded from the copy, not from the component's run
        assert bundle.parts[k].meta["family"] == family
        assert bundle.model.parts[k] is bundle.parts[k].model
    np.testing.assert_allclose(
        bundle.model.mixture_weights, [r.data.metrics["interp/weight_0"], r.data.metrics["interp/weight_1"]], rtol=1e-12
    )
    assert [o.run_id for o in bundle.model.origins] == [parts["ngram"].info.run_id, parts["lstm"].info.run_id]
    assert bundle.score_text(test_text).ppl == pytest.approx(row["ppl"], rel=1e-9)
