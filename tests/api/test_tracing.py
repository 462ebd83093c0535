"""Traces: a request's span holds its operation's (planned, Strawberry's, or a planned run
that fell back and Strawberry's after it), which hold a span per SQL statement naming its
store; a caller's `traceparent` is joined; spans reach an OTLP/HTTP collector."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from marketgraph import tracing
from marketgraph.db.databases import Databases
from marketgraph.planner import inline
from tests.factories import create_product
from tests.helpers import data, gql, http_client, register

PRODUCTS = "{ products(first: 2) { edges { node { id name } } } }"
REQUEST_ID = "trace-0001"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans of the apps built in the test, kept in memory (tracing is off before and after)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(previous)
        provider.shutdown()


@pytest.fixture
async def products(stores: Databases) -> None:
    for n in range(3):
        await create_product(stores.store("kg", "app"), name=f"Товар {n}")


async def post(app: Starlette, query: str, headers: dict[str, str] | None = None) -> Any:
    async with http_client(app) as client:
        return data(
            await gql(
                client,
                query,
                headers={"X-Market": "kg", "X-Request-ID": REQUEST_ID, **(headers or {})},
            )
        )


class Trace:
    """The finished spans of one request, by parent."""

    def __init__(self, finished: Sequence[ReadableSpan]) -> None:
        self.spans = list(finished)
        [self.request] = [s for s in self.spans if s.kind is SpanKind.SERVER]
        self.operations = self.children(self.request, "graphql.operation.type")

    def children(self, parent: ReadableSpan, attribute: str) -> list[ReadableSpan]:
        """`parent`'s children that have `attribute`, in the order they started."""
        assert parent.context is not None
        found = [
            s
            for s in self.spans
            if s.parent is not None
            and s.parent.span_id == parent.context.span_id
            and attribute in (s.attributes or {})
        ]
        return sorted(found, key=lambda s: s.start_time or 0)

    def statements(self, operation: ReadableSpan) -> list[ReadableSpan]:
        return self.children(operation, "db.statement")


def stores(statements: list[ReadableSpan]) -> set[Any]:
    return {(s.attributes or {})["marketgraph.store"] for s in statements}


def check_statement(span: ReadableSpan, store: str) -> None:
    attributes = span.attributes or {}
    assert span.kind is SpanKind.CLIENT
    assert attributes["db.system"] == "postgresql"
    assert attributes["marketgraph.store"] == store
    assert attributes["db.name"]
    assert span.name == f"{attributes['db.operation']!s} {store}"
    assert str(attributes["db.statement"]).split(None, 1)[0].upper() == attributes["db.operation"]


def check_request(trace: Trace) -> None:
    attributes = trace.request.attributes or {}
    assert trace.request.name == "POST /graphql"
    assert attributes["marketgraph.request_id"] == REQUEST_ID
    assert attributes["http.route"] == "/graphql"
    assert attributes["http.response.status_code"] == 200


@pytest.mark.parametrize(("mode", "planned"), [("on", True), ("off", False)])
async def test_a_read_spans_request_operation_and_statements_on_either_path(
    app_factory: Callable[..., Starlette],
    products: None,
    spans: InMemorySpanExporter,
    mode: str,
    planned: bool,
) -> None:
    """The planner's statements and SQLAlchemy's (run in greenlets and loader tasks) both
    keep the request task's trace context."""
    app = app_factory(query_planner=mode)
    named = PRODUCTS.replace("{ products", "query Cheap { products", 1)
    assert len((await post(app, named))["products"]["edges"]) == 2
    trace = Trace(spans.get_finished_spans())
    check_request(trace)
    [operation] = trace.operations
    assert operation.name == "query Cheap"  # the document's name; no operationName was sent
    attributes = operation.attributes or {}
    assert attributes["marketgraph.planned"] is planned
    assert attributes["graphql.operation.name"] == "Cheap"
    statements = trace.statements(operation)
    assert statements and stores(statements) == {"kg.app"}
    for span in statements:
        check_statement(span, "kg.app")


