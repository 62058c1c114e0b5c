"""Shared pieces of Tollway: settings, database tables, definitions and the CLI."""
