"""Helpers shared by more than one test module (the fixtures are in conftest.py).

- A tiny corpus and tiny runs on it (from test_training): `write_corpus` writes a 4-sentence
  grammar's train/valid/test files, `compose_on` / `tiny_cfg` compose a tiny-model run on them
  tracked in tmp_path/mlflow.db, `only_run` and `logged_bundle_files` read the run back;
  `compose_tiny` does so for any model config (with `TINY`, the per-builder shrinking overrides),
  `compose_hydra` composes the root config with its `hydra` node.
- lmbench's CLI in a subprocess: `lmbench` (a sweep or run on the tiny corpus, store in
  tmp_path/mlflow.db) and `sweep_runs` (its parent and child runs); `run_cli` and `corpus_args`
  for a process that knows the store only as a tracking server's URL; `small_disk`, a nearly full
  tmpfs (as root) for runs that fill their disk.
- A synthetic n-gram corpus: `TRAIN` and `HELD_OUT` from a skewed Markov chain over `V` ids with
  `EOS`, and `fitted`, an NGramLM trained on it.
- Services that tests start for themselves and tear down: a private PostgreSQL cluster and an
  `mlflow server` in front of it, both on 127.0.0.1 only, on free ports; a headless chromium driven
  over the DevTools protocol on a pipe (no port at all); and a sweep's runs, logged as lmbench's own
  jobs log them, for the tests that read them back.

  The session-scoped `postgres` and `tracking_server` fixtures (conftest.py) are built on these
  context managers; tests may also use them directly. PostgreSQL comes from Debian's `postgresql`
  package (.ci/run installs it); its binaries live in /usr/lib/postgresql/<version>/bin, off the
  PATH. PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user the
  package creates, in a temporary folder that user owns (the unix socket too: nothing in
  /run/postgresql is used). Without the binaries the fixtures skip and say what to install.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from lmbench.cli.plugins import register_configs
from lmbench.models.ngram import NGramLM
from lmbench.models.ngram.smoothing import DiscountFallbackWarning
from lmbench.paths import CONF_DIR

# -- a tiny corpus and tiny runs on it -------------------------------------------------------------

SENTENCES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat saw a dog",
    "a dog saw the cat on the mat",
]


def write_corpus(folder: Path, n_train: int = 400, n_eval: int = 40, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    paths = {}
    for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        lines = [SENTENCES[i] for i in rng.integers(0, len(SENTENCES), n)]
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


TINY_LSTM = ("model.hidden_size=32", "model.embedding_dim=32", "model.num_layers=1")


def compose_on(
    tmp_path: Path, paths: dict[str, Path], *overrides: str, model: tuple[str, ...] = TINY_LSTM,
    config_dir: Path = CONF_DIR,
):
    """A tiny-model run on the corpus files `paths` (split -> file), tracked in `tmp_path`/mlflow.db;
    later `overrides` win over the defaults here."""
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "dataset=text_files",
                *(f"dataset.{split}={path}" for split, path in paths.items()),
                f"cache_dir={tmp_path / 'cache'}",
                *model,
                "optimizer=adam",
                "optimizer.learning_rate=0.01",
                "trainer.batch_size=4",
                "trainer.bptt=8",
                "trainer.eval_batch_size=2",
                "trainer.progress=false",
                f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                "tracking.experiment=tiny",
                "tracking.log_every_n_steps=10",
                *overrides,
            ],
        )


def tiny_cfg(
    tmp_path: Path,
    *overrides: str,
    model: tuple[str, ...] = TINY_LSTM,
    config_dir: Path = CONF_DIR,
    n_train: int = 400,
    n_eval: int = 40,
):
    """A run on a tiny corpus written into `tmp_path`, tracked in `tmp_path`/mlflow.db."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = write_corpus(tmp_path, n_train=n_train, n_eval=n_eval)
    return compose_on(tmp_path, paths, *overrides, model=model, config_dir=config_dir)


