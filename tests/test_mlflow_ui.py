"""What the MLflow UI shows of a sweep, checked in a real browser (Debian's chromium, headless, on a
laptop's 1280 x 800 window) against `mlflow server` on 127.0.0.1: the page lmbench prints at a
sweep's end shows every family's test perplexity on the first screen, and the experiment link opens
on the runs (MLflow 3.17 otherwise opens an experiment on its GenAI overview of traces). The first
screen is also saved as a PNG, for a person to look at. Skipped where chromium is not installed
(.ci/run installs it)."""

from __future__ import annotations

import re
import shutil

import pytest
from helpers import Job, chromium, log_sweep, mlflow_server

from lmbench import tracking
from lmbench.cli import report

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
]
WIDTH, HEIGHT = 1280, 800
FIRST_SCREEN_COPY = "/tmp/mlflow_ui_first_screen.png"  # where a person looks at the last run's screen
JOBS = (
    Job("ngram", 141.19, 1.3083), Job("rnn", 289.72, 1.4852), Job("lstm", 415.68, 1.5937),
    Job("transformer", 307.14, 1.4980), Job("rnn", diverged_at=200),
)
# The rows of report.html's first table, each cell with its text, whether it is drawn whole inside
# the frame's viewport (not scrolled away, not cut off at the frame's right edge), and its centre.
ROWS = """[...document.querySelector('table').rows].slice(1).map(tr => [...tr.cells].map(td => {
  const r = td.getBoundingClientRect();
  return {text: td.textContent, x: (r.left + r.right) / 2, y: (r.top + r.bottom) / 2,
          inside: r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight};
}))"""
# ROWS once every cell is inside the frame's view: on a loaded machine the artifact pane may still be
# laying out when the table first exists (seen once at load average 5).
SETTLED = f"(() => {{ const rows = {ROWS}; return rows.every(r => r.every(c => c.inside)) ? rows : null; }})()"
# Where the frame is in the window, and whether the window draws it at a point (nothing over it).
FRAME = "(() => { const r = document.querySelector('iframe').getBoundingClientRect(); return [r.left, r.top]; })()"
FRAME_AT = "document.elementFromPoint({x}, {y}) === document.querySelector('iframe')"


@pytest.fixture
def server(tmp_path):
    with mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts") as running:
        yield running.url


def test_the_printed_page_shows_every_familys_test_perplexity_on_the_first_screen(server, tmp_path):
    parent = log_sweep(server, "quick", JOBS)
    report.write_report(server, tmp_path / "report", parent_run_id=parent)  # as the sweep's end does
    tracking.end_run(server, parent)
    url = report.report_hint(server, parent).split("open ")[-1]  # what the sweep prints: "open <url>"

    with chromium(CHROMIUM, tmp_path / "chromium", WIDTH, HEIGHT) as browser:
        browser.open(url)
        frame = browser.frame()  # report.html, in the artifact view's sandboxed frame
        rows = browser.wait_for(ROWS, frame)
        try:
            rows = browser.wait_for(SETTLED, frame, timeout=30)
        except TimeoutError:
            pass  # still not all inside: the assertions below say which cells are off screen
        browser.screenshot(tmp_path / "first_screen.png")
        shutil.copy(tmp_path / "first_screen.png", FIRST_SCREEN_COPY)
        left, top = browser.evaluate(FRAME)

        def seen(cell) -> bool:  # on the first screen, in the frame's view, nothing drawn over it
            x, y = left + cell["x"], top + cell["y"]
            return cell["inside"] and 0 <= x < WIDTH and 0 <= y < HEIGHT and browser.evaluate(FRAME_AT.format(x=x, y=y))

        shown = [[cell["text"] for cell in row] for row in rows if all(seen(cell) for cell in row)]
        report_text = browser.evaluate("document.body.innerText", frame)

        experiment_id = tracking.get_run(server, parent).experiment_id
        browser.open(tracking.ui_url(server, experiment_id))
        runs_page = browser.wait_for("document.body.innerText.includes('matching runs') && document.body.innerText")

    ranked = [job for job in JOBS if job.test_ppl is not None]
    for job in ranked:  # family, model, test ppl, bits/char
        assert [job.family, job.family, f"{job.test_ppl:.2f}", f"{job.test_bpc:.4f}"] in shown, (job, rows)
    assert [row[0] for row in shown] == [job.family for job in sorted(ranked, key=lambda job: job.test_ppl)]
    assert len(rows) == len(ranked)  # the diverged run is no row: a note of its own
    assert re.search(r"rnn-ptb-\w+ \(rnn\) diverged at step 200", report_text) and "Not finished" not in report_text
    assert "Detect Issues" not in runs_page  # the experiment link: its runs, not the GenAI overview
