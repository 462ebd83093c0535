"""Prometheus metrics: request latency, GraphQL errors by code, pools per store, and SQL
statements per request.

Each app has its own registry (no global state), served at `/metrics`.
Statements are counted by a `before_cursor_execute` listener on every engine into a
counter the request's context variable holds; SQLAlchemy runs the listener in a
greenlet that shares the request task's context, so concurrent requests never mix
their counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.pool import QueuePool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketgraph.db.databases import Databases
from marketgraph.middleware import route_path


@dataclass(slots=True)
class StatementCount:
    """Statements one request ran, by store name (`kg.app`)."""

    by_store: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_store.values())


statement_count: ContextVar[StatementCount | None] = ContextVar("statement_count", default=None)


def record_statement(databases: Databases, store: str, statement: str) -> None:
    """Count one statement on `store` for the current request and tell the observers
    (tests and the benchmark count statements per operation through them)."""
    counter = statement_count.get()
    if counter is not None:
        counter.by_store[store] = counter.by_store.get(store, 0) + 1
    for observer in databases.statement_observers:
        observer(store, statement)


def statement_store(databases: Databases) -> Callable[[Any, Any], str]:
    """How a SQLAlchemy statement's store is named from its connection and execution context
    (`kg.app`, else "other"): the schema_translate_map puts the store's schema."""
    store_by_schema = {store.schema: str(store.key) for store in databases.stores}

    def store_of(conn: Any, context: Any) -> str:
        options = context.execution_options if context is not None else {}
        translate = options.get("schema_translate_map") or conn.get_execution_options().get(
            "schema_translate_map", {}
        )
        return store_by_schema.get(translate.get(None), "other")

    return store_of


def count_statements(databases: Databases) -> None:
    """Record every statement SQLAlchemy sends to these engines (listener added once)."""
    store_of = statement_store(databases)

    def on_statement(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        record_statement(databases, store_of(conn, context), statement)

    for engine in databases.engines:
        if getattr(engine.sync_engine, "_marketgraph_counted", False):
            continue
        event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
        engine.sync_engine._marketgraph_counted = True  # type: ignore[attr-defined]


PLANNER_OUTCOMES = ("planned", "fallback", "strawberry")


class Metrics:
    """The app's instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "marketgraph_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.graphql_errors = Counter(
            "marketgraph_graphql_errors_total",
            "GraphQL errors answered, by extensions.code",
            ["code"],
            registry=self.registry,
        )
        self.planner = Counter(
            "marketgraph_planner_requests_total",
            "GraphQL requests by how they were served: planned, fallback (the plan raised and "
            "Strawberry re-ran it) or strawberry (not plannable)",
            ["outcome"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "marketgraph_planner_fallbacks_total",
            "Planned runs Strawberry re-ran, by reason: error (the request has a GraphQL error, "
            "which Strawberry words with its path), a Fallback's reason (an Int out of range, a "
            "missing row a non-null field needs), or the exception's class (a planner bug)",
            ["reason"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "marketgraph_requests_refused_total",
            "Requests refused at the edge before any work: busy (load shed), headers, body "
            "(too large), body_timeout (not sent within REQUEST_READ_TIMEOUT), draining "
            "(arrived after SIGTERM), shutdown (still running when SHUTDOWN_GRACE ended)",
            ["reason"],
            registry=self.registry,
        )
        self.statements = Histogram(
            "marketgraph_sql_statements_per_request",
            "SQL statements one request ran",
            ["route"],
            buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=self.registry,
        )
        # Labelled children by label values: looking one up in prometheus_client costs more
        # than observing it, on every request.
        self._latency: dict[tuple[str, str, int], Any] = {}
        self._statements: dict[str, Any] = {}
        self._outcomes = {name: self.planner.labels(name) for name in PLANNER_OUTCOMES}

    def observe_request(
        self, method: str, route: str, status: int, seconds: float, statements: int
    ) -> None:
        key = (method, route, status)
        latency = self._latency.get(key)
        if latency is None:
            latency = self._latency[key] = self.request_seconds.labels(method, route, str(status))
        latency.observe(seconds)
        counts = self._statements.get(route)
        if counts is None:
            counts = self._statements[route] = self.statements.labels(route)
        counts.observe(statements)

    def refused(self, reason: str) -> None:
        """Count one request refused at the edge (`reason`: a fixed word, not client input)."""
        self.refusals.labels(reason).inc()

    def planner_outcome(self, outcome: str) -> None:
        """Count one GraphQL request by how it was served (one of PLANNER_OUTCOMES)."""
        self._outcomes[outcome].inc()

    def planner_fallback(self, reason: str) -> None:
        """Count one planned run that fell back to Strawberry, by reason."""
        self.planner_outcome("fallback")
        self.fallbacks.labels(reason).inc()

    def watch_pools(self, databases: Databases) -> None:
        self.registry.register(_PoolCollector(databases))
        self.registry.register(_ReplicaCollector(databases))


class _ReplicaCollector(Collector):
    """Each store's reads by the server that served them, and each standby's lag."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    def collect(self) -> Iterator[Metric]:
        reads = CounterMetricFamily(
            "marketgraph_db_reads",
            "Reads of a store that has replicas, by the server that served them",
            labels=["store", "server"],
        )
        lag = GaugeMetricFamily(
            "marketgraph_replica_lag_seconds",
            "How far a standby was behind its primary at its last check",
            labels=["primary", "replica"],
        )
        up = GaugeMetricFamily(
            "marketgraph_replica_up",
            "1 while a standby may serve reads (reachable, within REPLICA_MAX_LAG)",
            labels=["primary", "replica"],
        )
        now = time.monotonic()
        for replicas in self._databases.replica_sets:
            for (store, server), count in sorted(replicas.reads.items()):
                reads.add_metric([store, server], count)
            for replica in replicas.replicas:
                labels = [replicas.name, replica.name]
                if replica.lag is not None:
                    lag.add_metric(labels, replica.lag)
                up.add_metric(labels, 1 if replica.fresh_enough(replicas.max_lag, now) else 0)
        yield from (reads, lag, up)


class _PoolCollector(Collector):
    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("marketgraph_pool_size", "Pool size", labels=["store"])
        out = GaugeMetricFamily(
            "marketgraph_pool_checked_out", "Connections in use", labels=["store"]
        )
        overflow = GaugeMetricFamily(
            "marketgraph_pool_overflow", "Connections over the pool size", labels=["store"]
        )
        for store in self._databases.stores:
            pool = store.engine.pool
            if isinstance(pool, QueuePool):
                name = str(store.key)
                size.add_metric([name], pool.size())
                out.add_metric([name], pool.checkedout())
                overflow.add_metric([name], max(pool.overflow(), 0))
        yield from (size, out, overflow)


_ROUTES = {
    "/graphql",
    "/health",
    "/health/ready",
    "/health/detailed",
    "/metrics",
    "/webhooks/payments",
    "/.well-known/jwks.json",
}

# Labels take known values only: a client's made-up path or method must not grow the registry.
_METHODS = {"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"}


class MetricsMiddleware:
    """Times every HTTP request and counts its SQL statements."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        route = path if path in _ROUTES else "other"
        method = scope["method"] if scope["method"] in _METHODS else "other"
        status = 500
        counter = StatementCount()
        token = statement_count.set(counter)
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            statement_count.reset(token)
            self.metrics.observe_request(
                method, route, status, time.perf_counter() - started, counter.total
            )


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
