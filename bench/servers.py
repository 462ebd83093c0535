"""The servers under test as subprocesses on loopback: started, awaited, watched, always stopped.

Each server runs in a process group of its own, so stopping it (SIGTERM, then
SIGKILL after a grace period) also stops its uvicorn workers; `ServerProcess`
is an async context manager, so every exit path — an error, Ctrl-C, SIGTERM to
the runner — stops what it started. The peer, PostGraphile, is one Node.js
process (bench/postgraphile/server.js) started the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from bench import peer
from bench.common import JWT_SECRET, BenchError
from marketgraph.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 90.0
STOP_GRACE_S = 15.0


@dataclass(frozen=True, slots=True)
class Config:
    """One column of the benchmark: the GraphQL server with the planner on or off, the floor,
    or the peer (PostGraphile)."""

    name: str  # on | off | floor | postgraphile
    label: str

    @property
    def is_floor(self) -> bool:
        return self.name == "floor"

    @property
    def is_peer(self) -> bool:
        """PostGraphile: its own documents and tokens, no /metrics, one Node.js process."""
        return self.name == peer.NAME


CONFIGS = {
    "on": Config("on", "planner on"),
    "off": Config("off", "planner off"),
    "floor": Config("floor", "asyncpg floor"),
    peer.NAME: Config(peer.NAME, "PostGraphile"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(
    database_url: str,
    planner: str,
    data_dir: Path,
    redis_url: str | None,
    extra: dict[str, str] | None = None,
    defaults_only: bool = False,
) -> dict[str, str]:
    """The environment of a server under test: ours, minus every database placement and
    Redis, plus the benchmark's settings. `defaults_only` also drops every other setting
    the runner's environment holds (DB_POOL_SIZE, MAX_IN_FLIGHT, …): a measurement that
    claims the project's defaults must not inherit a developer's overrides."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {
        k: v
        for k, v in os.environ.items()
        if "DATABASE_URL" not in k.upper()
        and not k.upper().startswith("REDIS_URL")
        and not (defaults_only and k.upper() in settings)
    }
    env.update(
        DATABASE_URL=database_url,
        ENVIRONMENT="development",
        JWT_SECRET=JWT_SECRET,
        LOG_LEVEL="WARNING",
        QUERY_PLANNER=planner,
        DATA_DIR=str(data_dir),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


def peer_env(database_url: str) -> dict[str, str]:
    """PostGraphile's environment: ours without database placements or Redis, plus the
    benchmark database, the servers' JWT_SECRET (it verifies the runner's tokens) and
    NODE_ENV=production."""
    env = {
        k: v
        for k, v in os.environ.items()
        if "DATABASE_URL" not in k.upper() and not k.upper().startswith("REDIS_URL")
    }
    env.update(DATABASE_URL=database_url, JWT_SECRET=JWT_SECRET, NODE_ENV="production")
    return env


@dataclass(slots=True)
class ServerProcess:
    """`python -m marketgraph serve`, `python -m bench.floor` or PostGraphile's
    `node bench/postgraphile/server.js` on 127.0.0.1:port."""

    config: Config
    database_url: str
    workers: int = 1
    redis_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # GraphQL servers only
    defaults_only: bool = False  # no settings inherited from the runner's environment
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.config.is_peer:
            return [
                peer.node() or "node",
                str(peer.SERVER_JS),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
        module = "bench.floor" if self.config.is_floor else "marketgraph"
        args = [sys.executable, "-m", module]
        if not self.config.is_floor:
            args.append("serve")
        return [
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def _spawn(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{self.config.name}-")
        if self.config.is_peer:
            env = peer_env(self.database_url)
        else:
            planner = "off" if self.config.is_floor else self.config.name
            extra = {} if self.config.is_floor else self.extra_env
            env = server_env(
                self.database_url,
                planner,
                Path(self._tmp.name),
                self.redis_url,
                extra,
                defaults_only=self.defaults_only,
            )
        with Path(self._tmp.name, "server.log").open("wb") as log:
            # A process group of its own: stopping it stops its workers, and only them.
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def __aenter__(self) -> ServerProcess:
        try:
            self._spawn()
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def log_text(self) -> str:
        """Everything the server wrote so far (its log lives in a directory `stop` removes)."""
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name, "server.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    async def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BenchError(
                        f"{self.config.label} exited with {self.process.returncode} on start:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.base_url + "/health")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise BenchError(
            f"{self.config.label} not ready in {STARTUP_TIMEOUT_S:g} s:\n{self.log_tail()}"
        )

    def processes(self) -> list[psutil.Process]:
        """The server and its workers (children), as far as they are still alive."""
        if self.process is None or self.process.poll() is not None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            # The group is the server's own (start_new_session): it and its workers only.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class ResourceSampler:
    """Samples the summed RSS of a server's processes every `interval` s while running, and
    their CPU time, so a cell reports its peak memory and CPU per request."""

    def __init__(self, server: ServerProcess, interval: float = 0.1) -> None:
        self.server = server
        self.interval = interval
        self.peak_rss = 0
        self._task: asyncio.Task[None] | None = None

    def rss(self) -> int:
        total = 0
        for proc in self.server.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.server.processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    async def settle(self, limit: float = 120.0, window: float = 0.3) -> None:
        """Wait until the server is idle: a load generator that stops abandons the requests in
        flight, and the server still works them off; measuring on top of them would not do."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = self.cpu_seconds()
            await asyncio.sleep(window)
            if self.cpu_seconds() - before < 0.05 * window:
                return

    async def _run(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, self.rss())
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.peak_rss = self.rss()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.peak_rss = max(self.peak_rss, self.rss())
        return self.peak_rss
