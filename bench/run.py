"""The benchmark runner: every query against planner on, planner off, the floor and PostGraphile.

    python -m bench.run [--duration 10] [--warmup 3] [--connections 16] [--workers 1] ...
                        (python -m bench.run --help lists every flag)

Needs the data of `python -m bench.data` in the benchmark database. For each
configuration, one at a time, it starts the server (`python -m marketgraph
serve`, QUERY_PLANNER=on/off), the floor (`python -m bench.floor`) or the peer,
PostGraphile v4 (`node bench/postgraphile/server.js`, `bench.peer`; installed with
`npm ci` on first use, skipped without Node.js) on loopback and:

1. **Probe**: with the server's DATABASE_URL pointed at a statement-counting
   proxy (`bench.pgproxy`), sends each query a few times, checks the answer —
   no errors, the expected sizes, and byte for byte the same body as the first
   configuration's (the floor included; PostGraphile's answers, which have other
   names, must hold the same values): a mismatch stops the run — then sends
   `--probe-requests` more and divides the statements per store by them.
2. **Load**: restarts it directly on PostgreSQL and drives each query with wrk
   (or the asyncio client): `--warmup` seconds, then `--duration` measured
   seconds, sampling the server processes' RSS and CPU, and reading the
   server's `/metrics` statement histogram (the floor's own `/stats`), the
   database's session count and the CPU other work on the machine took, before
   and after. After each load the runner waits for the server to go idle (the
   requests a stopped load generator abandons are still being worked off).

With `--hostile` (or `--hostile-only`, which skips 1 and 2) it then measures
hostile load (`bench.hostile`): a probe query's latency while three client
processes send the worst documents, and 200 connections at the project's
defaults.

Before the probes and before each cell it waits (at most `--quiet-wait`
seconds) for the machine to be free of other work.

Then writes the Markdown report to bench/results/<date>-<host>.md (raw numbers
as JSON to bench/results/raw/), and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.engine import URL

from bench import peer
from bench.common import JWT_SECRET, BenchError, database_url, plain_url
from bench.hostile import Bench, HostileResult, StressResult, measure_hostile, measure_stress
from bench.loadgen import LoadResult, Target, run_load, wrk_available
from bench.machine import ForeignCpu
from bench.pgproxy import CountingProxy
from bench.queries import QUERIES, Query
from bench.report import MAX_FOREIGN_CPU_PCT, render
from bench.servers import CONFIGS, ROOT, Config, ResourceSampler, ServerProcess
from marketgraph.auth.tokens import TokenService
from marketgraph.ids import encode_id
from marketgraph.settings import Settings

RESULTS = ROOT / "bench" / "results"
LOAD_QUERIES = ("Q1", "Q2", "Q3", "Q4")
PROBE_QUERIES = ("Q1", "Q2", "Q2/10", "Q3", "Q4")
TOKEN_TTL_S = 24 * 3600


@dataclass(slots=True)
class Probe:
    """What one configuration answered to one query, and what it cost in statements."""

    body: bytes
    statements: dict[str, float]  # per store per request, from the proxy (`other` included)
    self_counted: dict[str, float] | None = None  # the floor's own count


@dataclass(slots=True)
class Cell:
    query: str
    config: str
    load: LoadResult
    peak_rss_mib: float
    cpu_ms_per_request: float
    metrics_statements: float | None  # /metrics (server) or /stats (floor), under load
    sessions_opened: int  # PostgreSQL sessions begun during the measured run (pool churn)
    foreign_cpu_pct: float  # CPU other work on the machine took during the run, % of one core


@dataclass(slots=True)
class Run:
    started: dt.datetime
    machine: dict[str, str]
    settings: dict[str, Any]
    probes: dict[str, dict[str, Probe]] = field(default_factory=dict)  # config -> query -> probe
    cells: list[Cell] = field(default_factory=list)
    hostile: HostileResult | None = None  # --hostile: the probe under attack
    stress: StressResult | None = None  # --hostile: 200 connections at the defaults
    seconds: float = 0.0


# --- the machine --------------------------------------------------------------------------------


def _proc_value(path: str, key: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return "?"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


async def connect(url: URL) -> asyncpg.Connection:
    try:
        conn: asyncpg.Connection = await asyncpg.connect(plain_url(url))
    except (OSError, asyncpg.PostgresError) as exc:
        where = url.render_as_string(hide_password=True)
        raise BenchError(f"cannot use {where} ({exc}): run `python -m bench.data` first") from None
    return conn


async def machine_info(url: URL) -> dict[str, str]:
    conn = await connect(url)
    try:
        pg = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    mem_kib = _proc_value("/proc/meminfo", "MemTotal").split()[0]
    dirty = _git("status", "--porcelain", "--", "marketgraph")
    versions = []
    for package in (
        "strawberry-graphql",
        "graphql-core",
        "starlette",
        "uvicorn",
        "sqlalchemy",
        "asyncpg",
    ):
        with contextlib.suppress(PackageNotFoundError):
            versions.append(f"{package} {version(package)}")
    return {
        "host": socket.gethostname(),
        "cpu": _proc_value("/proc/cpuinfo", "model name"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "ram": f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else "?",
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": str(pg),
        "commit": _git("rev-parse", "--short", "HEAD")
        + (" + uncommitted changes" if dirty else ""),
        "packages": ", ".join(versions),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min) at start",
    }


# --- callers and requests -----------------------------------------------------------------------


async def find_callers(url: URL) -> tuple[uuid.UUID, uuid.UUID]:
    """(member, admin) of KG: the admin the loader made, and the first other user whose cart
    holds at least 3 items."""
    conn = await connect(url)
    try:
        try:
            admin = await conn.fetchval(
                "SELECT id FROM kg_auth.users WHERE user_type = 'ADMIN' ORDER BY id LIMIT 1"
            )
            member = await conn.fetchval(
                "SELECT c.user_id FROM kg_app.carts c JOIN kg_app.cart_items i ON i.cart_id = c.id "
                "WHERE c.user_id <> $1 GROUP BY c.user_id HAVING count(*) >= 3 "
                "ORDER BY c.user_id LIMIT 1",
                admin,
            )
            users = await conn.fetchval("SELECT count(*) FROM kg_auth.users")
        except asyncpg.UndefinedTableError:
            admin = member = None
            users = 0
    finally:
        await conn.close()
    if admin is None or member is None or users < 50:
        raise BenchError("no benchmark data: run `python -m bench.data` first")
    return member, admin


def build_requests(
    url: URL, member: uuid.UUID, admin: uuid.UUID
) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Body and headers of each query; tokens minted with the servers' JWT_SECRET."""
    settings = Settings.from_env(
        database_urls={"DATABASE_URL": plain_url(url)},
        jwt_secret=JWT_SECRET,
        access_token_ttl=TOKEN_TTL_S,
    )
    tokens = TokenService.from_settings(settings)
    bearer = {
        "member": tokens.issue(encode_id("User", "kg", member), "kg", ["member"]).token,
        "admin": tokens.issue(encode_id("User", "kg", admin), "kg", ["admin", "member"]).token,
    }
    out = {}
    for name, query in QUERIES.items():
        headers = {"Content-Type": "application/json"}
        if query.caller == "anonymous":
            headers["X-Market"] = "kg"
        else:
            headers["Authorization"] = f"Bearer {bearer[query.caller]}"
        out[name] = (orjson.dumps({"query": query.document}), headers)
    return out