async def test_a_planned_run_that_falls_back_ends_marked_and_strawberrys_follows(
    app_factory: Callable[..., Starlette],
    products: None,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> list[str]:
        raise RuntimeError("a planner bug")

    monkeypatch.setattr(inline, "encode_ids", broken)  # after the planned statement ran
    app = app_factory(query_planner="on")
    assert len((await post(app, PRODUCTS))["products"]["edges"]) == 2
    trace = Trace(spans.get_finished_spans())
    check_request(trace)
    planned, strawberry = trace.operations
    assert (planned.attributes or {})["marketgraph.planned"] is True
    assert (planned.attributes or {})["marketgraph.fallback"] is True
    assert (planned.attributes or {})["error.type"] == "RuntimeError"
    assert [e.name for e in planned.events] == ["exception"]
    assert (strawberry.attributes or {})["marketgraph.planned"] is False
    assert planned.end_time is not None and strawberry.start_time is not None
    assert planned.end_time <= strawberry.start_time
    for operation in (planned, strawberry):
        assert stores(trace.statements(operation)) == {"kg.app"}


async def test_a_mutations_statements_name_each_store_it_writes(
    app_factory: Callable[..., Starlette], spans: InMemorySpanExporter
) -> None:
    app = app_factory(query_planner="on")  # mutations are never planned
    async with http_client(app) as client:
        data(await register(client, "traced@kg.example"))
    trace = Trace(spans.get_finished_spans())
    [operation] = trace.operations
    assert operation.name == "mutation"
    assert (operation.attributes or {})["marketgraph.planned"] is False
    statements = trace.statements(operation)
    assert stores(statements) == {"kg.auth", "kg.app"}
    assert {(s.attributes or {})["db.operation"] for s in statements} >= {"INSERT"}


async def test_a_callers_traceparent_is_joined(
    app_factory: Callable[..., Starlette], products: None, spans: InMemorySpanExporter
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    app = app_factory(query_planner="on")
    await post(app, PRODUCTS, {"traceparent": f"00-{trace_id}-{parent_id}-01"})
    trace = Trace(spans.get_finished_spans())
    assert trace.request.parent is not None and trace.request.parent.is_remote
    assert f"{trace.request.parent.span_id:016x}" == parent_id
    assert {f"{s.context.trace_id:032x}" for s in trace.spans if s.context} == {trace_id}


def test_off_nothing_is_installed() -> None:
    previous = tracing.use(None)
    try:
        assert tracing.middleware() == [] and tracing.schema_extensions() == []
        assert tracing.planned_operation("Q") is tracing.planned_operation(None)  # do-nothing
    finally:
        tracing.use(previous)


def test_the_environment_turns_export_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.provider_from_env() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.provider_from_env() is None


class _Collector(BaseHTTPRequestHandler):
    """Keeps the body of every POST to /v1/traces (an OTLP/HTTP collector's path)."""

    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """An OTLP/HTTP receiver on a loopback port: its URL and what it received."""
    received: list[tuple[str, str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_spans_are_exported_over_otlp_http(
    app_factory: Callable[..., Starlette],
    products: None,
    collector: tuple[str, list[tuple[str, str, bytes]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = collector
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    provider = tracing.provider_from_env()
    assert provider is not None
    previous = tracing.use(provider)
    try:
        await post(app_factory(query_planner="on"), PRODUCTS)
    finally:
        tracing.use(previous)
        await asyncio.to_thread(provider.shutdown)  # flushes the batch
    assert received, "nothing was exported"
    names = set()
    for path, content_type, body in received:
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource["service.name"] == "marketgraph"
            names |= {s.name for scope in resource_spans.scope_spans for s in scope.spans}
    assert {"POST /graphql", "query", "SELECT kg.app"} <= names
