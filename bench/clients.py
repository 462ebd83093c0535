"""The clients that run in processes of their own: the attackers and the 200-connection load.

    python -m bench.clients attack --port P --mode repeated|distinct --offset N
    python -m bench.clients load --port P --connections N --requests FILE

`bench.hostile` starts them; they are separate processes so that their work — a few
megabytes written per request, thousands of answers read and decoded — takes no time
from the probe's event loop, whose latencies are the figure. Each prints `ready` once
its requests are built, starts on a `go` line on stdin, starts counting afresh on a
`measure` line, stops at the end of stdin (finishing the request in flight) and prints
one line of JSON with what it saw.

HTTP/1.1 is spoken over raw asyncio streams (`Connection`): lighter than an HTTP
library, and able to stream a 300 MB body from one reused buffer while it reads an
answer the server sends before the body is complete.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

REQUEST_TIMEOUT_S = 30.0
STREAM_CHUNK = 256 * 1024
HUGE_BODY_BYTES = 300 * 1024 * 1024
# What a dropped connection or a garbled answer raises.
DISCONNECTED = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)
# What a request that got no HTTP answer is counted as, in place of a status.
RESET = "reset"  # the connection dropped before an answer
TIMEOUT = "timeout"  # no answer within REQUEST_TIMEOUT_S


# --- HTTP/1.1 on raw streams ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: its status, body, and whether the server closes the connection."""

    status: int
    body: bytes
    closes: bool

    def codes(self) -> list[str]:
        """The distinct `extensions.code`s of a GraphQL answer's errors, in order; `OK` for
        data without errors and `not JSON` for a body that is not a GraphQL answer."""
        try:
            answer = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return ["not JSON"]
        if not isinstance(answer, dict):
            return ["not JSON"]
        errors = answer.get("errors") or []
        codes = [str((e.get("extensions") or {}).get("code", "no code")) for e in errors]
        return list(dict.fromkeys(codes)) or ["OK"]


def request_head(
    port: int, headers: dict[str, str], length: int | None, path: str = "/graphql"
) -> bytes:
    """A POST's request line and headers; `length` None sends the body chunked."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Connection:
    """One keep-alive connection to 127.0.0.1:port, opened on first use and again after the
    server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        return self._streams

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def send(self, request: bytes) -> Answer:
        """Send a whole request (head and body) and read its answer; raises on a dropped
        connection, after closing it."""
        try:
            reader, writer = await self._open()
            writer.write(request)
            await writer.drain()
            answer = await _read_answer(reader)
        except BaseException:
            self.close()
            raise
        if answer.closes:
            self.close()
        return answer

    async def stream(self, head: bytes, prefix: bytes, size: int, chunked: bool) -> Answer:
        """Send a body of `size` bytes (`prefix`, then filler) in STREAM_CHUNK pieces of one
        reused buffer, while reading the answer: a server that refuses the body early
        answers before it is complete. The connection is closed afterwards either way."""
        filler = b"x" * STREAM_CHUNK
        whole = _frame(filler, chunked)
        answer: asyncio.Task[Answer] | None = None
        try:
            reader, writer = await self._open()
            answer = asyncio.create_task(_read_answer(reader))
            try:
                writer.write(head + _frame(prefix, chunked))
                sent = len(prefix)
                while sent < size and not answer.done():
                    n = min(STREAM_CHUNK, size - sent)
                    writer.write(whole if n == STREAM_CHUNK else _frame(filler[:n], chunked))
                    sent += n
                    await writer.drain()
                if chunked and not answer.done():
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                pass  # the server stopped reading: its answer, if any, is still to be read
            return await asyncio.wait_for(answer, REQUEST_TIMEOUT_S)
        finally:
            if answer is not None:
                answer.cancel()
            self.close()


def _frame(piece: bytes, chunked: bool) -> bytes:
    """`piece` as sent: as it is, or as one chunk of a chunked body."""
    return b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, body, headers.get("connection", "").lower() == "close")


# --- being told when to start and stop ---------------------------------------------------------


@dataclass(slots=True)
class Control:
    """The runner's commands on stdin: `go`, `measure`, and the end of stdin (stop)."""

    go: asyncio.Event = field(default_factory=asyncio.Event)
    measure: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    measured_from: float = 0.0

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command = line.strip()
            if command == b"go":
                self.go.set()
            elif command == b"measure":
                self.measured_from = time.perf_counter()
                self.measure.set()
        self.go.set()
        self.stop.set()