# --- probing: answers and statements --------------------------------------------------------------


def _check_answer(query: Query, body: bytes, peer: bool = False) -> None:
    """An answer worth measuring: data, no errors, the sizes the data set guarantees (the
    peer's documents name the cart's items and the transactions its own way)."""
    items, transactions = (
        ("cartItemsList", "walletTransactions") if peer else ("items", "transactions")
    )
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BenchError(f"{query.name}: not JSON: {body[:300]!r}") from None
    if answer.get("errors") or not answer.get("data"):
        raise BenchError(f"{query.name}: error answer: {body[:600].decode(errors='replace')}")
    data = answer["data"]
    if query.caller == "member":
        viewer = data.get("viewer")
        if not viewer:
            raise BenchError(
                f"{query.name}: viewer is null (for the peer: is the token's sub set?)"
            )
        if query.name == "Q1" and (
            len(viewer["cart"][items]) < 3 or not viewer[transactions]["edges"]
        ):
            raise BenchError(f"{query.name}: the member has no cart items or transactions")
        if query.name == "Q4" and not viewer["orders"]["edges"]:
            raise BenchError(f"{query.name}: the member has no orders")
    else:
        root = data["users"] if query.caller == "admin" else data["products"]
        if len(root["edges"]) != query.first:
            raise BenchError(f"{query.name}: {len(root['edges'])} edges, expected {query.first}")


