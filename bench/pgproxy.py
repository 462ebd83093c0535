"""A PostgreSQL wire-protocol proxy that counts the statements a server sends, per store.

The same yardstick for every configuration, whatever runs the SQL (SQLAlchemy,
the planner, raw asyncpg): the runner points a server's DATABASE_URL at the
proxy for a probe, sends a number of requests, and divides. Counted, from the
client's messages:

- each Bind (an execution of a prepared statement; its text comes from the
  connection's earlier Parse of that statement name), and
- each simple Query.

A statement whose text names a store's schema (`kg_app.`, `"us_auth".`) counts
for that store (`kg.app`); anything else (BEGIN, ROLLBACK, the pool's `;` ping)
counts as `other`. The proxy answers SSL requests with "no", so the stream stays
readable; the server's replies pass through untouched. Loopback only, and only
while a probe runs: it is far too slow for load.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from collections import Counter

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
_SCHEMA = re.compile(r'"?\b([a-z][a-z0-9]*)_(auth|app)"?\.')


def store_of(sql: str) -> list[str]:
    """The stores a statement reads or writes (`kg.app`), or `["other"]`."""
    found = sorted({f"{m.group(1)}.{m.group(2)}" for m in _SCHEMA.finditer(sql)})
    return found or ["other"]


def _cstring(payload: bytes, start: int) -> tuple[str, int]:
    end = payload.index(b"\x00", start)
    return payload[start:end].decode("utf-8", "replace"), end + 1


class CountingProxy:
    """Listens on 127.0.0.1:<port> and forwards to the real server."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.counts: Counter[str] = Counter()
        self.texts: Counter[str] = Counter()  # statement text -> executions, for debugging
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def reset(self) -> None:
        self.counts.clear()
        self.texts.clear()

    def _count(self, sql: str) -> None:
        self.texts[sql] += 1
        for store in store_of(sql):
            self.counts[store] += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            replies = asyncio.create_task(_pump(up_reader, writer))
            try:
                await self._client_to_server(reader, upstream_writer, writer)
            finally:
                replies.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await replies
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()

    async def _client_to_server(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        # Untyped start: SSL/GSS requests (answered "no" here), then the startup message.
        while True:
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            rest = await reader.readexactly(length - 8)
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                client.write(b"N")
                await client.drain()
                continue
            upstream.write(head + rest)
            await upstream.drain()
            if code == CANCEL_REQUEST:
                return
            break
        prepared: dict[str, str] = {}
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            payload = await reader.readexactly(length - 4)
            if kind == b"P":  # Parse: statement name, query text
                name, at = _cstring(payload, 0)
                prepared[name], _ = _cstring(payload, at)
            elif kind == b"B":  # Bind: portal name, statement name
                _, at = _cstring(payload, 0)
                name, _ = _cstring(payload, at)
                self._count(prepared.get(name, "<unknown statement>"))
            elif kind == b"Q":  # simple query
                self._count(_cstring(payload, 0)[0])
            upstream.write(head + payload)
            await upstream.drain()
            if kind == b"X":  # Terminate
                return


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