def _say(line: str | bytes) -> None:
    out = sys.stdout.buffer
    out.write(line if isinstance(line, bytes) else line.encode())
    out.write(b"\n")
    out.flush()


# --- the attackers -----------------------------------------------------------------------------


Mode = Literal["repeated", "distinct"]


@dataclass(frozen=True, slots=True)
class Hostile:
    """One of the worst requests: a GraphQL document (`document`), or a body `streamed`
    rather than built, with a declared Content-Length or chunked."""

    name: str
    description: str
    document: str | None = None
    streamed: Literal["length", "chunked"] | None = None

    def body_parts(self) -> tuple[bytes, bytes]:
        """The JSON body split where a distinct request adds its trailing comment."""
        assert self.document is not None
        body = orjson.dumps({"query": self.document})
        return body[:-2], body[-2:]  # ...the document | "}


def hostile_requests() -> list[Hostile]:
    """The documents of the issue, in the order an attacker sends them."""
    operation = "{ products(first:1){edges{node{name}}} }"
    spreads = " ".join(f"...F{i}" for i in range(2000))
    fragments = " ".join(f"fragment F{i} on Product {{ name }}" for i in range(2000))
    names = " ".join(["name"] * 50_000)
    aliases = " ".join(f"a{i}: markets {{ code }}" for i in range(100_000))
    comments = ("#" + "x" * 998 + "\n") * 5_000 + "{ markets { code } }"
    return [
        Hostile("300 operations", f"`{operation}` × 300", document=" ".join([operation] * 300)),
        Hostile(
            "2,000 fragments",
            "`...F0 … ...F1999` on one field, each `fragment Fi on Product { name }`",
            document=f"{{ products(first:1){{edges{{node{{ {spreads} }}}}}}}} {fragments}",
        ),
        Hostile(
            "50,000 fields",
            "`name` × 50,000 on one node",
            document=f"{{ products(first:1){{edges{{node{{ {names} }}}}}}}}",
        ),
        Hostile(
            "100,000 aliases",
            "`a0: markets { code } …` × 100,000",
            document=f"{{ {aliases} }}",
        ),
        Hostile(
            "5 MB of comments",
            "5,000 comment lines of 1,000 characters, then `{ markets { code } }`",
            document=comments,
        ),
        Hostile(
            "300 MiB body",
            "anonymous POST, Content-Length 300 MiB, streamed",
            streamed="length",
        ),
        Hostile(
            "300 MiB chunked",
            "anonymous POST, 300 MiB chunked (no Content-Length), streamed",
            streamed="chunked",
        ),
    ]


@dataclass(slots=True)
class Tally:
    """What one kind of request got: answers by status and by GraphQL code, and latency."""

    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    total_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, outcome: Answer | str, seconds: float) -> None:
        self.requests += 1
        self.total_ms += seconds * 1000
        self.max_ms = max(self.max_ms, seconds * 1000)
        if isinstance(outcome, str):
            self.statuses[outcome] += 1
            return
        self.statuses[str(outcome.status)] += 1
        for code in outcome.codes():
            self.codes[code] += 1

    def merge(self, raw: dict[str, Any]) -> None:
        """Add another tally, as `as_json` gives it (from another process)."""
        self.requests += raw["requests"]
        self.statuses.update(raw["statuses"])
        self.codes.update(raw["codes"])
        self.total_ms += raw["total_ms"]
        self.max_ms = max(self.max_ms, raw["max_ms"])

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "codes": dict(self.codes),
            "total_ms": self.total_ms,
            "max_ms": self.max_ms,
        }


ANONYMOUS = {"Content-Type": "application/json", "X-Market": "kg"}


async def _send_hostile(
    connection: Connection,
    port: int,
    hostile: Hostile,
    parts: dict[str, tuple[bytes, bytes]],
    nonce: str | None,
) -> Answer:
    if hostile.streamed is not None:
        chunked = hostile.streamed == "chunked"
        head = request_head(port, ANONYMOUS, None if chunked else HUGE_BODY_BYTES)
        return await connection.stream(head, b'{"query":"#', HUGE_BODY_BYTES, chunked)
    start, end = parts[hostile.name]
    # A trailing comment makes each request's document new to the server's cache.
    tail = orjson.dumps("\n# " + nonce)[1:-1] if nonce else b""
    body = start + tail + end
    return await connection.send(request_head(port, ANONYMOUS, len(body)) + body)