def first_difference(a: Any, b: Any, path: str = "data") -> str:
    """Where two JSON values first differ (key order included), for a loud, useful failure."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            if a[key] != b[key] or orjson.dumps(a[key]) != orjson.dumps(b[key]):
                return first_difference(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if orjson.dumps(x) != orjson.dumps(y):
                return first_difference(x, y, f"{path}[{i}]")
    return f"{path}: {orjson.dumps(a)[:200]!r} != {orjson.dumps(b)[:200]!r}"


async def _post(http: httpx.AsyncClient, base: str, body: bytes, headers: dict[str, str]) -> bytes:
    response = await http.post(base + "/graphql", content=body, headers=headers)
    if response.status_code != 200:
        raise BenchError(f"HTTP {response.status_code}: {response.text[:500]}")
    return response.content


async def _floor_stats(http: httpx.AsyncClient, base: str) -> Counter[str]:
    raw = orjson.loads((await http.get(base + "/stats")).content)
    return Counter({k: int(v) for k, v in raw["statements"].items()})


async def probe(
    server: ServerProcess,
    proxy: CountingProxy,
    requests: dict[str, tuple[bytes, dict[str, str]]],
    repeats: int,
) -> dict[str, Probe]:
    try:
        return await _probe(server, proxy, requests, repeats)
    except BenchError as exc:
        raise BenchError(
            f"{server.config.label}: {exc}\nserver log:\n{server.log_tail()}"
        ) from None


async def _probe(
    server: ServerProcess,
    proxy: CountingProxy,
    requests: dict[str, tuple[bytes, dict[str, str]]],
    repeats: int,
) -> dict[str, Probe]:
    out = {}
    async with httpx.AsyncClient(timeout=60.0) as http:
        for name in PROBE_QUERIES:
            body, headers = requests[name]
            query = QUERIES[name]
            answers = {await _post(http, server.base_url, body, headers) for _ in range(3)}
            if len(answers) != 1:
                raise BenchError(
                    f"{server.config.label} {name}: the answer changes between requests"
                )
            (answer,) = answers
            if server.config.is_peer:
                _check_answer(query, answer, peer=True)
            else:
                _check_answer(query, answer)
            before = await _floor_stats(http, server.base_url) if server.config.is_floor else None
            proxy.reset()
            for _ in range(repeats):
                await _post(http, server.base_url, body, headers)
            counts = Counter(proxy.counts)
            statements = {store: n / repeats for store, n in sorted(counts.items())}
            self_counted = None
            if before is not None:
                after = await _floor_stats(http, server.base_url)
                self_counted = {k: v / repeats for k, v in sorted((after - before).items())}
                stores = {k: v for k, v in statements.items() if k != "other"}
                if stores != self_counted:
                    raise BenchError(
                        f"floor {name}: counted {self_counted}, the proxy saw {stores}"
                    )
            out[name] = Probe(answer, statements, self_counted)
    return out


def compare(
    reference: dict[str, Probe], label: str, probes: dict[str, Probe], ref_label: str
) -> None:
    """Byte for byte: every marketgraph configuration and the floor give the same answers."""
    for name, found in probes.items():
        expected = reference[name].body
        if found.body != expected:
            where = first_difference(
                orjson.loads(expected)["data"], orjson.loads(found.body)["data"]
            )
            raise BenchError(
                f"{name}: {label} answers differently from {ref_label}: {where}\n"
                "the comparison would be meaningless; fix the difference first"
            )


def compare_peer(reference: dict[str, Probe], ref_label: str, probes: dict[str, Probe]) -> None:
    """PostGraphile's answers hold the values of the reference's, in the same order."""
    for name, found in probes.items():
        where = peer.compare_values(QUERIES[name], reference[name].body, found.body)
        if where is not None:
            raise BenchError(
                f"{name}: PostGraphile's answer holds other data than {ref_label}'s: {where}\n"
                "its document (bench/queries.py) must select the same data"
            )


# --- load -----------------------------------------------------------------------------------------


async def _statement_histogram(http: httpx.AsyncClient, base: str) -> tuple[float, float]:
    """(sum, count) of marketgraph_sql_statements_per_request for /graphql."""
    text = (await http.get(base + "/metrics")).text
    values = {}
    for kind in ("sum", "count"):
        match = re.search(
            rf'^marketgraph_sql_statements_per_request_{kind}\{{route="/graphql"\}} (\S+)$',
            text,
            re.MULTILINE,
        )
        values[kind] = float(match.group(1)) if match else 0.0
    return values["sum"], values["count"]


async def _statements_so_far(http: httpx.AsyncClient, server: ServerProcess) -> tuple[float, float]:
    if server.config.is_floor:
        raw = orjson.loads((await http.get(server.base_url + "/stats")).content)
        return float(sum(raw["statements"].values())), float(raw["requests"])
    return await _statement_histogram(http, server.base_url)


async def _sessions(pg: asyncpg.Connection) -> int:
    """Sessions ever begun in the benchmark database (pg_stat_database.sessions)."""
    value = await pg.fetchval(
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(value or 0)


async def measure(
    pg: asyncpg.Connection,
    foreign: ForeignCpu,
    server: ServerProcess,
    name: str,
    request: tuple[bytes, dict[str, str]],
    args: argparse.Namespace,
) -> Cell:
    body, headers = request
    target = Target("127.0.0.1", server.port, "/graphql", body, headers)
    sampler = ResourceSampler(server)
    # Per-process registries: with several workers /metrics shows one of them, so skip it.
    # PostGraphile counts nothing of its own: the probe's proxy count is all there is.
    per_process = args.workers == 1 and not server.config.is_peer
    async with httpx.AsyncClient(timeout=30.0) as http:
        sampler.start()
        try:
            if args.warmup > 0:
                await run_load(
                    target,
                    client=args.client,
                    connections=args.connections,
                    threads=args.threads,
                    seconds=args.warmup,
                )
                await sampler.settle()
            before = await _statements_so_far(http, server) if per_process else None
            sessions_before = await _sessions(pg)
            foreign.start()
            cpu_before = sampler.cpu_seconds()
            result = await run_load(
                target,
                client=args.client,
                connections=args.connections,
                threads=args.threads,
                seconds=args.duration,
            )
            cpu = sampler.cpu_seconds() - cpu_before
            foreign_s = foreign.seconds()
            sessions = await _sessions(pg) - sessions_before
            await sampler.settle()
            after = await _statements_so_far(http, server) if per_process else None
        finally:
            peak = await sampler.stop()
    metrics = None
    if before is not None and after is not None and after[1] > before[1]:
        metrics = (after[0] - before[0]) / (after[1] - before[1])
    if server.process is None or server.process.poll() is not None:
        raise BenchError(f"{server.config.label} died under load:\n{server.log_tail()}")
    return Cell(
        query=name,
        config=server.config.name,
        load=result,
        peak_rss_mib=peak / 2**20,
        cpu_ms_per_request=cpu * 1000 / result.requests if result.requests else 0.0,
        metrics_statements=metrics,
        sessions_opened=sessions,
        foreign_cpu_pct=foreign_s * 100 / result.seconds if result.seconds else 0.0,
    )


# --- the run --------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Runner:
    """One benchmark run: probes every configuration, then loads it, one server at a time."""

    def __init__(self, args: argparse.Namespace, url: URL) -> None:
        self.args = args
        self.url = url
        self.configs = [CONFIGS[c] for c in args.configs]
        self.redis = args.redis_url if args.workers > 1 else None
        self.began = time.perf_counter()
        self.requests: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.peer_requests: dict[str, tuple[bytes, dict[str, str]]] = {}

    def server(self, config: Config, database: str) -> ServerProcess:
        if config.is_peer:  # one Node.js process: --workers, --server-env are marketgraph's
            return ServerProcess(config, database)
        return ServerProcess(
            config, database, self.args.workers, self.redis, extra_env=self.args.server_env
        )

    def requests_for(self, config: Config) -> dict[str, tuple[bytes, dict[str, str]]]:
        return self.peer_requests if config.is_peer else self.requests

    def say(self, message: str) -> None:
        _say(f"[{time.perf_counter() - self.began:6.1f}s] {message}")

    async def run(self) -> Run:
        args, url = self.args, self.url
        settings: dict[str, Any] = {
            "duration": f"{args.duration:g} s measured per cell",
            "warm-up": f"{args.warmup:g} s",
            "connections": args.connections,
            "client": args.client + (f" -t {args.threads}" if args.client == "wrk" else ""),
            "workers": args.workers,
            "probe requests": args.probe_requests,
            "server env": " ".join(f"{k}={v}" for k, v in args.server_env.items())
            or "project defaults",
        }
        if args.hostile_only:
            settings = {"warm-up": f"{args.warmup:g} s"}
        if args.hostile or args.hostile_only:
            settings["hostile"] = (
                f"{args.hostile_duration:g} s per phase; {args.stress_connections} connections "
                f"for {args.stress_duration:g} s; 1 worker, project defaults"
            )
        settings["database"] = url.render_as_string(hide_password=True)
        run = Run(
            started=dt.datetime.now(dt.UTC), machine=await machine_info(url), settings=settings
        )
        callers = await find_callers(url)
        self.requests = build_requests(url, *callers)
        if args.hostile_only:
            self.configs = []
        with_peer = await self.prepare_peer(run)
        if with_peer:
            self.peer_requests = peer.requests(*callers)
        if not self.configs and not args.hostile_only:
            raise BenchError("no configuration left to run")
        pg = await connect(url)
        try:
            if with_peer:
                await peer.install_viewer(pg)
            await self.wait_quiet()
            if not args.hostile_only:
                await self.probe_all(run)
                self.say(
                    "every configuration gives the same answers"
                    + (" (PostGraphile: the same values)" if with_peer else "")
                )
            if not args.verify_only:
                if not args.hostile_only:
                    await self.load_all(run, pg)
                if args.hostile or args.hostile_only:
                    await self.hostile(run, pg)
        finally:
            if with_peer:
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await peer.drop_viewer(pg)
            await pg.close()
        run.seconds = time.perf_counter() - self.began
        return run

    async def prepare_peer(self, run: Run) -> bool:
        """Whether PostGraphile is in this run: installed on first use (`npm ci`), else
        dropped from it with a message (no Node.js, no npm, an install that failed)."""
        if not any(c.is_peer for c in self.configs):
            return False
        reason = await peer.ensure_installed(self.say)
        if reason is not None:
            self.say(f"PostGraphile skipped: {reason}")
            self.configs = [c for c in self.configs if not c.is_peer]
            run.settings["PostGraphile"] = f"skipped ({reason.splitlines()[0]})"
            return False
        run.machine["peer"] = peer.versions()
        return True

    async def hostile(self, run: Run, pg: asyncpg.Connection) -> None:
        """The issue's hostile-load figures (bench/hostile.py): the probe under attack, then
        200 connections at the project's defaults."""
        bench = Bench(
            database_url=plain_url(self.url),
            requests=self.requests,
            pg=pg,
            foreign=ForeignCpu(self.url.database or ""),
            say=self.say,
            wait_quiet=lambda: self.wait_quiet(window=1.0),
        )
        run.hostile = await measure_hostile(bench, self.args.warmup, self.args.hostile_duration)
        run.stress = await measure_stress(
            bench, self.args.stress_connections, self.args.stress_duration
        )

    async def wait_quiet(self, window: float = 2.0) -> None:
        """Wait (up to --quiet-wait seconds) until no other work takes more than 10 % of a core."""
        foreign = ForeignCpu(self.url.database or "")
        deadline = time.monotonic() + self.args.quiet_wait
        while True:
            foreign.start()
            await asyncio.sleep(window)
            busy = foreign.seconds() * 100 / window
            if busy <= MAX_FOREIGN_CPU_PCT:
                return
            if time.monotonic() >= deadline:
                self.say(f"other work still takes {busy:.0f} % of a core; measuring anyway")
                return
            self.say(
                f"waiting for the machine to be quiet: other work takes {busy:.0f} % of a core"
            )

    async def probe_all(self, run: Run) -> None:
        """Answers and statements of every configuration, the first one the reference."""
        proxy = CountingProxy(self.url.host or "127.0.0.1", self.url.port or 5432)
        await proxy.start()
        proxied = plain_url(self.url.set(host="127.0.0.1", port=proxy.port))
        try:
            reference: tuple[str, dict[str, Probe]] | None = None
            for config in self.configs:
                self.say(f"{config.label}: answers and statements")
                async with self.server(config, proxied) as server:
                    probes = await probe(
                        server, proxy, self.requests_for(config), self.args.probe_requests
                    )
                if config.is_peer:
                    pass  # compared below, with whichever marketgraph column comes first
                elif reference is None:
                    reference = (config.label, probes)
                else:
                    compare(reference[1], config.label, probes, reference[0])
                run.probes[config.name] = probes
        finally:
            await proxy.stop()
        if reference is not None:
            for config in self.configs:
                if config.is_peer:
                    compare_peer(reference[1], reference[0], run.probes[config.name])

    async def load_all(self, run: Run, pg: asyncpg.Connection) -> None:
        args = self.args
        foreign = ForeignCpu(self.url.database or "")
        for config in self.configs:
            async with self.server(config, plain_url(self.url)) as server:
                for name in args.queries:
                    await self.wait_quiet(window=1.0)
                    self.say(
                        f"{config.label} {name}: {args.warmup:g} s warm-up + {args.duration:g} s, "
                        f"{args.connections} connections"
                    )
                    request = self.requests_for(config)[name]
                    cell = await measure(pg, foreign, server, name, request, args)
                    run.cells.append(cell)
                    _say(
                        f"         {cell.load.rps:9.1f} req/s  p50 {cell.load.p50_ms:.2f} ms  "
                        f"p99 {cell.load.p99_ms:.2f} ms  peak RSS {cell.peak_rss_mib:.0f} MiB  "
                        f"new PG sessions {cell.sessions_opened}  "
                        f"other work {cell.foreign_cpu_pct:.0f} % of a core"
                        + (f"  errors {cell.load.errors}" if cell.load.errors else "")
                    )


