"""OpenTelemetry traces: a span per HTTP request, per GraphQL operation (planned or run by
Strawberry) and per SQL statement, with the store it ran on (`kg.app`).

On only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set:
spans are batched and sent over OTLP/HTTP (protobuf); the SDK reads the other standard
`OTEL_*` variables (service name, sampler, headers, batch sizes). Off, the request
middleware and the schema extension are not installed and every other hook returns after
checking `tracer`, so tracing costs nothing measurable.

A planned read that raises ends its span marked `marketgraph.fallback` (Strawberry then runs
the operation again, under a span of its own), or as an error when a store was down. Tests
trace into an in-memory exporter with `use(provider)`; the global provider is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, TracerProvider
from sqlalchemy import event
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from marketgraph.db.databases import Databases, Store
from marketgraph.errors import is_unavailable
from marketgraph.metrics import statement_store
from marketgraph.middleware import route_path

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

SERVICE_NAME = "marketgraph"  # unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names it
MAX_STATEMENT = 2048  # characters of SQL kept in `db.statement`: fused reads run long

tracer: Tracer | None = None  # None: tracing is off
_provider: TracerProvider | None = None
_configured = False
_OFF: AbstractContextManager[None] = nullcontext()


def setup() -> bool:
    """Trace over OTLP when the environment asks (once per process: uvicorn's workers each
    build their app); whether tracing is on."""
    global _configured
    if not _configured:
        _configured = True
        provider = provider_from_env()
        if provider is not None:
            trace.set_tracer_provider(provider)  # for any other instrumentation, too
            use(provider)
    return tracer is not None


def provider_from_env() -> SdkTracerProvider | None:
    """A provider batching spans to the OTLP/HTTP endpoint the environment names, or None."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    # Imported here: the exporter brings protobuf and requests, which an untraced process
    # need not load.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = SdkTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def use(provider: TracerProvider | None) -> TracerProvider | None:
    """Trace into `provider` from now on (None: off); the provider used until now, for the
    caller to restore."""
    global tracer, _provider
    previous, _provider = _provider, provider
    tracer = provider.get_tracer("marketgraph") if provider is not None else None
    return previous


def middleware() -> list[Middleware]:
    """The request middleware, when tracing is on."""
    return [Middleware(TracedRequests)] if tracer is not None else []


def schema_extensions() -> list[type[SchemaExtension]]:
    """The operation extension, when tracing is on (a schema is built once per app)."""
    return [TracedOperations] if tracer is not None else []


# --- requests ---------------------------------------------------------------------------


class _AsgiHeaders(Getter[list[tuple[bytes, bytes]]]):
    """Reads propagation headers (`traceparent`, `tracestate`) from an ASGI scope's."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


_HEADERS = _AsgiHeaders()


class TracedRequests:
    """A server span per HTTP request, in the caller's trace when it sent a `traceparent`,
    carrying the request id (so placed right after RequestIdMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        # Imported once tracing is on: it loads the OTEL_PROPAGATORS (W3C trace context and
        # baggage by default).
        from opentelemetry import propagate

        self.app = app
        self._extract = propagate.extract

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        active = tracer
        if active is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path = route_path(scope)
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": path}
        request_id = scope.get("state", {}).get("request_id")
        if request_id:
            attributes["marketgraph.request_id"] = request_id
        parent = self._extract(scope["headers"], getter=_HEADERS)
        with active.start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status: int = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                route = _route(scope, path)
                if route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)


def _route(scope: Scope, path: str) -> str | None:
    """The route's template: a planned read is answered before Starlette routes it."""
    if path == "/graphql":
        return path
    route = getattr(scope.get("route"), "path", None)
    return route if isinstance(route, str) else None


# --- operations -------------------------------------------------------------------------


def _operation_name(operation_type: str, name: str | None) -> str:
    return f"{operation_type} {name}" if name else operation_type


