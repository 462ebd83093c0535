"""`serve`'s HTTP protocol on a real socket: the request head is bounded in bytes (431) and in
time (408), answered as JSON that a client still sending can read, and normal requests are
served as by uvicorn's own protocol."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from marketgraph.edge import EdgeLimits
from tests.helpers import closed_port

LIMITS = EdgeLimits(
    max_in_flight=10,
    max_header_bytes=2048,
    max_body_bytes=4096,
    webhook_max_body_bytes=4096,
    read_timeout=0.5,
)


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"path": request.url.path})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"edge_limits": LIMITS}


@asynccontextmanager
async def running() -> AsyncIterator[int]:
    """A uvicorn server with the protocol, in this event loop, on a free port."""
    port = closed_port()
    app = Starlette(routes=[Route("/echo", echo)], lifespan=lifespan)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http="marketgraph.http_protocol:BoundedHttpToolsProtocol",
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn's Server offers no event to await
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def exchange(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send `parts` (pausing between them), then read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


async def test_a_normal_request_is_served() -> None:
    async with running() as port:
        raw = await exchange(port, b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    status, _, body = parse(raw)
    assert (status, body) == (200, {"path": "/echo"})


@pytest.mark.parametrize("size", [3000, 1_000_000])
async def test_headers_past_the_limit_are_431_and_readable_while_still_sending(
    size: int,
) -> None:
    filler = b"X-Filler: " + b"x" * size + b"\r\n"
    async with running() as port:
        raw = await exchange(port, b"GET /echo HTTP/1.1\r\nHost: t\r\n", filler, b"\r\n")
    status, headers, body = parse(raw)
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert body["errors"][0]["message"] == "Request headers are too large; at most 2048 bytes"
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_head_that_does_not_arrive_in_time_is_408() -> None:
    async with running() as port:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n")  # and then nothing (slowloris)
        raw = await asyncio.wait_for(reader.read(), 5)
        took = time.monotonic() - started
        writer.close()
        # A connection that never sends a byte is closed the same way.
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
        silent = await asyncio.wait_for(silent_reader.read(), 5)
        silent_writer.close()
    status, _, body = parse(raw)
    assert status == 408
    assert "did not arrive within 0.5 seconds" in body["errors"][0]["message"]
    assert 0.4 < took < 3.5
    assert parse(silent)[0] == 408


async def test_a_slow_but_steady_client_within_the_deadline_is_served() -> None:
    async with running() as port:
        raw = await exchange(
            port,
            b"GET /echo HTTP/1.1\r\n",
            b"Host: t\r\n",
            b"Connection: close\r\n\r\n",
            pause=0.1,
        )
    assert parse(raw)[0] == 200
