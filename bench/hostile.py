"""Hostile load, as the issue "safe to expose" asks for it: figures measured in one run, never
asserted by timed tests (on a shared two-core machine a timing assertion is a coin toss).

1. **A probe under attack.** One client in the runner sends the probe query (Q3, the
   catalog: planned, one statement) with a short pause between probes: first on an idle
   server, then while ATTACKERS client processes (`bench.clients attack`) send the worst
   requests back to back, each in a closed loop — the same documents again and again (what
   an attacker does; the server's document cache should make repeats cheap), then each
   made new by a trailing comment (what defeats the cache) — and on the idle server once
   more. The attackers are processes of their own: in the probe's event loop their
   writing of megabytes would be what the probe measured. Before the attacks, a 300 MiB
   body is sent alone (declared, then chunked) and the server's RSS read around it.
2. **200 connections at the defaults.** A fresh server with the project's defaults (no
   setting inherited from the runner's environment, `--server-env` ignored), driven by
   STRESS_PROCESSES client processes (`bench.clients load`) that keep the connections busy
   with Q3 (anonymous) and Q1 (a signed-in member) in turn, and read every answer's status
   and GraphQL `extensions.code`s.

Both use one server worker (`--workers` does not apply), started by `bench.servers` like
every other cell. The runner (`python -m bench.run --hostile` or `--hostile-only`) renders
the results in its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bench.clients import (
    DISCONNECTED,
    HUGE_BODY_BYTES,
    REQUEST_TIMEOUT_S,
    RESET,
    TIMEOUT,
    Answer,
    Connection,
    Hostile,
    Tally,
    hostile_requests,
    request_head,
)
from bench.common import BenchError
from bench.machine import ForeignCpu
from bench.servers import CONFIGS, ROOT, ResourceSampler, ServerProcess
from marketgraph.settings import Settings

PROBE_QUERY = "Q3"
PROBE_PAUSE_S = 0.02
ATTACKERS = 3
ATTACK_MODES = ("repeated", "distinct")
STRESS_QUERIES = ("Q3", "Q1")
STRESS_PROCESSES = 2
CLIENT_START_TIMEOUT_S = 60.0
# Settings whose defaults the 200-connection figures depend on; the report states them.
DEFAULTS_SHOWN = (
    "db_pool_size",
    "db_max_overflow",
    "db_pool_timeout",
    "db_statement_timeout",
    "max_in_flight",
    "max_body_bytes",
    "max_document_chars",
    "max_document_tokens",
    "max_selections",
)
LOG_LINES_SHOWN = 40
# Buckets (seconds) of the server's latency histogram shown in the report: where its own
# timing puts the tail, apart from the clients'.
SERVER_BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1.0", "2.5")


@dataclass(frozen=True, slots=True)
class Bench:
    """What the measurements borrow from the runner."""

    database_url: str  # the servers' DATABASE_URL (straight to PostgreSQL)
    requests: dict[str, tuple[bytes, dict[str, str]]]  # query name -> body, headers
    pg: asyncpg.Connection  # the runner's own connection to the benchmark database
    foreign: ForeignCpu
    say: Callable[[str], None]
    wait_quiet: Callable[[], Awaitable[None]]

    def server(self) -> ServerProcess:
        """The planner-on server, one worker, the project's defaults."""
        return ServerProcess(CONFIGS["on"], self.database_url, 1, None, defaults_only=True)


# --- results --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Latency:
    """A probe's (or a load's) answers: latency percentiles and outcomes."""

    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]  # HTTP status, or `reset` / `timeout`
    codes: dict[str, int]  # GraphQL extensions.code (OK: data without errors)
    different: int = 0  # 200 answers that differ from the idle answer


