"""A real PgBouncer (the Debian package's binary) in transaction mode, in front of a PostgreSQL
server the tests use, on a free loopback port; and a reader for its admin console.

`running_pgbouncer(server_url)` starts one with its configuration in a temporary directory
and stops it at the end. Every database of the server is reachable through it by name (the
`*` fallback entry), with the client's user name and trust authentication; the user of
`server_url` is also an admin of the console (`SHOW STATS`, `SHOW POOLS`, ...), which
`PgBouncer.show` reads.

PgBouncer refuses to run as root: as root it runs as the `postgres` OS user (else `nobody`),
or as the owner of the embedded server's socket directory.
Without the binary the calling test is skipped with the reason, except on CI (CI=true), where
it fails: `.ci/run` installs the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from tests.faults import postgres_upstream

START_TIMEOUT = 10.0


def pgbouncer_binary() -> str:
    """The pgbouncer executable; the test is skipped without one (failed on CI)."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        reason = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; .ci/run installs it", pytrace=False)
        pytest.skip(reason)
    return found


class PgBouncer:
    """One running PgBouncer: where it listens, and URLs and the admin console through it."""

    def __init__(self, port: int, admin_user: str, process: subprocess.Popen[bytes], log: Path):
        self.port = port
        self.admin_user = admin_user
        self.process = process
        self.log = log

    def url(self, url: URL) -> URL:
        """`url` (a database on the server behind), connecting through PgBouncer instead."""
        query = {k: v for k, v in url.query.items() if k != "host"}
        return url.set(host="127.0.0.1", port=self.port, query=query)

    def route(self, database_urls: dict[str, str]) -> dict[str, str]:
        """Database variables (name -> URL text), each URL through PgBouncer."""
        return {
            name: self.url(make_url(value)).render_as_string(hide_password=False)
            for name, value in database_urls.items()
        }

    async def show(self, what: str) -> list[dict[str, str | None]]:
        """The rows of the admin console's `SHOW <what>` (STATS, POOLS, CLIENTS, ...).

        The console speaks only the simple query protocol, which asyncpg does not use for
        statements with results: this is the few messages of it that are needed.
        """
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            params = f"user\0{self.admin_user}\0database\0pgbouncer\0\0".encode()
            writer.write(struct.pack("!ii", 8 + len(params), 196608) + params)
            await _until_ready(reader)
            sql = f"SHOW {what}\0".encode()
            writer.write(b"Q" + struct.pack("!i", 4 + len(sql)) + sql)
            columns: list[str] = []
            rows: list[dict[str, str | None]] = []
            while True:
                kind, body = await _message(reader)
                if kind == b"T":
                    columns = _column_names(body)
                elif kind == b"D":
                    rows.append(dict(zip(columns, _values(body), strict=True)))
                elif kind == b"E":
                    raise RuntimeError(f"pgbouncer: SHOW {what}: {_error_text(body)}")
                elif kind == b"Z":
                    return rows
        finally:
            with contextlib.suppress(OSError):
                writer.write(b"X" + struct.pack("!i", 4))
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.contextmanager
def running_pgbouncer(server_url: URL, *, pool_size: int = 10) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode in front of the server of `server_url`, stopped after.

    `pool_size` is its server connections per database (and user); clients beyond wait.
    """
    binary = pgbouncer_binary()
    host, port = postgres_upstream(server_url)
    socket_dir = None
    if port is None:  # a Unix socket's path: PgBouncer takes its directory and the port
        socket_dir, _, name = host.rpartition("/")
        host, port = socket_dir, int(name.rsplit(".", 1)[1])
    user = server_url.username or "postgres"
    password = server_url.password or ""
    run_as = _unprivileged_user(socket_dir) if os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory(prefix="mg-pgbouncer-") as tmp:
        work = Path(tmp)
        (work / "userlist.txt").write_text(f'"{user}" "{_quoted(str(password))}"\n')
        if run_as is not None:
            for path in (work, work / "userlist.txt"):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
        log = work / "pgbouncer.log"
        process = None
        for _attempt in range(3):  # a free port may be taken between finding and binding it
            listen_port = _free_port()
            config = work / "pgbouncer.ini"
            config.write_text(
                _config(work, listen_port, host, port, user, pool_size),
            )
            process = subprocess.Popen(
                [binary, str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                user=None if run_as is None else run_as.pw_uid,
                group=None if run_as is None else run_as.pw_gid,
                extra_groups=None if run_as is None else [],
            )
            if _wait_listening(listen_port, process):
                break
            _stop(process)
            process = None
        if process is None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pgbouncer did not start; its log ends:\n{tail}")
        try:
            yield PgBouncer(listen_port, user, process, log)
        finally:
            _stop(process)


def _config(work: Path, listen_port: int, host: str, port: int, user: str, pool: int) -> str:
    return f"""\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
pool_mode = transaction
auth_type = trust
auth_file = {work}/userlist.txt
admin_users = {user}
stats_users = {user}
default_pool_size = {pool}
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits
logfile = {work}/pgbouncer.log
pidfile = {work}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
"""


def _quoted(value: str) -> str:
    return value.replace('"', '""')


def _unprivileged_user(socket_dir: str | None) -> pwd.struct_passwd:
    """Whom a root process runs PgBouncer as: the owner of the server's socket directory
    (the embedded server's, whose directory only its owner may enter), else postgres."""
    if socket_dir is not None:
        owner = os.stat(socket_dir).st_uid
        if owner != 0:
            return pwd.getpwuid(owner)
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither a postgres nor a nobody user to run as")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    """True once PgBouncer accepts on `port`; False if it exits or does not within the limit."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT is PgBouncer's immediate shutdown; killed if it lingers."""
    if process.poll() is None:
        process.send_signal(2)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the simple query protocol, as far as the admin console needs it ---------------------------


async def _message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    (length,) = struct.unpack("!i", header[1:])
    return header[:1], await reader.readexactly(length - 4)


async def _until_ready(reader: asyncio.StreamReader) -> None:
    while True:
        kind, body = await _message(reader)
        if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
            raise RuntimeError("pgbouncer's admin console asked for a password")
        if kind == b"E":
            raise RuntimeError(f"pgbouncer: {_error_text(body)}")
        if kind == b"Z":
            return


def _column_names(body: bytes) -> list[str]:
    (count,) = struct.unpack("!h", body[:2])
    names, at = [], 2
    for _ in range(count):
        end = body.index(b"\0", at)
        names.append(body[at:end].decode())
        at = end + 1 + 18  # table oid, column, type oid, size, modifier, format
    return names


def _values(body: bytes) -> list[str | None]:
    (count,) = struct.unpack("!h", body[:2])
    values: list[str | None] = []
    at = 2
    for _ in range(count):
        (size,) = struct.unpack("!i", body[at : at + 4])
        at += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[at : at + size].decode())
            at += size
    return values


def _error_text(body: bytes) -> str:
    fields = {part[:1]: part[1:].decode(errors="replace") for part in body.split(b"\0") if part}
    return fields.get(b"M", "error")
