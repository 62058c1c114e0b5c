"""Schema migrations (alembic): ``tollway migrate`` brings the database to this release's
schema; servers only check that it is there and never create tables themselves.

Safe to run twice (a database at head is left alone) and concurrently: on PostgreSQL the run
holds an advisory lock, on SQLite an exclusive lock on a file beside the database, so a second
run waits and then finds nothing to do. A database made by the releases that created their
tables with ``create_all`` (no ``alembic_version``) is stamped at the revision whose tables it
has, then upgraded from there.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = Path(__file__).parent / "migrations"
#: Any constant both runs agree on: the key of PostgreSQL's advisory lock.
_PG_LOCK_KEY = 0x70_11_3A_1
VERSION_TABLE = "alembic_version"


class SchemaNotCurrent(RuntimeError):
    """The database is not at this release's schema; the message says what to run."""


@dataclass(frozen=True)
class Migrated:
    before: str | None  # None: an empty database
    after: str
    adopted: bool  # tables made by create_all, stamped before upgrading


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _legacy_revision(connection: Connection) -> str | None:
    """The newest revision all of whose marker tables exist, for a database without
    ``alembic_version``; None when it has none of Tollway's tables (an empty database)."""
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables:
        return None
    scripts = _scripts()
    found: str | None = None
    for script in reversed(list(scripts.walk_revisions())):  # oldest first
        if getattr(script.module, "MARKER_TABLE", None) in tables:
            found = script.revision
        else:
            break
    return found


@contextmanager
def _exclusive(engine: Engine, connection: Connection) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
        connection.commit()  # the session-level lock outlives this transaction
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
            connection.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def migrate(engine: Engine) -> Migrated:
    """Upgrade the database to head, holding the migration lock."""
    with engine.connect() as connection, _exclusive(engine, connection):
        legacy = _legacy_revision(connection)
        config = _config(connection)
        if legacy is not None:
            command.stamp(config, legacy)
            connection.commit()
        before = current_revision(connection)
        command.upgrade(config, "head")
        connection.commit()
        return Migrated(before=before, after=head_revision(), adopted=legacy is not None)


def require_current(engine: Engine) -> None:
    """Raise :class:`SchemaNotCurrent` unless the database is at this release's schema."""
    with engine.connect() as connection:  # read directly: alembic's context logs at INFO
        found = (
            connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
            if inspect(connection).has_table(VERSION_TABLE)
            else None
        )
    head = head_revision()
    if found != head:
        at = f"at revision {found}" if found else "not set up"
        raise SchemaNotCurrent(
            f"the database schema is {at}; this release needs {head}: run `tollway migrate`"
        )
