"""What the data loader, the runner and the floor share: the benchmark database and secret."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/marketgraph_bench"
# Signs the runner's tokens; the servers under test are started with it. Not a real secret.
JWT_SECRET = "marketgraph-bench-not-a-secret-0123456789abcdef"  # noqa: S105
MARKETS = ("kg", "us")


class BenchError(RuntimeError):
    """A run that cannot be trusted: a mismatch, an error answer, a server that died."""


def database_url(given: str | None = None) -> URL:
    """The benchmark database: `given`, else BENCH_DATABASE_URL, else the local default.

    Deliberately not DATABASE_URL: the loader truncates every table, and a developer's
    DATABASE_URL usually points at data they want to keep.
    """
    raw = given or os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    return make_url(raw).set(drivername="postgresql+asyncpg")


def plain_url(url: URL) -> str:
    """`url` as a `postgresql://` string: the servers' DATABASE_URL, asyncpg's own DSN."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
