"""CPU that other work took from the machine while a cell ran: figures taken on a busy machine
(a test suite running beside the benchmark, say) are not comparable, and the report says so.

"Ours" is the runner's own process tree (servers, their workers, wrk) and the PostgreSQL
backends of the benchmark database; PostgreSQL's shared helpers (checkpointer, WAL writer, …)
and kernel threads are counted for nobody; everything else is foreign. Processes that start and
end between two snapshots escape the count, so it is a lower bound.
"""

from __future__ import annotations

import contextlib
import os

import psutil


class ForeignCpu:
    def __init__(self, database: str) -> None:
        self.database = database
        self._runner = os.getpid()
        self._start: dict[int, float] = {}

    def _ours(self) -> set[int]:
        try:
            runner = psutil.Process(self._runner)
            return {self._runner, *(p.pid for p in runner.children(recursive=True))}
        except psutil.Error:
            return {self._runner}

    def _is_foreign(self, proc: psutil.Process, ours: set[int]) -> bool:
        if proc.pid in ours:
            return False
        cmdline = " ".join(proc.info.get("cmdline") or ())
        if not cmdline:
            return False  # kernel threads
        if cmdline.startswith("postgres:"):
            # "postgres: 15/main: user db host(port) state", "… autovacuum worker db"
            parts = cmdline.split()
            backend = len(parts) >= 5 and ("(" in parts[4] or parts[4] == "[local]")
            return backend and parts[3] != self.database
        return True

    def snapshot(self) -> dict[int, float]:
        """CPU seconds so far of every foreign process, by pid."""
        ours = self._ours()
        out = {}
        for proc in psutil.process_iter(["cmdline", "cpu_times"]):
            with contextlib.suppress(psutil.Error):
                if self._is_foreign(proc, ours):
                    times = proc.info["cpu_times"]
                    if times is not None:
                        out[proc.pid] = times.user + times.system
        return out

    def start(self) -> None:
        self._start = self.snapshot()

    def seconds(self) -> float:
        """Foreign CPU seconds since `start`."""
        end = self.snapshot()
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in end.items())
