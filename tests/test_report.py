"""lmbench-report on runs the test logs straight into a fresh MLflow store (no training; their token
scores are npz files the test writes in the format runs log), and one tiny sweep with seeds through
the CLI."""

from __future__ import annotations

import csv
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import lmbench, sweep_runs
from matplotlib.container import ErrorbarContainer
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
    # Tokenizers differ: ranked by bits/char, not by perplexities of different units (char ppl 3.9)
    assert [line.split(" | ")[0] for line in body] == ["| ngram-ptb-2", "| lstm-ptb-1", "| transformer-ptb-3"]
    assert "Tokenizers differ (char, word)" in table and "bits/char" in table
    assert "rnn-ptb-4 (FAILED)" in table  # named as left out, not ranked
    assert "quick-1234abcd" not in table  # the parent is not a row

    with (out / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["family"] for r in rows] == ["ngram", "lstm", "transformer"]
    assert float(rows[0]["test_ppl"]) == pytest.approx(141.2)
    assert float(rows[0]["tokens_per_s"]) == 2500.0  # the overall rate, not the last per-step one
    assert rows[2]["model"] == "transformer_small" and float(rows[2]["params"]) == 4_651_600

    for png in ("valid_ppl.png", "train_loss.png", "test_bpc.png", "bpc_vs_params.png", "bpc_vs_train_time.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {f"report/{name}" for name in ("comparison.md", "comparison.csv", "valid_ppl.png",
                                         "train_loss.png", "test_bpc.png", "report.html")} <= logged
    description = client.get_run(parent).data.tags["mlflow.note.content"]
    assert description.startswith(  # the ranking in the lines the UI shows before "Show more"
        "**Test bits/char, best first:** ngram_small 1.3100 · lstm_small 1.4000 · transformer_small 1.9600. "
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
    assert cells[:4] == ["ngram", "ngram_small", "141.20", "1.3100"]  # best first (by bits/char: tokenizers differ)
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


# -- seeds, paired intervals and the sentence (issue 23) ------------------------------------------

def scores_npz(path: Path, line_nats: np.ndarray, line_tokens: np.ndarray, line_chars: np.ndarray, digest: str
               ) -> dict[str, float]:
    """`token_scores/test.npz` as a run logs it (each line's nats spread evenly over its tokens),
    and the test figures that follow from it."""
    log_probs = np.repeat(-line_nats / line_tokens, line_tokens).astype(np.float32)
    np.savez(
        path, log_probs=log_probs, line_ends=np.cumsum(line_tokens), line_chars=line_chars,
        line_words=line_tokens, line_bytes=line_chars, ids_digest=np.array(digest),
        n_chars=np.array(line_chars.sum()), n_words=np.array(line_tokens.sum()), n_bytes=np.array(line_chars.sum()),
    )
    nats = -float(np.sum(log_probs, dtype=np.float64))
    ppl = math.exp(nats / line_tokens.sum())
    return {"test/ppl": ppl, "test/word_ppl": ppl, "test/bpc": nats / math.log(2) / line_chars.sum()}


def log_scored(client, exp, parent, tmp_path, model, seed, line_nats, line_tokens, tokenizer="word", digest="ids-w",
               train_s=30.0):
    """A finished run of `model` with `seed`, as lmbench logs it, with its token scores (line_nats:
    None for a run logged before lmbench kept them) of a text of 5 characters per word-level token
    (`line_tokens` of a char tokenizer: 1 character a token)."""
    tags = {"lmbench.family": model.split("_")[0], "lmbench.model": model, "lmbench.tokenizer": tokenizer,
            "lmbench.dataset": "ptb", "mlflow.parentRunId": parent, "lmbench.overrides": f"model={model} seed={seed}",
            "lmbench.scored_ids.test": digest}
    run_id = client.create_run(exp, tags=tags, run_name=f"{model}-ptb-{seed}").info.run_id
    for key, value in {"seed": seed, "trainer.max_steps": 400, "tracking.uri": f"x{seed}"}.items():
        client.log_param(run_id, key, value)
    if line_nats is None:
        figures = {"test/ppl": 141.2, "test/bpc": 1.31}
    else:
        folder = tmp_path / "npz" / run_id
        folder.mkdir(parents=True)
        line_chars = line_tokens if tokenizer == "char" else line_tokens * 5
        figures = scores_npz(folder / "test.npz", line_nats, line_tokens, line_chars, digest)
        client.log_artifact(run_id, str(folder / "test.npz"), "token_scores")
    client.log_metric(run_id, "valid/ppl", figures["test/ppl"] * 1.05, step=1)
    for key, value in {**figures, "best_valid/ppl": figures["test/ppl"] * 1.05, "time/train_s": train_s,
                       "model/params": 4.6e6}.items():
        client.log_metric(run_id, key, value, step=0)
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture
def seeded(tmp_path):
    """A sweep of 300 test lines: lstm and transformer with 3 seeds each (the transformer 4 % worse on
    every line), one rnn a little worse than the lstm but far noisier line by line, an n-gram logged
    before token scores, and a character-level transformer (other token ids)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("seeds", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"lmbench.role": "sweep"}, run_name="seeds-1234abcd").info.run_id
    rng = np.random.default_rng(5)
    tokens = rng.integers(5, 40, 300)
    hard = rng.gamma(3.0, 1.6, 300) * tokens  # how hard each line is, for every model
    for seed in (1, 2, 3):
        log_scored(client, exp, parent, tmp_path, "lstm", seed, hard + rng.normal(0, 0.3, 300) * tokens ** 0.5,
                   tokens, train_s=30.0 + seed)
        log_scored(client, exp, parent, tmp_path, "transformer", seed, hard * 1.04 + rng.normal(0, 0.3, 300), tokens)
    log_scored(client, exp, parent, tmp_path, "rnn", 1, hard + 0.005 * tokens + rng.normal(0, 4, 300), tokens)
    log_scored(client, exp, parent, tmp_path, "ngram", 1, None, tokens)
    char_tokens = tokens * 5
    log_scored(client, exp, parent, tmp_path, "transformer_char", 1, hard * 1.1, char_tokens, "char", "ids-c")
    return uri, client, parent


def test_seeds_are_one_row_with_mean_sd_and_n(seeded, tmp_path):
    uri, client, parent = seeded
    out = tmp_path / "report"
    table = report.write_report(uri, out, parent_run_id=parent)
    c = report.compare(report.tracking.find_runs(uri, parent_run_id=parent))
    by_label = {r.label: r for r in c.rows}
    assert sorted(by_label) == ["lstm", "ngram", "rnn", "transformer", "transformer_char"]
    lstm = by_label["lstm"]
    runs = [r for r in report.tracking.find_runs(uri, parent_run_id=parent) if r.tags.get("lmbench.model") == "lstm"]
    ppl = [r.metrics["test/ppl"] for r in runs]
    assert lstm.n == 3 and lstm.test_ppl == pytest.approx(np.mean(ppl))
    assert lstm.sd["test_ppl"] == pytest.approx(np.std(ppl, ddof=1)) and lstm.sd["train_s"] == pytest.approx(1.0)
    assert lstm.settings == "seed=1,2,3" and by_label["rnn"].settings == "seed=1"  # which seeds each row holds
    header = table.splitlines()[0]
    assert "| n |" in header and "| test word ppl |" in header
    lstm_line = next(line for line in table.splitlines() if line.startswith("| lstm-ptb-1, lstm-ptb-2, lstm-ptb-3 |"))
    assert "| 3 |" in lstm_line and f"| {lstm.test_ppl:.2f} ± {lstm.sd['test_ppl']:.2f} |" in lstm_line
    assert "tokenizer" in header and "compare test word ppl" in table  # the cross-tokenizer note's units
    with (out / "comparison.csv").open() as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert rows["lstm"]["n"] == "3" and len(rows["lstm"]["run_id"].split()) == 3
    assert float(rows["lstm"]["test_ppl_sd"]) == pytest.approx(lstm.sd["test_ppl"]) and rows["rnn"]["test_ppl_sd"] == ""


def test_the_sentence_ends_the_comparison_everywhere_with_paired_intervals(seeded, tmp_path, capsys):
    uri, client, parent = seeded
    out = tmp_path / "report"
    report.main(["--parent", parent, "--tracking-uri", uri, "--out", str(out), "--pair", "rnn", "transformer"])
    printed = capsys.readouterr().out
    table = (out / "comparison.md").read_text().rstrip()
    sentence = table.splitlines()[-1]
    print("\n" + sentence)
    assert sentence.startswith("**At 95 % (paired bootstrap over the test lines in blocks of >= 50 tokens, 10,000 "
                               "resamples, bootstrap seed 1234; the runs' seeds resampled too):** ")
    said = sentence.split(":** ")[1].rstrip(".").split("; ")  # each row against the best, by bits/char
    assert said[0] == "lstm vs rnn: not significant"
    assert re.fullmatch(r"lstm beats transformer by 0\.\d+ bits/char \[0\.\d+, 0\.\d+\]", said[1])
    assert re.fullmatch(r"rnn beats transformer by 0\.\d+ bits/char \[0\.\d+, 0\.\d+\]", said[2])  # --pair
    assert said[3].startswith("ngram logged no token scores (runs from before lmbench kept them")
    assert said[4] == "transformer_char scored other token ids than lstm (tokenizer char, not word)"
    assert "| model | beats | by bits/char [95 %] | by nats/token = log ppl [95 %] | significant |" in table
    assert table in printed.strip()
    description = client.get_run(parent).data.tags["mlflow.note.content"]
    assert description.rstrip().endswith(sentence)  # the parent's description ends with it too
    page = (out / "report.html").read_text()
    assert "<p class=verdict><b>At 95 %" in page and "lstm beats transformer by" in page
    assert page.index("class=verdict") < page.index("Paired differences")  # right under the ranking

    # The interval is the bootstrap's: the lstm's mean over seeds against the transformer's, by bits/char.
    c = report.compare(report.tracking.find_runs(uri, parent_run_id=parent))
    scores = report.pairs.load_scores(uri, [i for r in c.rows for i in r.run_ids])
    lstm_vs = report.pairs.pair(c.rows, scores, report.pairs.DEFAULTS).compared[1]
    bpc = {r.label: r.test_bpc for r in c.rows}
    assert lstm_vs.difference.bpc.estimate == pytest.approx(bpc["transformer"] - bpc["lstm"], rel=1e-5)
    assert 0 < lstm_vs.difference.bpc.low < lstm_vs.difference.bpc.estimate < lstm_vs.difference.bpc.high


def test_runs_of_other_token_ids_are_never_paired_and_unknown_names_are_refused(seeded, tmp_path, capsys):
    uri, _, parent = seeded
    table = report.write_report(uri, tmp_path / "r", parent_run_id=parent,
                                options=report.pairs.Options(resamples=1000, pairs=(("lstm", "transformer_char"),)))
    assert "lstm vs transformer_char: not paired, they scored different token ids (tokenizer word, not char)" in table
    assert "lstm beats transformer_char" not in table
    with pytest.raises(SystemExit) as info:
        report.main(["--parent", parent, "--tracking-uri", uri, "--out", str(tmp_path / "x"), "--pair", "gru", "lstm"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--pair gru names no group of this report; its groups: " in err and "transformer_char" in err
    with pytest.raises(SystemExit):
        report.main(["--parent", parent, "--tracking-uri", uri, "--resamples", "500"])
    assert "--resamples takes 1000 to 10000, not 500" in capsys.readouterr().err


def test_error_bars_where_a_row_is_several_seeds(seeded):
    from lmbench.cli import plots

    uri, _, parent = seeded
    c = report.compare(report.tracking.find_runs(uri, parent_run_id=parent))
    colours = plots.colours(c.rows)
    bars = plots.plot_bpc(c.rows, colours).axes[0]
    [container] = [c for c in bars.containers if isinstance(c, ErrorbarContainer)]
    widths = container.lines[2][0].get_segments()  # one horizontal error bar per row
    spread = {r.label: r.sd.get("test_bpc", 0.0) for r in sorted(c.rows, key=lambda r: r.test_bpc)}
    assert [s[1][0] - s[0][0] for s in widths] == pytest.approx([2 * sd for sd in spread.values()])
    tradeoff = plots.plot_tradeoff(c.rows, "train_s", "training time", colours).axes[0]
    assert len(tradeoff.containers) == 2  # the lstm's and the transformer's ± sd; single runs have none
    assert "lstm (word, 3 seeds)" in {t.get_text() for t in tradeoff.texts}


def test_intervals_for_ten_runs_on_ptb_sized_scores_take_seconds(tmp_path):
    """10,000 resamples on PTB test's shape (82,430 tokens in 3,761 lines) for ten runs (three groups
    of three seeds and one run), read back from the store: under 5 s is the target; asserted
    generously for a busy machine, the figure printed."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("ptb", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"lmbench.role": "sweep"}).info.run_id
    rng = np.random.default_rng(6)
    tokens = rng.multinomial(82_430 - 3_761, np.full(3_761, 1 / 3_761)) + 1
    hard = rng.gamma(3.0, 1.6, 3_761) * tokens
    for model, seeds, worse in (("lstm", 3, 1.0), ("gru", 3, 1.01), ("transformer", 3, 1.03), ("rnn", 1, 1.1)):
        for seed in range(1, seeds + 1):
            log_scored(client, exp, parent, tmp_path, model, seed, hard * worse + rng.normal(0, 1, 3_761), tokens)
    c = report.compare(report.tracking.find_runs(uri, parent_run_id=parent))
    start = time.perf_counter()
    scores = report.pairs.load_scores(uri, [i for r in c.rows for i in r.run_ids])
    loaded = time.perf_counter()
    pairing = report.pairs.pair(c.rows, scores, report.pairs.DEFAULTS)
    done = time.perf_counter()
    print(f"\n10 runs, PTB-sized test scores: read from the store in {loaded - start:.2f} s, "
          f"3 intervals of 10,000 resamples in {done - loaded:.2f} s")
    assert [x.worse for x in pairing.compared] == ["gru", "transformer", "rnn"]
    assert done - start < 20


