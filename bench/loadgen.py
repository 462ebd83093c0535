"""Load generators: wrk with bench/wrk/graphql.lua when installed, else an asyncio client.

Both keep `connections` keep-alive connections busy with one request for
`duration` seconds against a loopback address, and report requests, errors
and p50/p99 latency. Both stop by themselves: wrk by its `-d`, the Python
client by its deadline and a cap on requests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.common import BenchError

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk" / "graphql.lua"
REQUEST_TIMEOUT_S = 10.0
MAX_REQUESTS = 2_000_000  # the Python client's hard stop, whatever the duration


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int  # connection errors, timeouts and non-2xx answers
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """What to send: POST `body` with `headers` to http://host:port/path."""

    host: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


async def run_load(
    target: Target, *, client: str, connections: int, threads: int, seconds: float
) -> LoadResult:
    if client == "wrk":
        return await run_wrk(target, connections=connections, threads=threads, seconds=seconds)
    return await run_python(target, connections=connections, seconds=seconds)


async def run_wrk(target: Target, *, connections: int, threads: int, seconds: float) -> LoadResult:
    if not target.host.startswith("127.") and target.host != "localhost":
        raise ValueError("the benchmark drives loopback servers only")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        env = {**os.environ, **_request_files(Path(tmp), target)}
        process = await asyncio.create_subprocess_exec(
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            f"{max(REQUEST_TIMEOUT_S, seconds):g}s",
            "-s",
            str(LUA_SCRIPT),
            f"http://{target.host}:{target.port}{target.path}",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for line in out.decode().splitlines():
        if line.startswith("BENCH_RESULT "):
            raw = orjson.loads(line.removeprefix("BENCH_RESULT "))
            break
    else:
        raise BenchError(f"wrk reported nothing (exit {process.returncode}): {err.decode()}")
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        errors=errors,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )


def _request_files(folder: Path, target: Target) -> dict[str, str]:
    """The body and headers as files for graphql.lua, and the variables that name them."""
    body, headers = folder / "body", folder / "headers"
    body.write_bytes(target.body)
    headers.write_text("".join(f"{k}: {v}\n" for k, v in target.headers.items()))
    return {"BENCH_BODY_FILE": str(body), "BENCH_HEADERS_FILE": str(headers)}


def _percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def run_python(target: Target, *, connections: int, seconds: float) -> LoadResult:
    """HTTP/1.1 keep-alive over raw asyncio streams: lighter than an HTTP library, still
    far heavier than wrk, and it shares the machine's cores with the server."""
    if not target.host.startswith("127.") and target.host != "localhost":
        raise ValueError("the benchmark drives loopback servers only")
    head = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host}:{target.port}",
        f"Content-Length: {len(target.body)}",
        *(f"{k}: {v}" for k, v in target.headers.items()),
    ]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + target.body
    latencies: list[float] = []
    errors = 0
    timeout = max(REQUEST_TIMEOUT_S, seconds)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(request)
        await writer.drain()
        header = await reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        return status

    async def worker() -> None:
        nonlocal errors
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while loop.time() < deadline and len(latencies) < MAX_REQUESTS:
            began = time.perf_counter()
            try:
                if connection is None:
                    connection = await asyncio.open_connection(target.host, target.port)
                status = await asyncio.wait_for(one(*connection), timeout)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                errors += 1
                if connection is not None:
                    connection[1].close()
                connection = None
                continue
            latencies.append(time.perf_counter() - began)
            if not 200 <= status < 300:
                errors += 1
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = loop.time() - started
    ordered = sorted(latencies)
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        errors=errors,
        p50_ms=_percentile(ordered, 50) * 1000,
        p99_ms=_percentile(ordered, 99) * 1000,
        mean_ms=(sum(ordered) / len(ordered) * 1000) if ordered else 0.0,
        max_ms=(ordered[-1] * 1000) if ordered else 0.0,
    )
