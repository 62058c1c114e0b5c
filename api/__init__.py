"""The public HTTP API: thin Starlette handlers over the execution service."""