def _json(run: Run) -> bytes:
    """The run's numbers; each answer body as its size and SHA-256 (they are identical across
    configurations, or the run would have stopped)."""

    def default(value: Any) -> Any:
        if isinstance(value, bytes):
            return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
        raise TypeError

    payload = asdict(run)
    for cell, raw in zip(run.cells, payload["cells"], strict=True):
        raw["load"]["rps"] = cell.load.rps
    return orjson.dumps(payload, default=default, option=orjson.OPT_INDENT_2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Q1-Q4 against planner on, planner off, the asyncpg floor and PostGraphile, "
        "in one run.",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per cell (10)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per cell (3)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (16)")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk when installed (auto), or the asyncio client",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (1)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="REDIS_URL for --workers > 1 (BENCH_REDIS_URL, else redis://127.0.0.1:6379/14)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the GraphQL servers, e.g. DB_POOL_SIZE=30 (repeatable)",
    )
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated, from on, off, floor, postgraphile (on,off,floor, and postgraphile "
        "when Node.js is installed); the first marketgraph one is the reference",
    )
    parser.add_argument(
        "--queries", default=",".join(LOAD_QUERIES), help="queries to load (Q1,Q2,Q3,Q4; Q2/10 too)"
    )
    parser.add_argument(
        "--probe-requests",
        type=int,
        default=20,
        help="requests per query for statement counts (20)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="seconds to wait at most, before starting and before each cell, for other work "
        "on the machine to stop (120)",
    )
    parser.add_argument(
        "--verify-only", action="store_true", help="check answers and count statements, no load"
    )
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="also measure hostile load (bench/hostile.py): a probe while 3 processes send "
        "the worst documents, and 200 connections at the project's defaults",
    )
    parser.add_argument(
        "--hostile-only",
        action="store_true",
        help="only the hostile-load measurements (report: bench/results/<date>-<host>-hostile.md)",
    )
    parser.add_argument(
        "--hostile-duration",
        type=float,
        default=10.0,
        help="measured seconds per probe phase (10), after --warmup",
    )
    parser.add_argument(
        "--stress-connections", type=int, default=200, help="connections of the stress run (200)"
    )
    parser.add_argument(
        "--stress-duration", type=float, default=15.0, help="seconds of the stress run (15)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="report path (bench/results/<date>-<host>.md, -hostile.md with --hostile-only)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: BENCH_DATABASE_URL or the local marketgraph_bench",
    )
    args = parser.parse_args(argv)
    pairs = [item.partition("=") for item in args.server_env]
    if any(not name or not sep for name, sep, _ in pairs):
        parser.error("--server-env takes NAME=VALUE")
    args.server_env = {name: value for name, _, value in pairs}
    if args.configs is None:
        args.configs = "on,off,floor" + (f",{peer.NAME}" if peer.node() else "")
    args.configs = list(dict.fromkeys(c.strip() for c in args.configs.split(",") if c.strip()))
    args.queries = [q.strip() for q in args.queries.split(",") if q.strip()]
    for c in args.configs:
        if c not in CONFIGS:
            parser.error(f"unknown configuration {c!r}")
    for q in args.queries:
        if q not in QUERIES:
            parser.error(f"unknown query {q!r}")
    if args.client == "auto":
        args.client = "wrk" if wrk_available() else "python"
    elif args.client == "wrk" and not wrk_available():
        parser.error("wrk is not installed (apt-get install wrk), use --client python")
    if args.duration <= 0 or args.connections < 1 or args.workers < 1 or args.probe_requests < 1:
        parser.error("--duration, --connections, --workers and --probe-requests must be positive")
    if args.hostile_duration <= 0 or args.stress_duration <= 0 or args.stress_connections < 2:
        parser.error(
            "--hostile-duration and --stress-duration must be positive, --stress-connections ≥ 2"
        )
    if args.hostile_only and args.verify_only:
        parser.error("--hostile-only and --verify-only exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    async def guarded() -> Run:
        # SIGTERM stops the run like Ctrl-C: cancelled, so every server is stopped on the way out.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await Runner(args, database_url(args.database_url)).run()

    try:
        run = asyncio.run(guarded())
    except BenchError as exc:
        _say(f"\nBENCHMARK FAILED: {exc}")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        _say("\ninterrupted; every server started was stopped")
        return 130
    report = render(run)
    stamp = f"{run.started:%Y-%m-%d}-{run.machine['host']}" + (
        "-hostile" if args.hostile_only else ""
    )
    output = args.output or RESULTS / f"{stamp}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report, encoding="utf-8")
    raw = RESULTS / "raw" / f"{stamp}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(_json(run))
    print(report)
    _say(f"report: {output}\nraw numbers: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