def planned_operation(name: str | None) -> AbstractContextManager[None]:
    """A span around a planned read (always a query), `name` the operation's own."""
    if tracer is None:
        return _OFF
    return _planned(tracer, name)


@contextmanager
def _planned(active: Tracer, name: str | None) -> Iterator[None]:
    attributes: dict[str, Any] = {"graphql.operation.type": "query", "marketgraph.planned": True}
    if name:
        attributes["graphql.operation.name"] = name
    with active.start_as_current_span(
        _operation_name("query", name),
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except Exception as exc:
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            if is_unavailable(exc):  # answered at once with SERVICE_UNAVAILABLE (planned_reads)
                span.set_status(StatusCode.ERROR, "store unavailable")
            else:  # Strawberry answers: the exception's message says why
                span.set_attribute("marketgraph.fallback", True)
            raise


class TracedOperations(SchemaExtension):
    """A span per operation Strawberry runs (the planner's fallback among them)."""

    def on_operation(self) -> Iterator[None]:
        active = tracer
        if active is None:
            yield
            return
        with active.start_as_current_span(
            "graphql.operation", attributes={"marketgraph.planned": False}
        ) as span:
            yield
            context = self.execution_context
            if context.graphql_document is None:
                return  # not parsed: the span keeps its generic name
            try:
                operation_type = context.operation_type.value
            except RuntimeError:  # no operation of that name; Strawberry words the error
                return
            name = context.operation_name
            span.update_name(_operation_name(operation_type, name))
            span.set_attribute("graphql.operation.type", operation_type)
            if name:
                span.set_attribute("graphql.operation.name", name)


# --- statements -------------------------------------------------------------------------


def _start_statement(active: Tracer, store: str, database: str | None, sql: str) -> Span:
    """A client span for one statement on `store`, under the current span."""
    words = sql.split(None, 1)
    verb = words[0].upper() if words else "SQL"
    attributes: dict[str, Any] = {
        "db.system": "postgresql",
        "db.operation": verb,
        "db.statement": sql[:MAX_STATEMENT],
        "marketgraph.store": store,
    }
    if database:
        attributes["db.name"] = database
    return active.start_span(f"{verb} {store}", kind=SpanKind.CLIENT, attributes=attributes)


def statement(store: Store, sql: str) -> AbstractContextManager[Any]:
    """A span around one statement the planner sends to `store` itself."""
    if tracer is None:
        return _OFF
    span = _start_statement(tracer, str(store.key), store.engine.url.database, sql)
    return trace.use_span(span, end_on_exit=True)


def trace_statements(databases: Databases) -> None:
    """Span every statement SQLAlchemy sends to these engines (listeners added once, when
    tracing is on; each returns at once should it be turned off)."""
    if tracer is None:
        return
    store_of = statement_store(databases)

    def before(conn: Any, cursor: Any, sql: str, parameters: Any, context: Any, many: bool) -> None:
        if tracer is None or context is None:
            return
        database = conn.engine.url.database
        context._marketgraph_span = _start_statement(tracer, store_of(conn, context), database, sql)

    def after(conn: Any, cursor: Any, sql: str, parameters: Any, context: Any, many: bool) -> None:
        span: Span | None = getattr(context, "_marketgraph_span", None)
        if span is not None:
            context._marketgraph_span = None
            span.end()

    def failed(exception_context: Any) -> None:
        context = exception_context.execution_context
        span: Span | None = getattr(context, "_marketgraph_span", None)
        if span is not None:
            context._marketgraph_span = None
            error = exception_context.original_exception
            span.record_exception(error)
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(StatusCode.ERROR)
            span.end()

    for engine in databases.engines:
        sync = engine.sync_engine
        if getattr(sync, "_marketgraph_traced", False):
            continue
        event.listen(sync, "before_cursor_execute", before)
        event.listen(sync, "after_cursor_execute", after)
        event.listen(sync, "handle_error", failed)
        sync._marketgraph_traced = True  # type: ignore[attr-defined]