@dataclass(slots=True)
class AttackPhase:
    """The probe while the attackers ran in one mode, and what the attackers got."""

    mode: str  # repeated | distinct
    seconds: float
    probe: Latency
    attackers: dict[str, dict[str, Any]]  # hostile request -> merged Tally.as_json()
    server_statuses: dict[str, int]  # /metrics: answers on /graphql by status, this phase
    server_refusals: dict[str, int]  # /metrics: refused at the edge by reason
    server_codes: dict[str, int]  # /metrics: GraphQL errors by code
    server_cpu_pct: float  # the server's CPU over the phase, % of one core
    rss_before_mib: float
    rss_after_mib: float
    peak_rss_mib: float
    foreign_cpu_pct: float


@dataclass(slots=True)
class HugeBody:
    """One 300 MiB body sent alone: what came back, and the server's RSS around it."""

    name: str
    outcome: str  # HTTP status or reset / timeout
    codes: list[str]
    ms: float
    rss_before_mib: float
    rss_after_mib: float
    peak_rss_mib: float


@dataclass(slots=True)
class HostileResult:
    probe_query: str
    probe_pause_ms: float
    warmup: float
    duration: float
    catalog: list[dict[str, Any]]  # name, description, body bytes
    idle: Latency
    huge: list[HugeBody]
    phases: list[AttackPhase]
    idle_after: Latency
    vm_hwm_start_mib: float  # the server process's peak RSS once started (VmHWM)
    vm_hwm_mib: float  # the same at the end
    alive: bool  # answered /health at the end
    log_lines: int
    log: list[str]  # the first LOG_LINES_SHOWN lines the server logged (LOG_LEVEL=WARNING)


@dataclass(slots=True)
class StressResult:
    connections: int
    processes: int
    seconds: float
    defaults: dict[str, str]
    queries: dict[str, Latency]  # Q3, Q1
    overall: Latency
    rps: float
    sessions_opened: int
    peak_backends: int  # PostgreSQL sessions of the benchmark database at once (sampled)
    peak_checked_out: dict[str, int]  # /metrics pool gauges per store (sampled)
    pool_stores: int  # stores sharing one pool (the benchmark has one DATABASE_URL)
    peak_rss_mib: float
    server_cpu_pct: float
    foreign_cpu_pct: float
    server_statuses: dict[str, int]
    server_codes: dict[str, int]
    server_within: dict[str, float]  # /metrics: share of answers within `le` seconds
    alive: bool
    log_lines: int
    log: list[str]


# --- helpers -------------------------------------------------------------------------------------


