"""Alembic migrations of the database, run by ``tollway migrate`` (``tollway.migrate``)."""