def test_sweep_seeds_is_hydras_range_sweep_and_needs_a_sweep():
    from lmbench.cli.main import seeds_as_sweep
    from lmbench.cli.plugins import register_configs
    from lmbench.errors import ConfigError

    register_configs()
    assert seeds_as_sweep(["-m", "model=lstm,rnn", "sweep.seeds=3"]) == ["-m", "model=lstm,rnn", "seed=range(1,4)"]
    assert seeds_as_sweep(["experiment=quick", "sweep.seeds=2"]) == ["experiment=quick", "seed=range(1,3)"]  # a sweep
    assert seeds_as_sweep(["model=lstm", "seed=3"]) == ["model=lstm", "seed=3"]
    for argv, said in (
        (["model=lstm", "sweep.seeds=3"], "this command line is no sweep: add -m (`lmbench -m model=lstm,transformer"),
        (["-m", "sweep.seeds=3", "seed=5"], "give either sweep.seeds or seed=..., not both"),
        (["-m", "sweep.seeds=0"], "sweep.seeds takes a whole number of seeds >= 1, not '0'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(said)):
            seeds_as_sweep(argv)


def test_a_sweep_with_seeds_reports_one_row_per_model_with_intervals(tmp_path):
    """`lmbench -m model=ngram,rnn sweep.seeds=2` on the tiny corpus: four runs, two rows of two seeds,
    and the sentence from the token scores the runs logged."""
    proc = lmbench(tmp_path, "-m", "model=ngram,rnn", "sweep.seeds=2", "trainer.max_steps=5",
                   "tracking.experiment=seeds")
    client, parent, children = sweep_runs(tmp_path, "seeds")
    assert sorted((c.data.tags["lmbench.model"], c.data.params["seed"]) for c in children) == [
        ("ngram", "1"), ("ngram", "2"), ("rnn", "1"), ("rnn", "2")]
    assert parent.data.tags["lmbench.command"].endswith("seed=range(1,3)")
    with next((tmp_path / "multirun").glob("*/*/report/comparison.csv")).open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["model"], r["n"]) for r in rows) == [("ngram", "2"), ("rnn", "2")]
    sentence = proc.stdout.split("**At 95 % (paired bootstrap", 1)[1].splitlines()[0]
    print("\n**At 95 % (paired bootstrap" + sentence)
    assert "ngram beats rnn by" in sentence or "ngram vs rnn: not significant" in sentence