async def attack(port: int, mode: Mode, offset: int) -> dict[str, Any]:
    """Send the hostile requests one after the other, each after the last one's answer,
    until stdin ends; returns the tallies of the requests sent after `measure`."""
    requests = hostile_requests()
    parts = {h.name: h.body_parts() for h in requests if h.document is not None}
    control = Control()
    listener = asyncio.create_task(control.listen())
    _say("ready")
    await control.go.wait()
    tallies = {h.name: Tally() for h in requests}
    measuring = False
    connection = Connection(port)
    sent = 0
    while not control.stop.is_set():
        if control.measure.is_set() and not measuring:
            measuring = True
            tallies = {h.name: Tally() for h in requests}
        hostile = requests[(offset + sent) % len(requests)]
        nonce = f"{offset}-{sent}" if mode == "distinct" else None
        sent += 1
        began = time.perf_counter()
        outcome: Answer | str
        try:
            outcome = await asyncio.wait_for(
                _send_hostile(connection, port, hostile, parts, nonce), REQUEST_TIMEOUT_S
            )
        except TimeoutError:
            connection.close()
            outcome = TIMEOUT
        except DISCONNECTED:
            connection.close()
            outcome = RESET
        tallies[hostile.name].add(outcome, time.perf_counter() - began)
    connection.close()
    listener.cancel()
    seconds = time.perf_counter() - control.measured_from if measuring else 0.0
    return {"seconds": seconds, "tallies": {k: v.as_json() for k, v in tallies.items()}}


# --- the 200-connection load --------------------------------------------------------------------


async def load(port: int, connections: int, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep `connections` connections busy, each sending the given requests in turn
    (starting at its own index), one after another, from `go` until stdin ends.

    Returns per request name the answers by status and GraphQL code, how many differ from
    the `expected` body, and every latency in ms: the runner merges the processes' lists
    for exact percentiles.
    """
    built = [
        (
            str(r["name"]),
            request_head(port, r["headers"], len(r["body"].encode())) + r["body"].encode(),
            r["expected"].encode(),
        )
        for r in requests
    ]
    tallies = {name: Tally() for name, _, _ in built}
    different: Counter[str] = Counter()
    latencies: dict[str, list[float]] = {name: [] for name, _, _ in built}
    control = Control()
    listener = asyncio.create_task(control.listen())
    _say("ready")
    await control.go.wait()
    started = time.perf_counter()

    async def client(index: int) -> None:
        connection = Connection(port)
        sent = index
        while not control.stop.is_set():
            name, request, expected = built[sent % len(built)]
            sent += 1
            began = time.perf_counter()
            outcome: Answer | str
            try:
                outcome = await asyncio.wait_for(connection.send(request), REQUEST_TIMEOUT_S)
            except TimeoutError:
                connection.close()
                outcome = TIMEOUT
            except DISCONNECTED:
                connection.close()
                outcome = RESET
            took = time.perf_counter() - began
            tallies[name].add(outcome, took)
            if isinstance(outcome, Answer):
                latencies[name].append(took * 1000)
                if outcome.status == 200 and outcome.body != expected:
                    different[name] += 1
        connection.close()

    await asyncio.gather(*(client(i) for i in range(connections)))
    listener.cancel()
    return {
        "seconds": time.perf_counter() - started,
        "tallies": {k: v.as_json() for k, v in tallies.items()},
        "different": dict(different),
        "latencies_ms": latencies,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clients")
    commands = parser.add_subparsers(dest="command", required=True)
    attacker = commands.add_parser("attack", help="send the hostile requests back to back")
    attacker.add_argument("--port", type=int, required=True)
    attacker.add_argument("--mode", choices=("repeated", "distinct"), required=True)
    attacker.add_argument("--offset", type=int, default=0)
    loader = commands.add_parser("load", help="keep connections busy with the given requests")
    loader.add_argument("--port", type=int, required=True)
    loader.add_argument("--connections", type=int, required=True)
    loader.add_argument("--requests", required=True, help="JSON: [{name, body, headers, expected}]")
    args = parser.parse_args(argv)
    result: dict[str, Any]
    with contextlib.suppress(KeyboardInterrupt):
        if args.command == "attack":
            result = asyncio.run(attack(args.port, args.mode, args.offset))
        else:
            requests = orjson.loads(args.requests)
            result = asyncio.run(load(args.port, args.connections, requests))
        _say(orjson.dumps(result))
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
