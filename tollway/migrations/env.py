"""Alembic environment: always handed a connection by ``tollway.migrate`` (which holds the
migration lock on it), never run from an ``alembic.ini``."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from tollway import tables  # noqa: F401 - registers the tables on SQLModel.metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
