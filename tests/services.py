"""Services that tests start for themselves and tear down: a private PostgreSQL cluster and an
`mlflow server` in front of it, both on 127.0.0.1 only, on free ports.

Reusable by any test module (the fixtures are session-scoped; import them in a conftest or use
the context managers directly). PostgreSQL comes from Debian's `postgresql` package (.ci/run
installs it); its binaries live in /usr/lib/postgresql/<version>/bin, off the PATH. PostgreSQL
refuses to run as root, so as root the cluster runs as the `postgres` user the package creates,
in a temporary folder that user owns (the unix socket too: nothing in /run/postgresql is used).
Without the binaries the fixtures skip and say what to install.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_cluster(("mlflow", "optuna")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tracking_server(postgres, tmp_path_factory) -> Iterator[MlflowServer]:
    """One `mlflow server` over PostgreSQL for the session; tests keep apart by experiment name."""
    with mlflow_server(postgres.uri("mlflow"), tmp_path_factory.mktemp("server") / "artifacts") as server:
        yield server


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
