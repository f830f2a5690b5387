"""What the MLflow UI shows of a sweep, checked in a real browser (Debian's chromium, headless)
against `mlflow server` on 127.0.0.1: the page lmbench prints opens on the runs (MLflow 3 otherwise
opens an experiment on its GenAI overview of traces), and a sweep's parent run opens on its
comparison table. Skipped where chromium is not installed (.ci/run installs it)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow import MlflowClient
from test_report import log_run

from lmbench import tracking
from lmbench.cli import report

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`mlflow server` over a fresh sqlite store, bound to 127.0.0.1 only; its base URL."""
    port = free_port()
    db = tmp_path / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # the schema, before the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
         "--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not answer on 127.0.0.1 within 60 s")
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def page_text(url: str, tmp_path) -> str:
    """The text of the page once the browser has rendered it (scripts run, 20 s of virtual time)."""
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1600,1100", "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    ).stdout
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_the_printed_pages_show_the_runs_and_the_sweeps_table(server, tmp_path):
    client = MlflowClient(tracking_uri=server)
    experiment_id = tracking.ensure_experiment(server, "quick")
    parent = tracking.start_parent_run(server, "quick", "quick", {"lmbench.role": "sweep"})
    log_run(client, experiment_id, parent, "ngram-ptb-1", "ngram", "word", 141.19, 1.3083)
    log_run(client, experiment_id, parent, "lstm-ptb-2", "lstm", "word", 415.68, 1.5937)
    report.write_report(server, tmp_path / "report", parent_run_id=parent)
    tracking.end_run(server, parent)
    parent_name = client.get_run(parent).info.run_name

    experiment_page = page_text(tracking.ui_url(server, experiment_id), tmp_path)
    assert parent_name in experiment_page and "matching runs" in experiment_page
    assert "Detect Issues" not in experiment_page  # not the GenAI overview

    parent_page = page_text(tracking.ui_url(server, experiment_id, parent), tmp_path)
    assert "This sweep's runs" in parent_page  # the description, rendered
    assert "ngram-ptb-1" in parent_page and "141.19" in parent_page
