"""`make bench-scale`: how Tollway holds up as executions pile up, with the API and the worker
run as a deployment runs them (`tollway api`, `tollway worker`: JSON and access logs written,
Redis-backed rate limits, the worker's metrics port on).

Parks executions awaiting payment (priced, never paid: each an open workflow with its checkout)
in steps up to ``BENCH_PARKED`` (10 000), and at each level measures the HTTP create's p50 and
the worker's and the API's resident memory. At the last level it runs `make bench`'s two
comparisons with the raw Temporal client (create throughput, view p50). Not part of the tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.run import (
    CONCURRENCY,
    _drive,
    _pct,
    compare_creates,
    compare_views,
    creator,
    report_lines,
    stack,
)

LEVELS = [int(n) for n in os.environ.get("BENCH_PARKED", "0,5000,10000").split(",")]
PROBES = int(os.environ.get("BENCH_PROBES", "200"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main() -> None:
    rows = []
    async with stack(production=True) as s:
        park = creator(s, s.priced_id)
        parked = 0
        await _drive(64, 8, creator(s))  # warm
        for level in LEVELS:
            if level > parked:
                await _drive(level - parked, CONCURRENCY, park)
                parked = level
            _rate, latencies = await _drive(PROBES, 8, creator(s))
            rows.append(
                f"  {parked:6d} parked   create p50 {_pct(latencies, 0.5):6.1f} ms"
                f"  p99 {_pct(latencies, 0.99):6.1f} ms   worker RSS {rss_mib(s.worker.pid):6.1f}"
                f" MiB   API RSS {rss_mib(s.api.pid):6.1f} MiB"
            )
            print(rows[-1], flush=True)
        creates = await compare_creates(s)
        views = await compare_views(s)
    print(f"executions parked awaiting payment (create probes: {PROBES} at concurrency 8):")
    print("\n".join(rows))
    print(f"at {parked} parked, API and worker under production settings:")
    print("\n".join(report_lines(creates, views)))


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
    sys.stdout.flush()
    os._exit(0)  # sdk-python#300: avoid the interpreter-exit crash after a client was used
