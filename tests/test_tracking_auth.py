"""Who may write: `mlflow server --app-name basic-auth` (tests/helpers.py), credentials given to
jobs only through MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. A job with wrong, missing or
insufficient credentials is refused before training in one paragraph; the credentials appear
nowhere in what a run logs or prints."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from helpers import basic_auth_server, corpus_args, run_cli
from mlflow import MlflowClient
from mlflow.server import get_app_client

ADMIN_PASSWORD = secrets.token_hex(8)
TRAINER, TRAINER_PASSWORD = "trainer", "tr-" + secrets.token_hex(8)
READER, READER_PASSWORD = "reader", "rd-" + secrets.token_hex(8)


def as_user(user: str, password: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server with two users: `trainer` may edit experiment "secured", `reader` may not touch it."""
    folder = tmp_path_factory.mktemp("auth")
    with basic_auth_server(f"sqlite:///{folder / 'mlflow.db'}", folder, ADMIN_PASSWORD) as running:
        with pytest.MonkeyPatch.context() as env:
            for key, value in as_user("admin", ADMIN_PASSWORD).items():
                env.setenv(key, value)
            auth = get_app_client("basic-auth", tracking_uri=running.url)
            auth.create_user(TRAINER, TRAINER_PASSWORD)
            auth.create_user(READER, READER_PASSWORD)
            experiment_id = MlflowClient(tracking_uri=running.url).create_experiment("secured")
            auth.grant_user_permission(TRAINER, "experiment", experiment_id, "EDIT")
        yield running


def job(tmp_path: Path, server, credentials: dict[str, str], ok: bool):
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(credentials)
    try:
        return run_cli(tmp_path / "job", server.url, *corpus_args(tmp_path / "data"), "model=ngram",
                       "tracking.experiment=secured", ok=ok)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def test_a_job_with_credentials_logs_and_never_shows_them(server, tmp_path, monkeypatch):
    proc = job(tmp_path, server, as_user(TRAINER, TRAINER_PASSWORD), ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    client = MlflowClient(tracking_uri=server.url)
    runs = client.search_runs([client.get_experiment_by_name("secured").experiment_id])
    (run,) = [r for r in runs if r.data.tags.get("lmbench.output_dir", "").startswith(str(tmp_path))]
    assert run.info.status == "FINISHED" and run.info.user_id == TRAINER

    # Everything the run logged, printed and wrote: the password is in none of it.
    logged = [*run.data.params.values(), *run.data.tags.values(), proc.stdout, proc.stderr]
    downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    written = [p for folder in (downloaded, tmp_path / "job") for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written)
    texts = logged + [p.read_bytes().decode("utf-8", "replace") for p in written if p.stat().st_size < 5_000_000]
    assert not [t for t in texts if TRAINER_PASSWORD in t]


@pytest.mark.parametrize("who", ["wrong password", "no credentials"])
def test_a_job_without_valid_credentials_is_refused_before_training(server, tmp_path, who):
    credentials = as_user(TRAINER, "not-" + TRAINER_PASSWORD) if who == "wrong password" else {}
    proc = job(tmp_path, server, credentials, ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (paragraph,) = [line for line in proc.stderr.splitlines() if line.startswith("lmbench: error:")]
    assert "asks for credentials and got none or wrong ones" in paragraph and "MLFLOW_TRACKING_PASSWORD" in paragraph
    assert "test ppl" not in proc.stdout


def test_a_user_without_permission_is_refused_before_training(server, tmp_path):
    proc = job(tmp_path, server, as_user(READER, READER_PASSWORD), ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (paragraph,) = [line for line in proc.stderr.splitlines() if line.startswith("lmbench: error:")]
    assert f"refuses user '{READER}' (permission denied)" in paragraph and "'secured'" in paragraph
    assert "test ppl" not in proc.stdout
