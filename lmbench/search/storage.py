"""Where a search's Optuna study lives, chosen from the MLflow store so that the two travel together.

    MLflow store                      Optuna study
    sqlite:///<dir>/mlflow.db         journal file <dir>/optuna/<study>.journal
    postgresql[+driver]://.../db      the same database, in its own schema `optuna`
    anything else (an mlflow server,  journal file <launch dir>/optuna/<study>.journal
    a file store, MySQL, Databricks)

`hydra.sweeper.storage` overrides the choice: a SQLAlchemy URL (Optuna's RDBStorage) or a path
(a journal file). A journal file rather than a sqlite database beside a sqlite store: Optuna's
journal takes a file lock per write and is its documented storage for several processes on one
machine, where sqlite answers "database is locked" under parallel writers. Optuna's tables go into
a schema of their own in PostgreSQL because both Optuna and MLflow keep their schema version in an
Alembic table named `alembic_version`: in one schema each would read the other's revision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lmbench.paths import redact

JOURNAL_FOLDER = "optuna"
POSTGRES_SCHEMA = "optuna"


@dataclass(frozen=True)
class StudyStorage:
    kind: str  # "journal" (a file) or "rdb" (a SQLAlchemy URL)
    location: str  # the journal file's absolute path, or the database URL
    schema: str | None = None  # PostgreSQL: the schema Optuna's tables live in

    def __str__(self) -> str:
        if self.kind == "journal":
            return f"journal file {self.location}"
        return f"database {redact(self.location)}" + (f" (schema {self.schema})" if self.schema else "")


def choose_storage(configured: str | None, tracking_uri: str, study_name: str, launch_dir: Path) -> StudyStorage:
    """The study's storage (table above); pure: nothing is created here."""
    if configured:
        if "://" in configured:
            return StudyStorage("rdb", configured)
        return StudyStorage("journal", str((Path(launch_dir) / Path(configured).expanduser()).resolve()))
    scheme = tracking_uri.partition("://")[0].split("+", 1)[0].lower() if "://" in tracking_uri else ""
    if scheme == "sqlite" and tracking_uri.startswith("sqlite:///"):
        folder = (Path(launch_dir) / tracking_uri[len("sqlite:///"):]).parent
    elif scheme == "postgresql":
        return StudyStorage("rdb", tracking_uri, POSTGRES_SCHEMA)
    else:
        folder = Path(launch_dir)
    return StudyStorage("journal", str((folder / JOURNAL_FOLDER / f"{_file_name(study_name)}.journal").resolve()))


def open_storage(storage: StudyStorage):
    """The Optuna storage object (the journal's folder, or the PostgreSQL schema, created first)."""
    import optuna

    if storage.kind == "journal":
        Path(storage.location).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage.location))
    engine_kwargs = {}
    if storage.schema is not None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(storage.location)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{storage.schema}"'))
        engine.dispose()
        engine_kwargs = {"connect_args": {"options": f"-csearch_path={storage.schema}"}}
    return optuna.storages.RDBStorage(storage.location, engine_kwargs=engine_kwargs)


def _file_name(study_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", study_name)