def proc_status_mib(pid: int, key: str) -> float:
    """A /proc/<pid>/status memory line (VmRSS, VmHWM) in MiB; 0 when the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss(server: ServerProcess) -> float:
    return proc_status_mib(server.process.pid, "VmRSS") if server.process else 0.0


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank percentile of sorted values."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def _latency(latencies_ms: list[float], tally: Tally, different: int = 0) -> Latency:
    ordered = sorted(latencies_ms)
    return Latency(
        requests=tally.requests,
        p50_ms=percentile(ordered, 50),
        p99_ms=percentile(ordered, 99),
        max_ms=ordered[-1] if ordered else 0.0,
        statuses=dict(tally.statuses),
        codes=dict(tally.codes),
        different=different,
    )


_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$", re.MULTILINE)


async def server_counts(http: httpx.AsyncClient, server: ServerProcess) -> dict[str, Counter[str]]:
    """The server's own counters (/metrics): answers on /graphql by status and by latency
    bucket (`le`, cumulative), edge refusals by reason, GraphQL errors by code, connections
    checked out per store."""
    out: dict[str, Counter[str]] = {
        "statuses": Counter(),
        "buckets": Counter(),
        "refusals": Counter(),
        "codes": Counter(),
        "checked_out": Counter(),
    }
    text = (await http.get(server.base_url + "/metrics")).text
    for name, raw_labels, value in _SAMPLE.findall(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', raw_labels))
        number = round(float(value))
        if name == "marketgraph_http_request_duration_seconds_count":
            if labels.get("route") == "/graphql":
                out["statuses"][labels["status"]] += number
        elif name == "marketgraph_http_request_duration_seconds_bucket":
            if labels.get("route") == "/graphql":
                out["buckets"][labels["le"]] += number
        elif name == "marketgraph_requests_refused_total":
            out["refusals"][labels["reason"]] += number
        elif name == "marketgraph_graphql_errors_total":
            out["codes"][labels["code"]] += number
        elif name == "marketgraph_pool_checked_out":
            out["checked_out"][labels["store"]] += number
    return out


def _delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: v for k, v in sorted((after - before).items()) if v}


def _within(after: Counter[str], before: Counter[str]) -> dict[str, float]:
    """The share of answers the server timed within each of SERVER_BUCKETS seconds."""
    total = after["+Inf"] - before["+Inf"]
    if not total:
        return {}
    return {le: (after[le] - before[le]) / total for le in SERVER_BUCKETS if le in after}


async def _alive(server: ServerProcess) -> bool:
    if server.process is None or server.process.poll() is not None:
        return False
    async with httpx.AsyncClient(timeout=5.0) as http:
        try:
            return (await http.get(server.base_url + "/health")).status_code == 200
        except httpx.HTTPError:
            return False


def _log(server: ServerProcess) -> tuple[int, list[str]]:
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    return len(lines), lines[:LOG_LINES_SHOWN]


def _expected(body: bytes, name: str) -> None:
    """An answer worth comparing others with: data, and no errors."""
    answer = orjson.loads(body)
    if answer.get("errors") or not answer.get("data"):
        raise BenchError(f"{name}: error answer on an idle server: {body[:500]!r}")


class Clients:
    """Client processes (`python -m bench.clients ...`), told when to go, measure and stop
    through their stdin; each reports one line of JSON."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, commands: list[list[str]]) -> None:
        for args in commands:
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.clients",
                    *args,
                    cwd=ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for process in self.processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), CLIENT_START_TIMEOUT_S)
            if line.strip() != b"ready":
                raise BenchError(f"a client process did not start: {line!r}")

    async def tell(self, command: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(command.encode() + b"\n")
            await process.stdin.drain()

    async def finish(self) -> list[dict[str, Any]]:
        """Stop them (end of stdin) and collect their reports.

        Each report is read to the end of its output, all at once: a report holds every
        latency (hundreds of kilobytes), past what `readline` accepts, and a process whose
        output nobody reads blocks on its full pipe and never exits.
        """
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.stdout.read() for p in self.processes if p.stdout)),
            REQUEST_TIMEOUT_S * 2,
        )
        results = []
        for process, output in zip(self.processes, outputs, strict=True):
            await process.wait()
            lines = output.strip().splitlines()
            if not lines:
                raise BenchError(f"a client process reported nothing (exit {process.returncode})")
            results.append(orjson.loads(lines[-1]))
        self.processes.clear()
        return results

    async def kill(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        self.processes.clear()


# --- 1. the probe under attack -------------------------------------------------------------------


async def run_probe(port: int, request: bytes, expected: bytes, seconds: float) -> Latency:
    """Send the probe for `seconds`, one at a time with PROBE_PAUSE_S between them."""
    connection = Connection(port)
    latencies: list[float] = []
    tally = Tally()
    different = 0
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            outcome: Answer | str
            try:
                outcome = await asyncio.wait_for(connection.send(request), REQUEST_TIMEOUT_S)
            except TimeoutError:
                outcome = TIMEOUT
            except DISCONNECTED:
                outcome = RESET
            took = time.perf_counter() - began
            tally.add(outcome, took)
            latencies.append(took * 1000)
            if isinstance(outcome, Answer) and outcome.status == 200 and outcome.body != expected:
                different += 1
            await asyncio.sleep(PROBE_PAUSE_S)
    finally:
        connection.close()
    return _latency(latencies, tally, different)


async def send_huge(server: ServerProcess, hostile: Hostile) -> HugeBody:
    """One 300 MiB body, alone, with the server's RSS before, after and at its peak."""
    sampler = ResourceSampler(server, interval=0.02)
    before = _rss(server)
    sampler.start()
    chunked = hostile.streamed == "chunked"
    head = request_head(
        server.port,
        {"Content-Type": "application/json"},
        None if chunked else HUGE_BODY_BYTES,
    )
    began = time.perf_counter()
    outcome: str
    codes: list[str] = []
    try:
        answer = await Connection(server.port).stream(
            head, b'{"query":"#', HUGE_BODY_BYTES, chunked
        )
        outcome, codes = str(answer.status), answer.codes()
    except TimeoutError:
        outcome = TIMEOUT
    except DISCONNECTED:
        outcome = RESET
    took = (time.perf_counter() - began) * 1000
    await sampler.settle()
    peak = await sampler.stop()
    return HugeBody(hostile.name, outcome, codes, took, before, _rss(server), peak / 2**20)


async def attack_phase(
    bench: Bench,
    server: ServerProcess,
    mode: str,
    probe: tuple[bytes, bytes],
    warmup: float,
    duration: float,
) -> AttackPhase:
    """The probe for `duration` s while ATTACKERS processes send the hostile requests in
    `mode`, after `warmup` s of attack alone."""
    clients = Clients()
    sampler = ResourceSampler(server)
    try:
        await clients.start(
            [
                ["attack", "--port", str(server.port), "--mode", mode, "--offset", str(2 * i)]
                for i in range(ATTACKERS)
            ]
        )
        async with httpx.AsyncClient(timeout=30.0) as http:
            rss_before = _rss(server)
            sampler.start()
            await clients.tell("go")
            await asyncio.sleep(warmup)
            counts_before = await server_counts(http, server)
            cpu_before = sampler.cpu_seconds()
            bench.foreign.start()
            await clients.tell("measure")
            began = time.perf_counter()
            latency = await run_probe(server.port, *probe, duration)
            seconds = time.perf_counter() - began
            cpu = sampler.cpu_seconds() - cpu_before
            foreign = bench.foreign.seconds()
            reports = await clients.finish()
            await sampler.settle()
            counts_after = await server_counts(http, server)
    finally:
        await clients.kill()
        peak = await sampler.stop()
    attackers: dict[str, Tally] = {}
    for report in reports:
        for name, raw in report["tallies"].items():
            attackers.setdefault(name, Tally()).merge(raw)
    return AttackPhase(
        mode=mode,
        seconds=seconds,
        probe=latency,
        attackers={name: t.as_json() for name, t in attackers.items()},
        server_statuses=_delta(counts_after["statuses"], counts_before["statuses"]),
        server_refusals=_delta(counts_after["refusals"], counts_before["refusals"]),
        server_codes=_delta(counts_after["codes"], counts_before["codes"]),
        server_cpu_pct=cpu * 100 / seconds,
        rss_before_mib=rss_before,
        rss_after_mib=_rss(server),
        peak_rss_mib=peak / 2**20,
        foreign_cpu_pct=foreign * 100 / seconds,
    )


async def measure_hostile(bench: Bench, warmup: float, duration: float) -> HostileResult:
    """The probe idle, after a 300 MiB body, under each attack mode, and idle again."""
    body, headers = bench.requests[PROBE_QUERY]
    catalog = [
        {
            "name": h.name,
            "description": h.description,
            "bytes": HUGE_BODY_BYTES if h.document is None else sum(map(len, h.body_parts())),
        }
        for h in hostile_requests()
    ]
    async with bench.server() as server:
        request = request_head(server.port, headers, len(body)) + body
        first = Connection(server.port)
        try:
            expected = await first.send(request)
        finally:
            first.close()
        if expected.status != 200:
            raise BenchError(f"{PROBE_QUERY}: HTTP {expected.status} on an idle server")
        _expected(expected.body, PROBE_QUERY)
        probe = (request, expected.body)
        hwm_start = proc_status_mib(server.process.pid, "VmHWM") if server.process else 0.0

        await bench.wait_quiet()
        bench.say(f"hostile: the probe ({PROBE_QUERY}) on the idle server, {duration:g} s")
        await run_probe(server.port, *probe, min(warmup, 2.0))
        idle = await run_probe(server.port, *probe, duration)
        bench.say(f"         p50 {idle.p50_ms:.2f} ms  p99 {idle.p99_ms:.2f} ms")

        huge = []
        for hostile in hostile_requests():
            if hostile.streamed is not None:
                bench.say(f"hostile: {hostile.description}, alone")
                huge.append(await send_huge(server, hostile))
                h = huge[-1]
                bench.say(
                    f"         {h.outcome} in {h.ms:.0f} ms; VmRSS {h.rss_before_mib:.0f} -> "
                    f"{h.rss_after_mib:.0f} MiB (peak {h.peak_rss_mib:.0f})"
                )

        phases = []
        for mode in ATTACK_MODES:
            await bench.wait_quiet()
            bench.say(
                f"hostile: the probe under attack ({ATTACKERS} processes, {mode} documents), "
                f"{warmup:g} s + {duration:g} s"
            )
            phase = await attack_phase(bench, server, mode, probe, warmup, duration)
            phases.append(phase)
            sent = sum(t["requests"] for t in phase.attackers.values())
            bench.say(
                f"         p50 {phase.probe.p50_ms:.2f} ms  p99 {phase.probe.p99_ms:.2f} ms  "
                f"max {phase.probe.max_ms:.2f} ms  attackers sent {sent}  "
                f"server statuses {phase.server_statuses}"
            )
            if server.process is None or server.process.poll() is not None:
                raise BenchError(f"the server died under attack:\n{server.log_tail()}")

        await bench.wait_quiet()
        bench.say(f"hostile: the probe on the idle server again, {duration:g} s")
        idle_after = await run_probe(server.port, *probe, duration)
        bench.say(f"         p50 {idle_after.p50_ms:.2f} ms  p99 {idle_after.p99_ms:.2f} ms")
        alive = await _alive(server)
        hwm = proc_status_mib(server.process.pid, "VmHWM") if server.process else 0.0
        log_lines, log = _log(server)
    return HostileResult(
        probe_query=PROBE_QUERY,
        probe_pause_ms=PROBE_PAUSE_S * 1000,
        warmup=warmup,
        duration=duration,
        catalog=catalog,
        idle=idle,
        huge=huge,
        phases=phases,
        idle_after=idle_after,
        vm_hwm_start_mib=hwm_start,
        vm_hwm_mib=hwm,
        alive=alive,
        log_lines=log_lines,
        log=log,
    )


# --- 2. 200 connections at the defaults ----------------------------------------------------------


async def _sessions(pg: asyncpg.Connection) -> int:
    value = await pg.fetchval(
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(value or 0)


@dataclass(slots=True)
class _Peaks:
    """Sampled while the load runs: PostgreSQL sessions and the pools' checked-out gauges."""

    backends: int = 0
    checked_out: Counter[str] = field(default_factory=Counter)

    async def sample(
        self, pg: asyncpg.Connection, http: httpx.AsyncClient, server: ServerProcess
    ) -> None:
        while True:
            backends = await pg.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            self.backends = max(self.backends, int(backends))
            with contextlib.suppress(httpx.HTTPError):
                for store, n in (await server_counts(http, server))["checked_out"].items():
                    self.checked_out[store] = max(self.checked_out[store], n)
            await asyncio.sleep(0.25)


async def _stress_requests(
    bench: Bench, http: httpx.AsyncClient, server: ServerProcess
) -> list[dict[str, Any]]:
    """The load's requests, each with its answer on the idle server to compare with."""
    requests = []
    for name in STRESS_QUERIES:
        body, headers = bench.requests[name]
        answer = await http.post(server.base_url + "/graphql", content=body, headers=headers)
        if answer.status_code != 200:
            raise BenchError(f"{name}: HTTP {answer.status_code} on an idle server")
        _expected(answer.content, name)
        requests.append(
            {
                "name": name,
                "body": body.decode(),
                "headers": headers,
                "expected": answer.content.decode(),
            }
        )
    return requests


async def measure_stress(bench: Bench, connections: int, seconds: float) -> StressResult:
    """`connections` busy connections for `seconds` s on a fresh server at the defaults."""
    defaults = {name.upper(): str(Settings.model_fields[name].default) for name in DEFAULTS_SHOWN}
    share = [connections // STRESS_PROCESSES] * STRESS_PROCESSES
    share[0] += connections - sum(share)
    async with bench.server() as server, httpx.AsyncClient(timeout=30.0) as http:
        given = ["--requests", orjson.dumps(await _stress_requests(bench, http, server)).decode()]
        await bench.wait_quiet()
        bench.say(
            f"stress: {connections} connections for {seconds:g} s, "
            f"{' and '.join(STRESS_QUERIES)} in turn, project defaults"
        )
        clients, sampler, peaks = Clients(), ResourceSampler(server), _Peaks()
        try:
            await clients.start(
                [
                    ["load", "--port", str(server.port), "--connections", str(n), *given]
                    for n in share
                ]
            )
            counts_before = await server_counts(http, server)
            sessions_before = await _sessions(bench.pg)
            sampler.start()
            cpu_before = sampler.cpu_seconds()
            bench.foreign.start()
            watcher = asyncio.create_task(peaks.sample(bench.pg, http, server))
            await clients.tell("go")
            began = time.perf_counter()
            try:
                await asyncio.sleep(seconds)
                reports = await clients.finish()
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            elapsed = time.perf_counter() - began
            cpu = sampler.cpu_seconds() - cpu_before
            foreign = bench.foreign.seconds()
            sessions = await _sessions(bench.pg) - sessions_before
            await sampler.settle()
            counts_after = await server_counts(http, server)
        finally:
            await clients.kill()
            peak = await sampler.stop()
        alive = await _alive(server)
        log_lines, log = _log(server)
    per_query: dict[str, Latency] = {}
    everything: list[float] = []
    total = Tally()
    for name in STRESS_QUERIES:
        tally, latencies, different = Tally(), [], 0
        for report in reports:
            tally.merge(report["tallies"][name])
            latencies += report["latencies_ms"][name]
            different += report["different"].get(name, 0)
        per_query[name] = _latency(latencies, tally, different)
        everything += latencies
        total.merge(tally.as_json())
    run_seconds = max([r["seconds"] for r in reports] + [elapsed])
    answered = len(everything)
    return StressResult(
        connections=connections,
        processes=STRESS_PROCESSES,
        seconds=run_seconds,
        defaults=defaults,
        queries=per_query,
        overall=_latency(everything, total, sum(q.different for q in per_query.values())),
        rps=answered / run_seconds if run_seconds else 0.0,
        sessions_opened=sessions,
        peak_backends=peaks.backends,
        peak_checked_out=dict(sorted(peaks.checked_out.items())),
        pool_stores=len(peaks.checked_out),
        peak_rss_mib=peak / 2**20,
        server_cpu_pct=cpu * 100 / elapsed,
        foreign_cpu_pct=foreign * 100 / elapsed,
        server_statuses=_delta(counts_after["statuses"], counts_before["statuses"]),
        server_codes=_delta(counts_after["codes"], counts_before["codes"]),
        server_within=_within(counts_after["buckets"], counts_before["buckets"]),
        alive=alive,
        log_lines=log_lines,
        log=log,
    )
