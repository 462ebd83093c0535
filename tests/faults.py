"""A TCP proxy the tests control, between the server and one store (or Redis), on loopback.

Modes, switched at any time:
- `forward`: bytes pass both ways (healthy);
- `refuse`: nothing listens on the port (new connections are refused) and open ones are
  closed, as when the store's host is up but PostgreSQL is not;
- `reset`: connections are accepted and reset at once (RST), open ones too;
- `blackhole`: connections are accepted and open ones kept, but no byte passes either
  way, as with a dropped route or a frozen process.

`forward` again heals: the same port listens and forwards, so the server's configured URL
keeps working without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal

from sqlalchemy.engine import URL

Mode = Literal["forward", "refuse", "reset", "blackhole"]


def postgres_upstream(url: URL) -> tuple[str, int | None]:
    """Where a PostgreSQL URL connects: (host, port), or (socket path, None)."""
    port = url.port or 5432
    socket_dir = url.query.get("host")
    if url.host is None and isinstance(socket_dir, str):
        return f"{socket_dir}/.s.PGSQL.{port}", None
    return url.host or "127.0.0.1", port


def through(url: URL, proxy: FaultProxy) -> URL:
    """`url`, connecting through `proxy` instead."""
    query = {k: v for k, v in url.query.items() if k != "host"}
    return url.set(host="127.0.0.1", port=proxy.port, query=query)


class FaultProxy:
    """Listens on 127.0.0.1:<port> and forwards to `upstream` according to its mode."""

    def __init__(self, upstream_host: str, upstream_port: int | None = None) -> None:
        # A host without a port is a Unix socket's path (an embedded PostgreSQL).
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "forward"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()  # clear while blackholed
        self._flowing.set()

    async def start(self) -> FaultProxy:
        await self._listen()
        return self

    async def set_mode(self, mode: Mode) -> None:
        """Switch mode; existing connections follow it (closed, reset, frozen or resumed)."""
        self.mode = mode
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode in ("refuse", "reset"):
            for client, upstream in list(self._pairs):
                _abort(client, reset=mode == "reset")
                if upstream is not None:
                    _abort(upstream, reset=False)
            self._pairs.clear()
        if mode == "refuse":
            await self._stop_listening()
        elif self._server is None:
            await self._listen()

    async def close(self) -> None:
        await self._stop_listening()
        for client, upstream in list(self._pairs):
            _abort(client, reset=False)
            if upstream is not None:
                _abort(upstream, reset=False)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _abort(writer, reset=True)
            return
        host, port = self.upstream
        try:
            if port is None:
                up_reader, up_writer = await asyncio.open_unix_connection(host)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            _abort(writer, reset=True)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while True:
                data = await source.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # blackholed: hold the bytes until healed
                if self.mode != "forward":
                    break
                sink.write(data)
                await sink.drain()
        with contextlib.suppress(Exception):
            sink.close()


def _abort(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    """Close a connection; with `reset`, by RST rather than FIN."""
    sock = writer.get_extra_info("socket")
    if reset and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort() if reset else writer.close()
