"""``tollway migrate`` as an operator runs it (a real process) on the suite's kind of database:
from empty, from a database the previous release made, twice, four at once; and the servers
refuse a database that was not migrated."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import make_url, text
from sqlmodel import SQLModel

from tests.helpers import CLIENT_TOKEN_SECRET, PAYLOAD_KEYS, SECRETS_KEY, WEBHOOK_SECRET
from tests.processes import TOLLWAY
from tollway.db import make_engine
from tollway.migrate import VERSION_TABLE, head_revision

PREVIOUS_RELEASE = Path(__file__).parent / "previous_release" / "tables_2026_11_29.py"


@pytest.fixture
def blank_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of the suite's kind with nothing in it: a new SQLite file, or a new
    PostgreSQL database beside the suite's own, dropped afterwards."""
    if not database_url.startswith("postgres"):
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    name = f"tollway_migrate_{uuid.uuid4().hex[:12]}"
    admin = make_engine(database_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin.url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _tollway(url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TOLLWAY, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": url,
            "TEMPORAL_ADDRESS": "127.0.0.1:1",
            **env,
        },
    )


def migrate_json(url: str) -> dict[str, Any]:
    out, err = _tollway(url, "migrate", "--json").communicate(timeout=120)
    assert err == "" or "Traceback" not in err, err
    return json.loads(out)  # type: ignore[no-any-return]


def schema_differences(url: str) -> list[Any]:
    """What today's models have that the database lacks, or the other way round."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return [
                diff
                for diff in compare_metadata(context, SQLModel.metadata)
                if not (diff[0] == "remove_table" and diff[1].name == VERSION_TABLE)
            ]
    finally:
        engine.dispose()


def version_rows(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text(f"SELECT * FROM {VERSION_TABLE}"))]
    finally:
        engine.dispose()


def test_migrate_builds_todays_schema_from_empty_and_twice_is_a_no_op(blank_url: str) -> None:
    head = head_revision()
    assert migrate_json(blank_url) == {"before": None, "after": head, "adopted": False}
    assert schema_differences(blank_url) == []
    assert migrate_json(blank_url) == {"before": head, "after": head, "adopted": False}
    assert version_rows(blank_url) == [head]


def test_migrate_upgrades_a_database_the_previous_release_made(blank_url: str) -> None:
    """The previous release's own models build the database (``create_all``, as it did) and
    write rows; migrate adopts it at the revision of those tables and upgrades it, keeping
    every row."""
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        from datetime import UTC, datetime
        from sqlmodel import Session, SQLModel
        from tollway.db import make_engine
        spec = importlib.util.spec_from_file_location("previous_tables", {str(PREVIOUS_RELEASE)!r})
        old = sys.modules["previous_tables"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        engine = make_engine({blank_url!r})
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(old.Organization(id="org_prev", name="Previous"))
            session.flush()
            session.add(old.ApiToken(id="tok_prev", organization_id="org_prev",
                token_hash="h" * 64, token_prefix="tw_prev", scopes=["public_execute"],
                rate_limit="10/second"))
            session.add(old.Order(id="ord_prev", execution_id="exe_prev",
                organization_id="org_prev", workflow_id="wf_prev", workflow_version=1,
                amount=500, currency="usd", status="paid", provider="local"))
            session.commit()
        print(sorted(SQLModel.metadata.tables))
        """
    )
    made = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    assert "org_secret" not in made.stdout and "order" in made.stdout  # really the old schema

    assert migrate_json(blank_url) == {"before": "0001", "after": head_revision(), "adopted": True}
    assert schema_differences(blank_url) == []
    engine = make_engine(blank_url)
    try:
        with engine.connect() as connection:
            kept = connection.execute(
                text('SELECT o.name, t.rate_limit, r.amount, r.status FROM organization o '
                     'JOIN api_token t ON t.organization_id = o.id '
                     'JOIN "order" r ON r.organization_id = o.id')
            ).all()  # fmt: skip
            assert [tuple(row) for row in kept] == [("Previous", "10/second", 500, "paid")]
            connection.execute(  # the table this release added is there and usable
                text(
                    "INSERT INTO org_secret VALUES ('org_prev', 'KEY', 'x', '[]', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            connection.commit()
    finally:
        engine.dispose()


def test_migrate_adopts_tables_made_by_create_all_of_this_release(blank_url: str) -> None:
    engine = make_engine(blank_url)
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    head = head_revision()
    assert migrate_json(blank_url) == {"before": head, "after": head, "adopted": True}
    assert version_rows(blank_url) == [head]


def test_concurrent_migrations_wait_for_each_other(blank_url: str, tmp_path: Path) -> None:
    """Six runs released together (each waits, imported, for the same file to appear), so
    their migrations overlap: without the lock some of them fail creating the same tables."""
    go = tmp_path / "go"
    released = (
        "import pathlib, time\n"
        "from tollway.cli import main\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.001)\n"
        "main(['migrate', '--json'])\n"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", released],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin", "DATABASE_URL": blank_url},
        )
        for _ in range(6)
    ]
    time.sleep(3)  # every process imported and waiting
    go.touch()
    results = []
    for run in runs:
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
        results.append(json.loads(out))
    head = head_revision()
    assert sorted(r["before"] or "" for r in results) == ["", head, head, head, head, head]
    assert {r["after"] for r in results} == {head}
    assert version_rows(blank_url) == [head]
    assert schema_differences(blank_url) == []


SERVER_ENV = {
    "TOLLWAY_CLIENT_TOKEN_SECRET": CLIENT_TOKEN_SECRET,
    "TOLLWAY_LOCAL_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "TOLLWAY_PAYLOAD_KEYS": PAYLOAD_KEYS,
    "TOLLWAY_SECRETS_KEY": SECRETS_KEY,
}


@pytest.mark.parametrize(
    "command", [("api",), ("worker",), ("admin", "org", "list")], ids=lambda c: c[0]
)
def test_servers_and_admin_refuse_a_database_that_was_not_migrated(
    blank_url: str, command: tuple[str, ...]
) -> None:
    run = _tollway(blank_url, *command, **SERVER_ENV)
    _out, err = run.communicate(timeout=60)
    assert run.returncode == 2, err
    [line] = err.strip().splitlines()
    assert "not set up" in line and "run `tollway migrate`" in line, line
    engine = make_engine(blank_url)
    try:
        with engine.connect() as connection:  # and made nothing
            assert MigrationContext.configure(connection).get_current_revision() is None
            assert not connection.dialect.has_table(connection, "organization")
    finally:
        engine.dispose()
