"""Real streaming replicas for tests: a throwaway primary and N hot standbys on 127.0.0.1.

    server = ReplicatedServer(replicas=1)
    await server.start()
    try:
        url = await server.create_database("mg_repl")   # the primary's URL to it
        replica = server.replica_urls[0].set(database="mg_repl")
        await server.pause_replay(0)                      # the replica stops applying WAL
        ...
    finally:
        await server.stop()

The primary is initdb'd (once per process, then copied) in a temporary directory — in
memory-backed /dev/shm where it has room — with fsync off, small buffers, trust
authentication on 127.0.0.1 only and a free port; each replica is a `pg_basebackup -R -S
<slot> -X stream` of it on a physical replication slot, started on a free port of its
own. PostgreSQL refuses to run as root: under root every server binary runs as the
`postgres` OS user (`runuser`), with the directory handed to it.

Binaries: the newest /usr/lib/postgresql/<version>/bin, else pgserver's bundled
pginstall/bin, else `pg_config --bindir`. Without them the test is skipped with the
reason, or failed when CI=true (CI must not silently lose these tests).

Nothing is left behind: `stop()` (also after a failed start) stops every server and
removes the directory, and an atexit hook does the same for a server never stopped.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import asyncpg
import pytest
from sqlalchemy.engine import URL

REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
OS_USER = "postgres"  # who runs the servers when the tests run as root
SUPERUSER = "postgres"  # the database superuser initdb creates
HOST = "127.0.0.1"
SHM_MIN_FREE = 1 << 30  # bytes of /dev/shm to leave it for the clusters
STOP_GRACE = 10.0  # seconds an immediate shutdown may take before SIGKILL

# Start-up speed over durability: nothing here outlives the test run.
PRIMARY_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "hot_standby": "on",
    "wal_receiver_status_interval": "'1s'",  # its smallest value: the primary learns fast
    "wal_retrieve_retry_interval": "'100ms'",  # a restarted replica reconnects quickly
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "'16MB'",
    "max_connections": "100",  # stock: the app's pool budget check (DB_BUDGET_CHECK) fits
    "autovacuum": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
}

PG_HBA = f"""\
# ReplicatedServer: trust, on 127.0.0.1 and the socket only
local   all          all                 trust
local   replication  all                 trust
host    all          all   {HOST}/32     trust
host    replication  all   {HOST}/32     trust
"""


# initdb'd data directories by (binaries, run as OS_USER): see ReplicatedServer._template.
_TEMPLATES: dict[tuple[Path, bool], Path] = {}
_TEMPLATES_LOCK = threading.Lock()


def _fail_or_skip(reason: str) -> NoReturn:
    """Skip a test that cannot have its servers, but fail it in CI, which must run it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"replication tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name)) or (0,)


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl, postgres and pg_basebackup are, or None."""
    candidates: list[Path] = []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if p.is_dir()), key=_version_key)
        candidates += [p / "bin" for p in reversed(versions)]
    spec = importlib.util.find_spec("pgserver")  # located, not imported (it warns at import)
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    return next((c for c in candidates if _has_binaries(c)), None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL writes it: 0/3000148."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


class CommandError(RuntimeError):
    """A server binary failed; the message holds its output."""


@dataclass
class _Node:
    name: str
    datadir: Path
    port: int
    slot: str | None = None  # a replica's replication slot on the primary
    running: bool = False
    paused: bool = False  # replay paused (a restart resumes it)

    @property
    def log(self) -> Path:
        return self.datadir.parent / f"{self.name}.log"


class ReplicatedServer:
    """A primary with `replicas` streaming hot standbys; see the module's docstring."""

    def __init__(self, replicas: int = 1, *, start_timeout: float = 30.0) -> None:
        if replicas < 0:
            raise ValueError("replicas must be 0 or more")
        self.replica_count = replicas
        self.start_timeout = start_timeout
        self.bindir: Path | None = None
        self.root: Path | None = None
        self.startup_seconds: float | None = None  # primary + replicas, set by start()
        self._primary: _Node | None = None
        self._replicas: list[_Node] = []
        self._as_postgres = os.geteuid() == 0

    # -- URLs ---------------------------------------------------------------------------

    @property
    def primary_url(self) -> URL:
        """The primary's `postgres` database (`.set(database=...)` for another)."""
        return self._url(self._need_primary().port)

    @property
    def replica_urls(self) -> list[URL]:
        """Each replica's `postgres` database, in replica order."""
        return [self._url(node.port) for node in self._replicas]

    @staticmethod
    def _url(port: int, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+asyncpg", username=SUPERUSER, host=HOST, port=port, database=database
        )

    # -- life cycle ---------------------------------------------------------------------

    async def __aenter__(self) -> ReplicatedServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """initdb and start the primary, clone and start every replica, wait until each
        streams. Skips the test (fails it in CI) when PostgreSQL's binaries are missing."""
        if self.root is not None:
            raise RuntimeError("this ReplicatedServer was already started")
        self.bindir = find_bindir()
        if self.bindir is None:
            _fail_or_skip(
                "no PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup) in "
                "/usr/lib/postgresql/*/bin, pgserver's pginstall/bin or `pg_config --bindir`"
            )
        if self._as_postgres and (shutil.which("runuser") is None or not _user_exists(OS_USER)):
            _fail_or_skip(f"running as root needs `runuser` and an OS user {OS_USER!r}")
        began = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="mg-repl-", dir=_scratch_dir()))
        atexit.register(self._cleanup)
        try:
            await self._start()
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self._cleanup))
            raise
        self.startup_seconds = time.monotonic() - began

    async def _start(self) -> None:
        root = self._need_root()
        (root / "sock").mkdir()
        self._chown(root)
        primary = _Node("primary", root / "primary", free_port())
        template = await asyncio.to_thread(self._template)
        await asyncio.to_thread(shutil.copytree, template, primary.datadir, symlinks=True)
        settings = {
            **PRIMARY_SETTINGS,
            "port": str(primary.port),
            "unix_socket_directories": f"'{root / 'sock'}'",
        }
        _append_conf(primary.datadir / "postgresql.conf", settings)
        (primary.datadir / "pg_hba.conf").write_text(PG_HBA, encoding="utf-8")
        self._chown(primary.datadir)
        self._primary = primary
        await self._pg_ctl_start(primary)
        self._replicas = [
            _Node(f"replica{i}", root / f"replica{i}", free_port(), slot=f"replica{i}")
            for i in range(self.replica_count)
        ]
        conn = await self._connect(primary)
        try:
            for node in self._replicas:
                # Reserving WAL now, not at the first connection: concurrent clones' fast
                # checkpoints would otherwise recycle segments another clone still needs.
                await conn.execute(
                    "SELECT pg_create_physical_replication_slot($1, true)", node.slot
                )
        finally:
            await conn.close()
        await asyncio.gather(*(self._clone(node) for node in self._replicas))
        await asyncio.gather(*(self._start_replica(node) for node in self._replicas))

    def _template(self) -> Path:
        """An initdb'd data directory, made once per process and binaries, copied for each
        primary: initdb is most of a start-up's time."""
        assert self.bindir is not None
        key = (self.bindir, self._as_postgres)
        with _TEMPLATES_LOCK:
            return _TEMPLATES.get(key) or self._make_template(key)

    def _make_template(self, key: tuple[Path, bool]) -> Path:
        parent = Path(tempfile.mkdtemp(prefix="mg-repl-template-", dir=_scratch_dir()))
        atexit.register(shutil.rmtree, parent, ignore_errors=True)
        self._chown(parent)
        template = parent / "data"
        self._run_sync(
            "initdb", "-D", str(template), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions", "--wal-segsize=1",
        )  # fmt: skip
        _TEMPLATES[key] = template
        return template

    async def _clone(self, node: _Node) -> None:
        primary = self._need_primary()
        assert node.slot is not None
        await self._run(
            "pg_basebackup", "-h", HOST, "-p", str(primary.port), "-U", SUPERUSER,
            "-D", str(node.datadir), "-R", "-S", node.slot, "-X", "stream",
            "-c", "fast", "--no-sync", "--no-manifest",
        )  # fmt: skip
        # The clone carries the primary's port; a later line wins.
        _append_conf(node.datadir / "postgresql.conf", {"port": str(node.port)})

    async def stop(self) -> None:
        """Stop every server and remove the directory (safe to call twice, or unstarted)."""
        await asyncio.to_thread(self._cleanup)

    def _cleanup(self) -> None:
        """Synchronous, for atexit too: an immediate shutdown of every server at once
        (SIGQUIT, as `pg_ctl stop -m immediate`), SIGKILL for any still there after
        STOP_GRACE seconds, then the directory goes."""
        nodes = [n for n in (self._primary, *self._replicas) if n is not None]
        postmasters = [pid for n in nodes if (pid := _postmaster_pid(n.datadir)) is not None]
        for pid in postmasters:
            _signal(pid, signal.SIGQUIT)
        deadline = time.monotonic() + STOP_GRACE
        while any(_alive(pid) for pid in postmasters) and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in postmasters:
            if _alive(pid):
                for child in _children(pid):
                    _signal(child, signal.SIGKILL)
                _signal(pid, signal.SIGKILL)
        for node in nodes:
            node.running = False
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self._cleanup)

    # -- replicas -----------------------------------------------------------------------

    async def pause_replay(self, i: int) -> None:
        """Replica `i` keeps receiving WAL but applies none of it until `resume_replay`."""
        node = self._replica(i)
        conn = await self._connect(node)
        try:
            await conn.execute("SELECT pg_wal_replay_pause()")
            node.paused = True
            await _until(
                lambda: _fetch_bool(conn, "SELECT pg_get_wal_replay_pause_state() = 'paused'"),
                self.start_timeout,
                f"{node.name} did not pause replay",
            )
        finally:
            await conn.close()

    async def resume_replay(self, i: int) -> None:
        node = self._replica(i)
        conn = await self._connect(node)
        try:
            await conn.execute("SELECT pg_wal_replay_resume()")
            node.paused = False
        finally:
            await conn.close()

    async def stop_replica(self, i: int) -> None:
        """Stop replica `i` (`pg_ctl stop -m fast`): it refuses connections until started."""
        node = self._replica(i)
        await self._run("pg_ctl", "-D", str(node.datadir), "-m", "fast", "-w", "stop")
        node.running = False

    async def start_replica(self, i: int) -> None:
        """Start replica `i` again and wait until it streams from the primary."""
        await self._start_replica(self._replica(i))

    async def replay_lsn(self, i: int) -> int | None:
        """The last WAL position replica `i` replayed, as a byte position (`format_lsn`)."""
        conn = await self._connect(self._replica(i))
        try:
            return await _lsn(conn, "pg_last_wal_replay_lsn()")
        finally:
            await conn.close()

    async def primary_lsn(self) -> int:
        """The primary's current WAL write position."""
        conn = await self._connect(self._need_primary())
        try:
            lsn = await _lsn(conn, "pg_current_wal_lsn()")
            assert lsn is not None
            return lsn
        finally:
            await conn.close()

    async def wait_caught_up(self, i: int, within: float | None = None) -> int:
        """Wait until replica `i` replayed everything the primary had written when called;
        return that position. A replica with paused replay times out."""
        target = await self.primary_lsn()
        node = self._replica(i)
        conn = await self._connect(node)
        try:

            async def caught_up() -> bool:
                lsn = await _lsn(conn, "pg_last_wal_replay_lsn()")
                return lsn is not None and lsn >= target

            await _until(
                caught_up,
                within or self.start_timeout,
                f"{node.name} did not replay up to {format_lsn(target)}",
            )
        finally:
            await conn.close()
        return target

    async def create_database(self, name: str) -> URL:
        """CREATE DATABASE on the primary, wait until every running replica (but those with
        replay paused) has it, and return the primary's URL to it
        (`replica_urls[i].set(database=name)` for a replica's)."""
        conn = await self._connect(self._need_primary())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        for i, node in enumerate(self._replicas):
            if node.running and not node.paused:
                await self.wait_caught_up(i)
        return self.primary_url.set(database=name)

    # -- internals ----------------------------------------------------------------------

    async def _start_replica(self, node: _Node) -> None:
        await self._pg_ctl_start(node)
        conn = await self._connect(node)
        try:
            await _until(
                lambda: _fetch_bool(
                    conn,
                    "SELECT pg_is_in_recovery() AND EXISTS "
                    "(SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')",
                ),
                self.start_timeout,
                f"{node.name} did not start streaming",
            )
        finally:
            await conn.close()

    async def _pg_ctl_start(self, node: _Node, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                await self._run(
                    "pg_ctl", "-D", str(node.datadir), "-l", str(node.log), "-w",
                    "-t", str(int(self.start_timeout)), "start",
                )  # fmt: skip
                break
            except CommandError as exc:
                log = _tail(node.log)
                if "could not bind" not in log or attempt == attempts - 1:
                    raise CommandError(f"{exc}\n{node.name}'s log ends:\n{log}") from None
                # Another process took the free port since: take another.
                node.port = free_port()
                _append_conf(node.datadir / "postgresql.conf", {"port": str(node.port)})
        node.running = True
        node.paused = False

    async def _connect(self, node: _Node) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=HOST, port=node.port, user=SUPERUSER, database="postgres", timeout=10
        )

    async def _run(self, binary: str, *args: str) -> None:
        await asyncio.to_thread(self._run_sync, binary, *args)

    def _run_sync(self, binary: str, *args: str, check: bool = True) -> None:
        assert self.bindir is not None
        command = [str(self.bindir / binary), *args]
        if self._as_postgres:
            command = ["runuser", "-u", OS_USER, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.root,  # the servers' user may not be allowed into the caller's directory
            capture_output=True,
            text=True,
            timeout=self.start_timeout * 2,
            check=False,
        )
        if check and result.returncode != 0:
            raise CommandError(
                f"{' '.join(command)} exited with {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )

    def _chown(self, path: Path) -> None:
        """Hand `path` (recursively) to the servers' OS user, when that is not us."""
        if not self._as_postgres:
            return
        shutil.chown(path, OS_USER, OS_USER)
        for parent, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                shutil.chown(Path(parent) / name, OS_USER, OS_USER)

    def _need_root(self) -> Path:
        if self.root is None:
            raise RuntimeError("ReplicatedServer is not started")
        return self.root

    def _need_primary(self) -> _Node:
        if self._primary is None:
            raise RuntimeError("ReplicatedServer is not started")
        return self._primary

    def _replica(self, i: int) -> _Node:
        if not 0 <= i < len(self._replicas):
            raise IndexError(f"no replica {i} (there are {len(self._replicas)})")
        return self._replicas[i]


def _scratch_dir() -> str | None:
    """Memory-backed /dev/shm where there is one: the clusters are throwaway, and on disk
    copying and cloning them is most of a start-up. Else the usual temporary directory."""
    shm = "/dev/shm"  # noqa: S108 - a private mkdtemp below it, never a fixed name
    try:
        usable = os.access(shm, os.W_OK | os.X_OK)
        stat = os.statvfs(shm)
    except OSError:
        return None
    # A container's default 64 MiB /dev/shm would not hold three clusters of ~30 MiB.
    return shm if usable and stat.f_bavail * stat.f_frsize >= SHM_MIN_FREE else None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _append_conf(path: Path, settings: dict[str, str]) -> None:
    lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
    with path.open("a", encoding="utf-8") as conf:
        conf.write(f"\n# ReplicatedServer\n{lines}")


def _postmaster_pid(datadir: Path) -> int | None:
    """The running postmaster of `datadir`, by its pid file — and checked by its command
    line naming `datadir`, so that a stale file's reused pid is never signalled."""
    try:
        pid = int((datadir / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if str(datadir) in cmdline else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return state[0] != "Z"  # a zombie has exited; whoever reaps it is not us


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (proc / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(proc.name))
    return found


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def processes_under(path: Path) -> list[int]:
    """The postmasters whose command line names something under `path`, and their
    children (servers' processes retitle themselves, so only the postmaster names its
    directory): what `stop` must leave none of."""
    postmasters = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(path) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    postmasters.append(int(proc.name))
    return [p for pid in postmasters if _alive(pid) for p in (pid, *_children(pid))]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _fetch_bool(conn: asyncpg.Connection, sql: str) -> bool:
    return bool(await conn.fetchval(sql))


async def _lsn(conn: asyncpg.Connection, expression: str) -> int | None:
    text: str | None = await conn.fetchval(f"SELECT ({expression})::text")
    return parse_lsn(text) if text is not None else None


async def _until(
    check: Callable[[], Awaitable[bool]], within: float, message: str, *, every: float = 0.02
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} within {within:g} s")
        await asyncio.sleep(every)


__all__ = [
    "CommandError",
    "ReplicatedServer",
    "find_bindir",
    "format_lsn",
    "free_port",
    "parse_lsn",
    "processes_under",
]
