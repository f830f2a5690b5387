"""lmbench-report on runs the test logs straight into a fresh MLflow store (no training)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lmbench.cli import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def log_run(client, experiment_id, parent_id, name, family, tokenizer, test_ppl, test_bpc, status="FINISHED"):
    tags = {"lmbench.family": family, "lmbench.tokenizer": tokenizer, "lmbench.dataset": "ptb",
            "lmbench.model": f"{family}_small", "mlflow.parentRunId": parent_id}
    run_id = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
    for epoch, ppl in ((1, test_ppl * 1.5), (2, test_ppl * 1.1)):
        client.log_metric(run_id, "valid/ppl", ppl, step=epoch)
    for step in (10, 20, 30):
        client.log_metric(run_id, "train/loss", 6.0 - step / 10, step=step)
        client.log_metric(run_id, "train/tokens_per_sec", 100.0, step=step)  # running rate per step
    for key, value in {"test/ppl": test_ppl, "test/bpc": test_bpc, "best_valid/ppl": test_ppl * 1.1,
                       "model/params": 4_651_600, "time/train_s": 12.5, "train/tokens_per_sec": 2500.0}.items():
        client.log_metric(run_id, key, value, step=0)  # the run's summary, logged last
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture
def sweep(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cmp", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"lmbench.role": "sweep"}, run_name="quick-1234abcd").info.run_id
    log_run(client, exp, parent, "lstm-ptb-1", "lstm", "word", 150.0, 1.40)
    log_run(client, exp, parent, "ngram-ptb-2", "ngram", "word", 141.2, 1.31)
    log_run(client, exp, parent, "transformer-ptb-3", "transformer", "char", 3.9, 1.96)
    log_run(client, exp, parent, "rnn-ptb-4", "rnn", "word", 300.0, 1.7, status="FAILED")
    return uri, client, parent


def test_report_of_a_sweep_ranks_its_runs_and_logs_to_the_parent(sweep, tmp_path, capsys):
    uri, client, parent = sweep
    out = tmp_path / "report"
    report.main(["--parent", parent, "--tracking-uri", uri, "--out", str(out)])
    printed = capsys.readouterr().out

    table = (out / "comparison.md").read_text()
    assert table.strip() in printed
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[0] for line in body] == ["| transformer-ptb-3", "| ngram-ptb-2", "| lstm-ptb-1"]
    assert "Tokenizers differ (char, word)" in table and "bits/char" in table
    assert "rnn-ptb-4 (FAILED)" in table  # named as left out, not ranked
    assert "quick-1234abcd" not in table  # the parent is not a row

    with (out / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["family"] for r in rows] == ["transformer", "ngram", "lstm"]
    assert float(rows[1]["test_ppl"]) == pytest.approx(141.2)
    assert float(rows[1]["tokens_per_s"]) == 2500.0  # the overall rate, not the last per-step one
    assert rows[0]["model"] == "transformer_small" and float(rows[0]["params"]) == 4_651_600

    for png in ("valid_ppl.png", "train_loss.png", "test_bpc.png", "bpc_vs_params.png", "bpc_vs_train_time.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {f"report/{name}" for name in ("comparison.md", "comparison.csv", "valid_ppl.png",
                                         "train_loss.png", "test_bpc.png", "report.html")} <= logged
    description = client.get_run(parent).data.tags["mlflow.note.content"]
    assert description.startswith(  # the ranking in the lines the UI shows before "Show more"
        "**Test perplexity, best first:** transformer_small 3.90 · ngram_small 141.20 · lstm_small 150.00. "
        "Table, notes and plots: Artifacts → `report/report.html`"
    )
    assert f"{report.REPORT_PAGE}?workflowType=machine_learning" in printed.splitlines()[-1]  # the page to open


def test_report_html_is_one_self_contained_page_with_the_table_first_and_every_plot(sweep, tmp_path):
    uri, _, parent = sweep
    out = tmp_path / "report"
    out.mkdir()
    (out / "old_plot.png").write_bytes(PNG_MAGIC)  # an earlier report's, not drawn this time
    report.write_report(uri, out, parent_run_id=parent)
    page = (out / "report.html").read_text()

    drawn = {p.name for p in out.glob("*.png")} - {"old_plot.png"}
    assert page.count('src="data:image/png;base64,') == len(drawn) >= 5
    assert all(f'alt="{Path(name).stem}"' in page for name in drawn) and 'alt="old_plot"' not in page
    assert not re.search(r"<script|<link|(src|href)=\"(?!data:)", page)  # nothing fetched, nothing run
    ranking = page[page.index("<table>"):page.index("</table>")]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", ranking)
    assert cells[:4] == ["transformer", "transformer_small", "3.90", "1.9600"]  # best first
    assert "rnn-ptb-4 (FAILED)" in page and page.index("Not finished") > page.index("</table>")


def test_a_diverged_run_is_a_note_of_its_own_never_a_figure(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("quick", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"lmbench.role": "sweep"}).info.run_id
    log_run(client, exp, parent, "lstm-ptb-1", "lstm", "word", 150.0, 1.4)
    diverged = log_run(client, exp, parent, "rnn-ptb-2", "rnn", "word", 1.05e9, 9.1, status="FAILED")
    client.set_tag(diverged, "lmbench.diverged", "200")
    client.set_tag(diverged, "lmbench.error", "training diverged: the loss averaged 18.2 nats. Try: lower the lr.")
    killed = log_run(client, exp, parent, "gru-ptb-3", "gru", "word", 200.0, 1.5, status="KILLED")

    table = report.write_report(uri, tmp_path / "report", parent_run_id=parent)
    c = report.compare(report.tracking.find_runs(uri, parent_run_id=parent))
    assert [r.run for r in c.rows] == ["lstm-ptb-1"] and killed not in {r.run_id for r in c.rows}
    assert "1050000000" not in table and "1.05e" not in table  # its figures are no result
    assert "> Diverged, left out of the ranking: rnn-ptb-2 (rnn_small) diverged at step 200." in table
    assert "> Not finished, left out: gru-ptb-3 (KILLED)." in table  # a note apart from the diverged
    page = (tmp_path / "report" / "report.html").read_text()
    assert "rnn-ptb-2 (rnn_small) diverged at step 200" in page and "Try: lower the lr." in page
    description = client.get_run(parent).data.tags["mlflow.note.content"]
    assert "lstm_small 150.00; rnn-ptb-2 (rnn_small) diverged at step 200." in description


def budget_run(family: str, max_steps: str) -> report.tracking.RunRecord:
    """A finished run as compare() reads it, trained for `max_steps` of 32 x 35 tokens on PTB."""
    params = {"trainer.max_steps": max_steps, "data.train_tokens": "929589", "trainer.batch_size": "32",
              "trainer.bptt": "35"}
    return report.tracking.RunRecord(f"id-{family}", f"{family}-ptb", "FINISHED", "1",
                                     {"lmbench.family": family}, params, {"test/ppl": 150.0})


def test_the_budget_note_speaks_of_the_ngram_and_only_where_one_is_in_the_table():
    with_ngram = report.compare([budget_run("ngram", "null"), budget_run("lstm", "400")])
    [note] = [n for n in with_ngram.notes if "of one epoch" in n]
    assert note.startswith("Networks trained on 48% of one epoch") and "the n-gram counted all of its" in note
    search = report.compare([budget_run("lstm", "400"), budget_run("rnn", "200")])  # a search: no n-gram
    assert not [n for n in search.notes if "epoch" in n or "n-gram" in n]


def test_report_selects_by_experiment_and_filter(sweep, tmp_path):
    uri, _, _ = sweep
    table = report.write_report(uri, tmp_path / "a", experiment="cmp", filter_string="tags.lmbench.tokenizer = 'word'")
    assert "ngram-ptb-2" in table and "lstm-ptb-1" in table and "transformer-ptb-3" not in table
    assert "Tokenizers differ" not in table  # one tokenizer: the perplexities are comparable


def test_unknown_experiment_is_a_clean_error(sweep, tmp_path, capsys):
    uri, _, _ = sweep
    with pytest.raises(SystemExit) as info:
        report.main(["--experiment", "nope", "--tracking-uri", uri, "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    assert "no experiment named 'nope'" in capsys.readouterr().err


def test_report_shows_what_each_search_trial_tried_and_leaves_out_evaluation_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("search", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"lmbench.role": "sweep"}).info.run_id
    # dropout -> (lr as Optuna samples it, test ppl)
    trials = {"0.31105438551991593": ("3.549789049598131", 180.0), "0.1": ("12.0", 150.0)}
    for dropout, (lr, ppl) in trials.items():
        run_id = log_run(client, exp, parent, f"lstm-ptb-{dropout}", "lstm", "word", ppl, 1.4)
        overrides = f"hparams_search=lstm_ptb optimizer.learning_rate={lr} model.dropout={dropout} tracking.uri=x"
        client.set_tag(run_id, "lmbench.overrides", overrides)
    evaluation = client.create_run(exp, tags={"lmbench.kind": "evaluation", "mlflow.parentRunId": parent}).info.run_id
    client.set_terminated(evaluation, "FINISHED")

    c = report.compare(report.tracking.find_runs(uri, parent_run_id=parent))
    assert [r.settings for r in c.rows] == [
        "optimizer.learning_rate=12 model.dropout=0.1",
        "optimizer.learning_rate=3.55 model.dropout=0.3111",
    ]  # what differs between trials, at 4 significant digits; the search name and the tracking store do not
    assert evaluation not in {r.run_id for r in c.rows}
    assert "| optimizer.learning_rate=12 model.dropout=0.1 |" in report.markdown(c)


def test_settings_leave_out_the_presets_family_choice_and_hydras_plus(tmp_path):
    """`lmbench experiment=quick` varies `+experiment/family=...`, which the family and model
    columns show already; an added key (`+trainer.x=1`) is shown as a user would type it back."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("quick", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"lmbench.role": "sweep"}).info.run_id
    for family, ppl, seed in (("ngram", 141.2, 1), ("lstm", 415.7, 2)):
        run_id = log_run(client, exp, parent, f"{family}-ptb", family, "word", ppl, 1.4)
        progress = "False" if family == "ngram" else "false"  # a sweeper's rendering, the command line's
        client.set_tag(
            run_id, "lmbench.overrides", f"+experiment/family={family} ++seed={seed} trainer.progress={progress}"
        )
    c = report.compare(report.tracking.find_runs(uri, parent_run_id=parent))
    assert [r.settings for r in c.rows] == ["seed=1", "seed=2"]
    assert "experiment/family" not in report.markdown(c) and "+" not in "".join(r.settings for r in c.rows)


def test_every_plot_gives_a_run_the_same_colour():
    from lmbench.cli import plots

    rows = [
        report.Row(f"id{i}", f"run{i}", "lstm", "lstm", 1e6, "word", "ptb", 100.0, 90.0, 1.4, 10.0, 1e3, {})
        for i in range(12)
    ]
    c = plots.colours(rows)
    assert len(set(c.values())) == 12  # twelve runs, twelve colours
    assert plots.colours(rows) == c
