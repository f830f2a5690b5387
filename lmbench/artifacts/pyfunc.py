"""Every lmbench model as an MLflow `pyfunc` model.

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    model.predict(["some text", "more text"])       # or a one-column DataFrame of texts

returns one row per text: `n_tokens`, `n_oov`, `oov_rate`, `nats`, `loss` (nats/token), `ppl`,
`bpc`, and the per-token `tokens` and `log_probs` (natural log). Each text is scored as a document
on its own (as if after a sentence end), with the model's own tokenizer and vocabulary, the same
way the run scored its splits: the test split's text gives the run's test perplexity.

    model.predict(["the market"], params={"max_tokens": 40, "top_p": 0.9, "seed": 1})

generates instead (`max_tokens` > 0): one row per prompt, `prompt` and `text` (the prompt and its
continuation, as `lmbench-generate` prints it). The params and their defaults are GENERATION_PARAMS
(the model's signature lists them): temperature 1 (0: greedy), top_k 0 and top_p 1 (no cut),
seed -1 (none). MLflow params have a type and a default, never null, hence these stand-ins.

The logged model holds the native bundle (`artifacts/bundle/`: Keras weights or n-gram arrays,
vocabulary, tokenizer and model configs, see `lmbench.artifacts.format`) and the lmbench package itself
(`code/`), so it loads where lmbench is not installed, given its requirements. It is written as
MLflow "models from code" (this file's `set_model` line), not as a pickled object.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import pandas as pd

import lmbench
from lmbench.artifacts.bundle import load_bundle
from lmbench.artifacts.format import PYFUNC_ARTIFACT
from lmbench.tracking import Tracker

# The generation params of `predict` and their defaults, which mean: score, no cut, no seed.
GENERATION_PARAMS = {"max_tokens": 0, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": -1}
REQUIREMENTS = ("tensorflow", "keras", "numpy", "pandas", "mlflow", "hydra-core", "omegaconf", "nltk", "tokenizers")


class LmbenchPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.folder, self._bundle = context.artifacts[PYFUNC_ARTIFACT], None

    @property
    def bundle(self):
        """The bundle, loaded at the first prediction: MLflow also loads the context when it logs
        the model (to run the empty input example that declares the params), and a bundle is the
        size of the model."""
        if self._bundle is None:
            self._bundle = load_bundle(self.folder)
        return self._bundle

    # The hint gives the logged model its signature (input: a list of strings); MLflow checks the
    # input against it and turns a one-column DataFrame into that list. Without a hint MLflow warns
    # at every logged model; a DataFrame hint instead makes it log that no signature can be inferred.
    # The output, a DataFrame with one row per text, is not hinted: for a DataFrame or Any hint
    # MLflow says at every logged model that it infers no output schema.
    def predict(self, context, model_input: list[str], params=None):
        texts = _texts(model_input)
        params = {**GENERATION_PARAMS, **(params or {})}
        if params["max_tokens"] > 0:
            return self.generate(texts, params)
        rows = []
        for text in texts:
            s = self.bundle.score_text(text)
            rows.append({
                "n_tokens": s.n_tokens, "n_oov": s.n_oov, "oov_rate": s.oov_rate, "nats": s.nats,
                "loss": s.loss, "ppl": s.ppl, "bpc": s.bpc,
                "tokens": list(s.tokens), "log_probs": s.log_probs.tolist(),
            })
        return pd.DataFrame(rows, columns=[
            "n_tokens", "n_oov", "oov_rate", "nats", "loss", "ppl", "bpc", "tokens", "log_probs"
        ])

    def generate(self, prompts: list[str], params: dict) -> pd.DataFrame:
        texts = [
            self.bundle.generate_text(
                prompt, int(params["max_tokens"]), temperature=float(params["temperature"]),
                top_k=int(params["top_k"]) or None, top_p=float(params["top_p"]),
                seed=None if params["seed"] < 0 else int(params["seed"]),
            )
            for prompt in prompts
        ]
        return pd.DataFrame({"prompt": prompts, "text": texts})


def _texts(model_input) -> list[str]:
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column]]
    if isinstance(model_input, dict) and "text" in model_input:
        return _texts(model_input["text"])
    return [str(t) for t in model_input]


def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def log_bundle(tracker: Tracker, bundle_folder: Path) -> None:
    """Log `bundle_folder` as the tracker's run's MLflow model "model" (nothing when the run is not
    tracked)."""
    tracker.call("MLflow model", _log_pyfunc, Path(bundle_folder))


class _QuietExampleRun(logging.Filter):
    """Drops MLflow's INFO line "Running the predict function to generate output based on input
    example", printed at every logged model. MLflow (3.17) runs `predict` on the input example
    whenever `predict` has type hints, to infer the output schema, even when given a signature
    (`_infer_signature_from_type_hints`), and cannot be told not to: the hint must stay (without it
    MLflow warns at every class definition and no longer turns a DataFrame into the list of texts),
    and so must the example (it carries the generation params into the signature; without it the
    hinted signature, which has no params, replaces a given one, with a warning). The example has no
    text: that `predict` loads no bundle and runs no model (measured: about 2 ms, no bundle loaded),
    so the line tells a user nothing; the signature and the example are logged as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Running the predict function")


def _log_pyfunc(bundle_folder: Path) -> None:
    quiet, said = _QuietExampleRun(), logging.getLogger("mlflow.models.signature")
    said.addFilter(quiet)
    try:
        _log_model(bundle_folder)
    finally:
        said.removeFilter(quiet)


def _log_model(bundle_folder: Path) -> None:
    mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(__file__)),
        artifacts={PYFUNC_ARTIFACT: str(bundle_folder)},
        code_paths=[str(Path(lmbench.__file__).parent)],
        pip_requirements=_requirements(),
        # Declares the generation params in the signature (MLflow ignores params it does not list);
        # no text: MLflow runs the example through `predict` at logging, which then loads nothing.
        input_example=([], GENERATION_PARAMS),
    )


if __name__ != "lmbench.artifacts.pyfunc":  # executed by MLflow as the model's code file
    mlflow.models.set_model(LmbenchPyfunc())
