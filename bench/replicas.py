"""Q2 on one primary, on the primary plus one streaming standby, and with 1 and 2 workers.

    .venv/bin/python -m bench.replicas [--duration S] [--warmup S]

Starts a primary and a standby from the PostgreSQL server binaries on the machine
(tests/replication.py, as the replica tests do), loads the benchmark data into the primary
(`bench.data`), waits until the standby has it, then runs `bench.run --configs on
--queries Q2` three times: the primary alone (1 worker), the primary with the standby as
`REPLICA_URL` (1 worker), and the primary alone with 2 workers (Redis at
`BENCH_REDIS_URL`, as `bench.run --workers`). One machine holds everything, so the
standby adds no capacity: the second figure against the first is the routing's cost
(choosing a server, a standby's own pool), not the gain a standby on its own host
brings. Each cell's report is written to `bench/results/<date>-<host>-replicas-<cell>.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import url_text
from tests.replication import ReplicatedServer

DATABASE = "marketgraph_bench"
RESULTS = Path(__file__).parent / "results"


def _run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True)


async def bench(duration: float, warmup: float) -> None:
    async with ReplicatedServer(replicas=1) as server:
        primary = url_text(server.primary_url.set(database=DATABASE))
        standby = url_text(server.replica_urls[0]).rsplit("/", 1)[0]  # the store's database
        await asyncio.to_thread(_run, "bench.data", "--database-url", primary)
        await server.wait_caught_up(0)
        stem = f"{dt.date.today():%Y-%m-%d}-{socket.gethostname()}-replicas"
        cells = {
            "primary": [],
            "primary-and-standby": ["--server-env", f"REPLICA_URL={standby}"],
            "primary-2-workers": ["--workers", "2"],
        }
        for cell, extra in cells.items():
            await asyncio.to_thread(
                _run,
                "bench.run",
                "--configs=on",
                "--queries=Q2",
                f"--duration={duration}",
                f"--warmup={warmup}",
                f"--database-url={primary}",
                f"--output={RESULTS / f'{stem}-{cell}.md'}",
                *extra,
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (3)")
    args = parser.parse_args()
    asyncio.run(bench(args.duration, args.warmup))


if __name__ == "__main__":
    main()