def only_run(uri: str, experiment: str = "tiny"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def logged_bundle_files(uri: str, run_id: str, tmp_path: Path) -> set[str]:
    """Names of the files in the run's logged MLflow model's bundle (runs:/<id>/model)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(tmp_path / "dl")))
    from lmbench.artifacts.format import find_bundle_folder

    assert (local / "MLmodel").is_file()
    return {p.name for p in find_bundle_folder(local).iterdir()}


# Shrink each family to seconds of work; keys by the YAML's builder, so a new family's YAML gets a
# clear KeyError here rather than a silent full-size run.
TINY = {
    "lmbench.models.recurrent.RecurrentLM": ["model.hidden_size=16", "model.embedding_dim=16", "model.num_layers=1"],
    "lmbench.models.transformer.TransformerLM": [
        "model.n_layer=1", "model.n_head=2", "model.d_model=16", "model.d_ff=32",
    ],
}


def compose_tiny(tmp_path: Path, model: str, *overrides: str, config_dir: Path = CONF_DIR):
    return tiny_cfg(
        tmp_path, "trainer.max_steps=3", "trainer.eval_batch_size=4", "tracking.log_every_n_steps=2",
        *overrides, model=(f"model={model}",), config_dir=config_dir, n_train=200, n_eval=20,
    )


def compose_hydra(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


# -- lmbench's CLI in a subprocess -----------------------------------------------------------------

def lmbench(tmp_path: Path, *overrides: str, ok: bool = True, splits: tuple[str, ...] = ("train", "valid", "test")
            ) -> subprocess.CompletedProcess:
    """`python -m lmbench` on the tiny corpus (written into tmp_path; `splits` name the corpus files
    passed as dataset.<split>, the others are left to `overrides`), store in tmp_path/mlflow.db."""
    paths = {split: path for split, path in write_corpus(tmp_path).items() if split in splits}
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "lmbench", *overrides, "dataset=text_files",
         *(f"dataset.{split}={path}" for split, path in paths.items()),
         "trainer.batch_size=4", "trainer.bptt=8", "trainer.eval_batch_size=2", "trainer.progress=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def sweep_runs(tmp_path: Path, experiment: str):
    """(client, parent run, child runs) of the only sweep in the store at tmp_path/mlflow.db."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lmbench.role") == "sweep"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1  # nothing in the experiment outside the sweep
    return client, parents[0], children


def run_cli(
    folder: Path, uri: str, *argv: str, module: str = "lmbench", ok: bool = True
) -> subprocess.CompletedProcess:
    """`python -m <module> argv` (`python argv` when module is empty) in `folder` with its own cache,
    the store given only as the server's URL."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LMBENCH_CACHE_DIR": str(folder / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "MLFLOW_TRACKING_URI": uri}
    command = [sys.executable, *(("-m", module) if module else ()), *argv]
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def corpus_args(data: Path) -> list[str]:
    """The tiny corpus, in a data folder of its own (as LMBENCH_DATA_DIR would be on every machine)."""
    data.mkdir(parents=True, exist_ok=True)
    return ["dataset=text_files", *(f"dataset.{s}={p}" for s, p in write_corpus(data).items()),
            "trainer.batch_size=4", "trainer.bptt=8", "trainer.eval_batch_size=2", "trainer.progress=false"]


@contextmanager
def small_disk(folder: Path, size: str = "2m", left: int = 64 * 1024) -> Iterator[Path]:
    """A real full disk: a tmpfs of `size` mounted at `folder` with about `left` bytes free, unmounted
    afterwards. Mounting needs root: elsewhere the test is skipped, saying so."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode:
        pytest.skip("needs root, to mount a small tmpfs as a full disk")
    try:
        free = os.statvfs(folder)
        (folder / "filler").write_bytes(b"\0" * max(0, free.f_bavail * free.f_frsize - left))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# -- a synthetic corpus for the n-gram models ------------------------------------------------------

V, EOS = 40, 0  # id V-1 never occurs in training: it exercises the uniform order 0


def markov_corpus(n_sentences: int, seed: int) -> np.ndarray:
    """Sentences from a skewed random Markov chain: repeated n-grams of every count, some rare."""
    transitions = np.random.default_rng(0).dirichlet(np.full(V - 2, 0.2), size=V)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sentences):
        word = EOS
        for _ in range(rng.integers(1, 9)):
            word = int(rng.choice(np.arange(1, V - 1), p=transitions[word]))
            out.append(word)
        out.append(EOS)
    return np.array(out, dtype=np.uint16)


