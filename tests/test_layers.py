"""The house's layers (docs/architecture.md) hold: import-linter's contracts in pyproject.toml.

errors/names/paths/progress -> config -> data -> models -> scoring -> tracking -> artifacts ->
training -> cli, each importing only what is below it; no import cycles inside a package; only
tracking and the pyfunc model import MLflow; data, config, scoring and tracking never TensorFlow;
a counting model's untracked run (training.run, cli.main, models.ngram) neither (tests/test_counting_run.py
runs the command).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
            "--config",
            str(REPO / "pyproject.toml"),
            "--no-cache",
        ],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_layer_contract_is_kept():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


def test_an_upward_import_and_a_cycle_break_the_contracts(tmp_path):
    """The contracts are not vacuous: a model importing the training layer, two n-gram modules
    importing each other, and Keras imported on a counting model's path are each reported."""
    shutil.copytree(REPO / "lmbench", tmp_path / "lmbench", ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / "lmbench" / "models" / "base.py").open("a") as f:
        f.write("\nimport lmbench.training.run  # upward\n")
    with (tmp_path / "lmbench" / "models" / "ngram" / "arpa.py").open("a") as f:
        f.write("\nfrom lmbench.models.ngram.model import NGramLM  # a cycle\n")
    with (tmp_path / "lmbench" / "training" / "counting_run.py").open("a") as f:
        f.write("\nimport keras  # TensorFlow on the counting path\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "lmbench.models is not allowed to import lmbench.training" in result.stdout
    assert "No cycles are allowed in lmbench.models.ngram" in result.stdout
    assert "lmbench.training.run is not allowed to import keras" in result.stdout


def test_files_and_functions_stay_short_enough_to_read():
    """No module of lmbench over 400 lines, no function over 60 (DESIGN.md: files readable in one
    sitting)."""
    import ast

    too_long = []
    for path in sorted((REPO / "lmbench").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > 400:
            too_long.append(f"{path.relative_to(REPO)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_long.append(
                    f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
                )
    assert not too_long, "\n".join(too_long)
