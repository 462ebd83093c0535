"""PostGraphile v4, the benchmark's measuring stick: its install, viewer, tokens and answers.

A peer, not a dependency: the Node project in bench/postgraphile/ (package.json and
its lock) is installed with `npm ci` the first time a run includes it, and a machine
without Node.js runs without it. Its `viewer()` lives in a schema of its own
(`postgraphile_bench`, bench/postgraphile/setup.sql) that the runner creates for
the run and drops after it, so marketgraph's stores and migrations never see it.

Its answers cannot be byte-identical to marketgraph's (other field names, raw money
columns, UUIDs for ids), so the runner checks them for errors and sizes and compares
their *values* with marketgraph's: the leaves in document order, numbers and times
normalised, global ids decoded, `formatted` and the peer's `peer_only` fields left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import orjson

from bench.common import JWT_SECRET, BenchError
from bench.queries import QUERIES, Query
from marketgraph.errors import DomainError
from marketgraph.ids import decode_id

NAME = "postgraphile"
NODE_DIR = Path(__file__).resolve().parent / "postgraphile"
SERVER_JS = NODE_DIR / "server.js"
SETUP_SQL = NODE_DIR / "setup.sql"
TEARDOWN_SQL = "DROP SCHEMA IF EXISTS postgraphile_bench CASCADE"
# server.js verifies these (jwtVerifyOptions); the secret is the servers' JWT_SECRET.
JWT_AUDIENCE = "postgraphile-bench"
JWT_ISSUER = "marketgraph-bench"
TOKEN_TTL_S = 24 * 3600
NPM_TIMEOUT_S = 600.0
_INTEGER = re.compile(r"-?\d+")


def node() -> str | None:
    """The `node` executable, or None: without it the peer is skipped, not an error."""
    return shutil.which("node")


def _installed() -> bool:
    return (NODE_DIR / "node_modules" / "postgraphile" / "package.json").exists()


async def ensure_installed(say: Callable[[str], None]) -> str | None:
    """Install the Node project (`npm ci`, from the committed lock) if it is not yet;
    None when PostGraphile can run, else why it is skipped."""
    if node() is None:
        return "Node.js is not installed: no `node` on PATH"
    if _installed():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed, and bench/postgraphile/node_modules is missing"
    say("PostGraphile: npm ci in bench/postgraphile (first use)")
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm ci failed: {exc}"
    if done.returncode != 0 or not _installed():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-10:])
        return f"npm ci failed with {done.returncode}:\n{tail}"
    return None


def versions() -> str:
    """`postgraphile 4.x.y, … on Node.js vN` for the report's machine table."""
    parts = []
    for package in ("postgraphile", "@graphile-contrib/pg-simplify-inflector"):
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        try:
            parts.append(f"{package} {json.loads(manifest.read_text())['version']}")
        except (OSError, ValueError, KeyError):
            parts.append(f"{package} ?")
    executable = node()
    node_version = "?"
    if executable:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            node_version = subprocess.run(
                [executable, "--version"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
    return ", ".join(parts) + f" on Node.js {node_version}"


async def install_viewer(conn: asyncpg.Connection) -> None:
    """Create (or replace) `postgraphile_bench.viewer()`: idempotent."""
    try:
        await conn.execute(SETUP_SQL.read_text())
    except asyncpg.PostgresError as exc:
        raise BenchError(f"PostGraphile's viewer(): {exc}") from None


async def drop_viewer(conn: asyncpg.Connection) -> None:
    """Drop the peer's schema, so that nothing depends on kg_auth.users' row type after the run."""
    await conn.execute(TEARDOWN_SQL)


def requests(member: uuid.UUID, admin: uuid.UUID) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Body and headers of each query for PostGraphile: its document, and a bearer token
    (HS256, JWT_SECRET) whose `sub` is the caller's id; the anonymous query has none."""
    now = int(time.time())
    bearer = {
        caller: jwt.encode(
            {
                "sub": str(user),
                "iat": now,
                "exp": now + TOKEN_TTL_S,
                "iss": JWT_ISSUER,
                "aud": JWT_AUDIENCE,
            },
            JWT_SECRET,
            algorithm="HS256",
        )
        for caller, user in (("member", member), ("admin", admin))
    }
    out = {}
    for name, query in QUERIES.items():
        headers = {"Content-Type": "application/json"}
        if query.caller != "anonymous":
            headers["Authorization"] = f"Bearer {bearer[query.caller]}"
        out[name] = (orjson.dumps({"query": query.peer}), headers)
    return out


def _scalar(key: str, value: Any) -> Any:
    """One leaf, comparable across the two servers: integers (PostGraphile sends bigints as
    strings), instants (either's ISO format), ids as UUIDs (marketgraph's are global ids)."""
    if isinstance(value, str):
        if key == "id":
            try:
                return str(decode_id(value).key)
            except DomainError:
                return value
        if _INTEGER.fullmatch(value):
            return int(value)
        if len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
            try:
                return dt.datetime.fromisoformat(value).astimezone(dt.UTC).isoformat()
            except ValueError:
                return value
    return value


def leaves(value: Any, skip: frozenset[str], key: str = "") -> Iterator[Any]:
    """The scalars of a JSON answer in document order, without the fields named in `skip`."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in skip:
                yield from leaves(v, skip, k)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item, skip, key)
    else:
        yield _scalar(key, value)


def compare_values(query: Query, reference: bytes, peer: bytes) -> str | None:
    """Where the peer's answer holds other values than marketgraph's, or None."""
    ours = list(leaves(orjson.loads(reference)["data"], frozenset({"formatted"})))
    theirs = list(leaves(orjson.loads(peer)["data"], query.peer_only))
    if ours == theirs:
        return None
    if len(ours) != len(theirs):
        return f"{len(ours)} values != {len(theirs)}"
    at = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
    return f"value {at}: {ours[at]!r} != {theirs[at]!r}"