TRAIN = markov_corpus(60, seed=1)
# Held-out text: other sentences of the chain, plus the never-seen word and random (unseen) contexts.
HELD_OUT = np.concatenate([markov_corpus(8, seed=2), [V - 1, 5, V - 1, EOS], [7, 3, 3, 9, 21, EOS]])
HELD_OUT = HELD_OUT.astype(np.int32)


def fitted(smoothing: str, order: int, reset: bool = True, **kwargs) -> NGramLM:
    model = NGramLM(V, EOS, order=order, smoothing=smoothing, reset_at_eos=reset, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DiscountFallbackWarning)  # tiny data: expected at order 4
        model.fit(TRAIN)
    return model


# -- services: PostgreSQL, mlflow server, chromium, a logged sweep ---------------------------------

STARTUP_TIMEOUT_S = 180  # generous: five agents share two cores here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of Debian's newest PostgreSQL server binaries, else one on the PATH, else None."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    folder: Path  # data, socket and log

    def uri(self, database: str) -> str:
        """A SQLAlchemy URI for MLflow (psycopg2: SQLAlchemy 2 takes plain postgresql:// as psycopg 3)."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"


def _as_owner(cmd: Sequence[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *cmd] if owner else list(cmd)


@contextmanager
def postgres_cluster(databases: Sequence[str] = ("mlflow",)) -> Iterator[Postgres]:
    """A fresh cluster on 127.0.0.1:<free port> with password login for user `lmbench` and the
    given databases; stopped and removed afterwards."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("needs PostgreSQL's server binaries (Debian: apt-get install postgresql)")
    owner = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="lmbench-pg-"))
    if owner:
        shutil.chown(folder, owner)
    password, port = secrets.token_hex(12), free_port()
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if owner:
        shutil.chown(pwfile, owner)
    data, log = folder / "data", folder / "server.log"

    def run(*cmd: str) -> None:
        proc = subprocess.run(_as_owner(cmd, owner), capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "lmbench", f"--pwfile={pwfile}",
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=200"
    try:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        for database in databases:
            run(str(bindir / "createdb"), "-h", str(folder), "-p", str(port), "-U", "lmbench", database)
        yield Postgres("127.0.0.1", port, "lmbench", password, folder)
    finally:
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], owner),
                       capture_output=True, timeout=STARTUP_TIMEOUT_S)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server at {url} did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.3)


def prepare_store(backend_uri: str) -> None:
    """Create the store's schema before the server's workers meet a fresh database (they race on
    it: ECOSYSTEM.md), in a process of its own so this one keeps no connection pool."""
    subprocess.run(
        [sys.executable, "-c", "import sys; from mlflow import MlflowClient; "
         "MlflowClient(tracking_uri=sys.argv[1]).search_experiments()", backend_uri],
        check=True, capture_output=True, timeout=STARTUP_TIMEOUT_S,
    )


