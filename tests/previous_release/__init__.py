"""Code of an earlier release, kept verbatim to build the databases it made (see
``tests/test_migrations.py``). Never imported by the suite itself: a fresh interpreter loads it,
because its models would clash with today's on ``SQLModel.metadata``."""
