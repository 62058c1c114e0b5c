"""Temporal workflow code. Modules here do nothing at import time (sandbox-safe)."""

DEFAULT_TASK_QUEUE = "tollway-executions"