@contextmanager
def mlflow_server(
    backend_uri: str, artifacts: Path, *extra: str, port: int | None = None, workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[MlflowServer]:
    """`mlflow server` on 127.0.0.1 over `backend_uri`, serving artifacts from `artifacts` (clients
    upload and download through the server: nothing is shared but the URL). One worker by default:
    with more, uvicorn's supervisor kills a worker that starts slowly on a loaded machine (seen
    here), and one served the 8 parallel jobs."""
    prepare_store(backend_uri)
    port = port or free_port()
    artifacts.mkdir(parents=True, exist_ok=True)
    log = artifacts.parent / f"mlflow-server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--serve-artifacts",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), *extra],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )
    server = MlflowServer(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_healthy(server.url, process, log)
        yield server
    finally:
        server.stop()


@contextmanager
def basic_auth_server(backend_uri: str, folder: Path, admin_password: str) -> Iterator[MlflowServer]:
    """`mlflow server --app-name basic-auth` (needs `mlflow[auth]`): users in a sqlite file of its
    own, no permission for anyone by default, the admin `admin` with `admin_password`."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs mlflow[auth] (Flask-WTF)")
    folder.mkdir(parents=True, exist_ok=True)
    ini = folder / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}  # CSRF; the same for every worker
    with mlflow_server(backend_uri, folder / "artifacts", "--app-name", "basic-auth", env=env) as server:
        yield server


class Chromium:
    """Headless chromium with one page, driven over the DevTools protocol on a pipe
    (`--remote-debugging-pipe`: commands on its fd 3, answers on fd 4, each a JSON text ending in a
    NUL byte), so that a test reads what a user sees (where each element is drawn, a screenshot) with
    no port and nothing but the standard library. Frames of another origin (MLflow shows an HTML
    artifact in a sandboxed frame) are targets of their own: `frame()` attaches to one."""

    def __init__(self, executable: str, profile: Path, width: int, height: int):
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # Numbered above 4, so that bash's redirections onto 3 and 4 cannot clobber one; closed on exec,
        # so that chromium has them only as its fds 3 and 4.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{ends[0]} 4>&{ends[1]}', "bash", executable, "--headless", "--no-sandbox",
             "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            pass_fds=ends, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for fd in ends:
            os.close(fd)
        self._buffer, self._last_id = b"", 0
        try:
            page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            self.page = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride", self.page, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:  # a browser that does not answer is not left running
            self.close()
            raise

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        """One DevTools command (in a page's or frame's session); its result. Events are skipped."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                if not select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise TimeoutError(f"chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium exited")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", self.page, url=url)

    def evaluate(self, expression: str, session: str | None = None):
        """The value of a JavaScript expression in the page (or a frame's session)."""
        result = self.call("Runtime.evaluate", session or self.page, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, session: str | None = None, timeout: float = 60):
        """The expression's value once it is truthy (the page's scripts render after loading)."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression, session)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still false after {timeout} s")
            time.sleep(0.2)
        return value

    def frame(self, timeout: float = 60) -> str:
        """A session in the page's first frame of another origin, once it exists."""
        deadline = time.monotonic() + timeout
        while not (frames := [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "iframe"]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no frame of another origin after {timeout} s")
            time.sleep(0.2)
        return self.call("Target.attachToTarget", targetId=frames[0]["targetId"], flatten=True)["sessionId"]

    def screenshot(self, path: Path) -> None:
        """What the window shows (the first screen, not the whole page), as PNG."""
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", self.page, format="png")["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
            self.process.wait(timeout=30)
        except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):  # it died, or hangs
            self.process.kill()
            self.process.wait(timeout=30)
        finally:
            os.close(self._out)
            os.close(self._in)


@contextmanager
def chromium(executable: str, folder: Path, width: int = 1280, height: int = 800) -> Iterator[Chromium]:
    """A fresh headless chromium (profile in `folder`, a window of width x height), closed afterwards."""
    browser = Chromium(executable, folder, width, height)
    try:
        yield browser
    finally:
        browser.close()


@dataclass(frozen=True)
class Job:
    """One job of a sweep as the test logs it: its family and test figures, or the step it diverged at."""

    family: str
    test_ppl: float | None = None
    test_bpc: float | None = None
    diverged_at: int | None = None


def log_sweep(uri: str, experiment: str, jobs: Sequence[Job]) -> str:
    """A sweep's runs as lmbench's sweep and jobs log them (no training): the parent run
    (`tracking.start_parent_run`), then each job a child run through lmbench's `Tracker`, with its
    tags, a short training curve and its summary; a diverged job ends FAILED with the divergence
    guard's tags. The parent is left running for the report (`write_report`); its id."""
    from lmbench import names, tracking  # here: only the tests that log a sweep need lmbench's tracking

    parent = tracking.start_parent_run(uri, experiment, "quick", {names.ROLE: "sweep"})
    for number, job in enumerate(jobs):
        tracker = tracking.Tracker(True, uri, experiment, final_wait_s=0)
        tags = {names.FAMILY: job.family, names.MODEL: job.family, names.TOKENIZER: "word", names.DATASET: "ptb",
                names.SWEEP_ID: parent, names.JOB_NUM: str(number)}
        tracker.start(f"{job.family}-ptb", tags, {"trainer.max_steps": 400}, parent_run_id=parent)
        for step in range(100, (job.diverged_at or 400) + 1, 100):
            tracker.log_metrics({names.TRAIN_LOSS: 18.0 if job.diverged_at else 9.0 - step / 100}, step=step)
        if job.diverged_at is not None:
            tracker.set_tags({names.DIVERGED: str(job.diverged_at)})
            tracker.finish("FAILED", f"training diverged at step {job.diverged_at}. Try: lower the learning rate.",
                           step=job.diverged_at)
            continue
        tracker.log_metrics({names.split_metric(names.VALID, names.PPL): job.test_ppl * 1.05}, step=1)
        tracker.log_metrics({
            names.split_metric(names.TEST, names.PPL): job.test_ppl,
            names.split_metric(names.TEST, names.BPC): job.test_bpc,
            names.split_metric(names.BEST_VALID, names.PPL): job.test_ppl * 1.05,
            names.PARAMS: 4.6e6, names.TRAIN_SECONDS: 30.0, names.TRAIN_TOKENS_PER_SEC: 9000.0,
        })
        tracker.finish()
    return parent


