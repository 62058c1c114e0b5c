"""Temporal activities: every side effect of an execution lives here."""