# -- tiny pretrained checkpoints in the Hugging Face format (model=pretrained) ---------------------

HF_TINY = {  # config.json of tiny GPT-2- and Llama-family checkpoints (vocab_size added by the writer)
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "n_inner": None,
             "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"},
    "llama": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 88, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 64,
              "rms_norm_eps": 1e-6, "rope_theta": 500.0, "tie_word_embeddings": False, "hidden_act": "silu",
              "attention_bias": False, "mlp_bias": False},
}


def tiny_tokenizer(vocab_size: int, text: str | None = None):
    """A byte-level BPE (`tokenizers`, GPT-2's kind) of exactly `vocab_size` entries, trained on `text`
    (default: 3,000 random letter strings), with GPT-2's end-of-text token as its one special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    if text is None:
        rng = np.random.default_rng(0)
        text = "\n".join(" ".join("".join(rng.choice(list("etaoinshrdlu"), rng.integers(2, 7))) for _ in range(30))
                         for _ in range(100))
    lines = text.splitlines()
    tok.train_from_iterator(lines, trainer)
    assert tok.get_vocab_size() == vocab_size, f"{tok.get_vocab_size()} pieces; give more text"
    return tok


def write_tiny_checkpoint(
    folder: Path, kind: str, vocab_size: int = 300, seed: int = 0, text: str | None = None, **config
) -> Path:
    """A random checkpoint folder as `save_pretrained` writes it (config.json, model.safetensors)
    with a tokenizer.json of `vocab_size` pieces (trained on `text`: see tiny_tokenizer); written with
    safetensors' NumPy API, no PyTorch."""
    from safetensors.numpy import save_file

    cfg = {**HF_TINY[kind], "vocab_size": vocab_size, **config}
    rng = np.random.default_rng(seed)
    tensors = {k: (rng.normal(0, 0.2, s) + (1.0 if k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight",
               "layernorm.weight", "norm.weight")) else 0.0)).astype(np.float32) for k, s in _hf_shapes(cfg).items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg))
    tiny_tokenizer(vocab_size, text).save(str(folder / "tokenizer.json"))
    return folder


def _hf_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape in a checkpoint of config `c` (Hugging Face's layouts)."""
    if c["model_type"] == "gpt2":
        d, f = c["n_embd"], c.get("n_inner") or 4 * c["n_embd"]
        shapes = {"transformer.wte.weight": (c["vocab_size"], d), "transformer.wpe.weight": (c["n_positions"], d),
                  "transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)}
        per = {"ln_1.weight": (d,), "ln_1.bias": (d,), "ln_2.weight": (d,), "ln_2.bias": (d,),
               "attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,), "attn.c_proj.weight": (d, d),
               "attn.c_proj.bias": (d,), "mlp.c_fc.weight": (d, f), "mlp.c_fc.bias": (f,),
               "mlp.c_proj.weight": (f, d), "mlp.c_proj.bias": (d,)}
        return {**shapes, **{f"transformer.h.{i}.{k}": s for i in range(c["n_layer"]) for k, s in per.items()}}
    d, f, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], d), "model.norm.weight": (d,)}
    if not c.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (c["vocab_size"], d)
    per = {"input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
           "self_attn.q_proj.weight": (q, d), "self_attn.k_proj.weight": (kv, d), "self_attn.v_proj.weight": (kv, d),
           "self_attn.o_proj.weight": (d, q), "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d),
           "mlp.down_proj.weight": (d, f)}
    return {**shapes, **{f"model.layers.{i}.{k}": s for i in range(c["num_hidden_layers"]) for k, s in per.items()}}
