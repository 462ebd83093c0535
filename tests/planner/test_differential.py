"""The planner and Strawberry answer every read byte for byte alike.

Two apps on the same stores and the same seeded data set (tests/planner/conftest.py), one
with the planner on and one with it off, get the same request — same body, same headers,
same X-Request-ID, so even error answers can be compared as bytes — for each document and
caller; status codes and response bodies must be identical. A planner that disagrees is a
failing test: the document, the caller, the variables and both bodies are printed.

The callers are every kind the API knows, of both markets: anonymous (X-Market kg, us), a
member, an admin user and an API key of kg and of us (`CALLERS`). The documents are
(a) every read document the rest of the test suite sends, collected from its source by
`tests/planner/corpus.py` (no hand-kept copy to go stale) with variables drawn from the
data set by type and argument, and the hand-written ones of `tests/planner/documents.py`,
each sent as every caller (documents with a `page` path are sent again with the
`endCursor` of their first answer); and (b) documents generated from the read side of the
schema (every root field of Query) by hypothesis-graphql, each sent as the admin of kg and
one drawn other caller (every caller for several hundred documents would multiply the
test's time for little: the drawn caller still covers each kind about 50 times).

Generating: hypothesis-graphql's `queries(schema, custom_scalars=..., print_ast=...)`
draws whole documents (nested selections, inline fragments on `node`, arguments); it can
constrain arguments only per scalar type, so it hands back the AST (`print_ast` = identity)
and a composite strategy rewrites each argument by (field, argument) with values of the
data set — real global ids of every type, cursors, phones, search prefixes (SKU, Cyrillic),
preference filters, mostly small `first`s — and a few that miss, so most documents hit
rows. `@given` runs a sync function per example, which does not mix with the async
clients, so the documents are drawn first — a `@given` function with `derandomize=True`
(a fixed seed), the generate phase only (no shrinking, no example database) collects them
— and then sent, in one event loop, to both apps. The ids differ per run (fresh keys) but
the documents' shapes and which seeded row each argument picks do not.

The planner must actually serve: the `planned` outcome of /metrics is read around each
request, and a floor is asserted on the share of error-free answers the planner served.
And every caller must have been answered, with ids of both markets among its answers — a
caller whose credentials stopped working would otherwise turn its share of the test into
a comparison of two UNAUTHENTICATED errors.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import graphql
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import queries

from marketgraph.errors import DomainError
from marketgraph.ids import decode_id
from marketgraph.resolvers.pagination import encode_cursor
from marketgraph.schema import build_schema
from tests.planner import corpus
from tests.planner.conftest import CALLERS, MARKETS, Pair, Seeded, outcome
from tests.planner.documents import BAD_IDS, HAND, SPACESHIP, ZZ_ORDER, Doc, Ref

REQUEST_ID = "differential-0001"
GENERATED_EXAMPLES = 500

# Measured without coverage: thousands of compared requests, which coverage's tracer slows
# about 2.5 times; the planner's lines are covered by the rest of tests/planner.
pytestmark = pytest.mark.no_cover


def resolve(value: Any, seeded: Seeded) -> Any:
    """`value` with every `Ref` replaced by the data set's value."""
    if isinstance(value, Ref):
        if value.kind == "cursor":
            return seeded.cursors[value.index]
        if value.kind.startswith("cursor:"):
            row = seeded.ids[value.kind.removeprefix("cursor:")][value.index]
            return encode_cursor(decode_id(row).key)
        if value.kind.startswith("phone."):
            return seeded.phones[value.kind.split(".")[1]][value.index]
        return seeded.ids[value.kind][value.index]
    if isinstance(value, Mapping):
        return {k: resolve(v, seeded) for k, v in value.items()}
    return value


@dataclass
class Tally:
    """What was compared: requests, how many the planner served, and every disagreement;
    per caller, how many error-free answers it got and which markets' ids they held."""

    requests: int = 0
    documents: set[str] = field(default_factory=set)
    planned: int = 0
    answered: int = 0  # error-free answers (the ones a planner can serve)
    unplanned_answers: list[str] = field(default_factory=list)
    error_codes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    answered_by: Counter[str] = field(default_factory=Counter)
    markets_seen: dict[str, set[str]] = field(default_factory=dict)

    def planned_share(self) -> float:
        return self.planned / self.answered if self.answered else 0.0

    def saw(self, caller: str, body: Any) -> None:
        """Record an error-free answer of `caller` and the markets of the ids in it."""
        self.answered_by[caller] += 1
        self.markets_seen.setdefault(caller, set()).update(markets_of_ids(body))


def markets_of_ids(value: Any) -> Iterator[str]:
    """The market of every global id (an `id` field) in a decoded answer."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "id" and isinstance(item, str):
                yield from market_of(item)
            else:
                yield from markets_of_ids(item)
    elif isinstance(value, list):
        for item in value:
            yield from markets_of_ids(item)


def market_of(value: str) -> Iterator[str]:
    """The market of a global id; nothing for an `id` value that is not one."""
    try:
        yield decode_id(value).market
    except DomainError:
        return


def json_body(payload: Mapping[str, Any]) -> bytes:
    """The JSON body httpx's `json=` would send (UTF-8, compact), or, when a value holds a
    lone surrogate that UTF-8 cannot carry (the suite sends one), the same JSON with
    non-ASCII escaped, as that test sends it."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":")).encode()


async def send(
    client: httpx.AsyncClient,
    query: str,
    variables: Mapping[str, Any] | None,
    operation_name: str | None,
    headers: dict[str, str],
    get: bool,
) -> httpx.Response:
    sent = {**headers, "X-Request-ID": REQUEST_ID}
    if get:
        params = {"query": query}
        if variables is not None:
            params["variables"] = json.dumps(variables)
        if operation_name is not None:
            params["operationName"] = operation_name
        return await client.get("/graphql", params=params, headers=sent)
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    if operation_name is not None:
        payload["operationName"] = operation_name
    return await client.post(
        "/graphql",
        content=json_body(payload),
        headers={**sent, "Content-Type": "application/json"},
    )


async def compare(
    pair: Pair,
    tally: Tally,
    label: str,
    caller: str,
    query: str,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
    get: bool = False,
) -> Any:
    """Send one request to both apps; record whether they agree and whether it was planned.
    Returns the planner-off answer, decoded."""
    headers = pair.headers[caller]
    before = outcome(pair.on, "planned")
    with pair.counter.counting() as counted:
        on = await send(pair.on_client, query, variables, operation_name, headers, get)
    planned_statements = dict(counted)
    planned = outcome(pair.on, "planned") > before
    with pair.counter.counting() as counted:
        off = await send(pair.off_client, query, variables, operation_name, headers, get)
    strawberry_statements = dict(counted)
    tally.requests += 1
    more = {
        store: n
        for store, n in planned_statements.items()
        if n > strawberry_statements.get(store, 0)
    }
    # The planner never reads a store more often than Strawberry. (Compared on answers
    # without errors: after an error Strawberry may leave sibling batches running, which
    # end after its answer, in the next request's count.)
    clean = b'"errors"' not in on.content and b'"errors"' not in off.content
    if planned and clean and more:
        tally.failures.append(
            f"{label} as {caller}: more statements planned than Strawberry's\n"
            f"  query: {' '.join(query.split())}\n"
            f"  variables: {json.dumps(variables, ensure_ascii=False)}\n"
            f"  planned {planned_statements}, Strawberry {strawberry_statements}"
        )
    tally.documents.add(query)
    if on.status_code != off.status_code or on.content != off.content:
        tally.failures.append(
            f"{label} as {caller}\n  query: {' '.join(query.split())}\n"
            f"  variables: {json.dumps(variables, ensure_ascii=False)}\n"
            f"{difference(on, off)}"
        )
    try:
        body = off.json()
    except ValueError:
        return None
    if isinstance(body, dict) and "errors" not in body and off.status_code == 200:
        tally.answered += 1
        tally.saw(caller, body)
        if planned:
            tally.planned += 1
        else:
            tally.unplanned_answers.append(f"{label} as {caller}")
    else:
        for error in (body.get("errors") or []) if isinstance(body, dict) else []:
            tally.error_codes[str((error.get("extensions") or {}).get("code"))] += 1
        if planned:
            tally.planned += 1
    return body


def difference(on: httpx.Response, off: httpx.Response, context: int = 400) -> str:
    """Both answers around their first differing byte (whole, when short)."""
    a, b = on.content, off.content
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    start = max(0, at - context)

    def excerpt(body: bytes) -> str:
        text = body[start : at + context].decode(errors="replace")
        return ("…" if start else "") + text + ("…" if at + context < len(body) else "")

    return (
        f"  first difference at byte {at} (planner on {len(a)} bytes, off {len(b)} bytes)\n"
        f"  planner on  ({on.status_code}): {excerpt(a)}\n"
        f"  planner off ({off.status_code}): {excerpt(b)}"
    )


def end_cursor(body: Any, path: tuple[str, ...]) -> str | None:
    node = body.get("data") if isinstance(body, dict) else None
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    if not isinstance(node, dict):
        return None
    cursor = (node.get("pageInfo") or {}).get("endCursor")
    return cursor if isinstance(cursor, str) else None


async def compare_document(
    pair: Pair,
    tally: Tally,
    seeded: Seeded,
    doc: Doc,
    callers: Sequence[str] = CALLERS,
) -> None:
    """Every variable set of `doc` as each of `callers` (and, for a `page` document, its
    next page after the first answer's `endCursor`)."""
    for variables in doc.variables:
        resolved = resolve(variables, seeded) if variables is not None else None
        for caller in callers:
            body = await compare(
                pair, tally, doc.name, caller, doc.query, resolved, doc.operation_name, doc.get
            )
            if doc.page is None:
                continue
            cursor = end_cursor(body, doc.page)
            if cursor is not None:
                await compare(
                    pair,
                    tally,
                    f"{doc.name} (page 2)",
                    caller,
                    doc.query,
                    {**(resolved or {}), doc.cursor_variable: cursor},
                    doc.operation_name,
                    doc.get,
                )


def report(tally: Tally, what: str) -> str:
    return (
        f"{what}: {len(tally.documents)} documents, {tally.requests} requests compared; "
        f"{tally.answered} error-free answers, {tally.planned} planned "
        f"({tally.planned_share():.0%} of error-free answers); "
        f"errors answered: {dict(tally.error_codes.most_common())}; "
        f"error-free answers by caller: {dict(sorted(tally.answered_by.items()))}"
    )


def assert_every_caller_served(tally: Tally, callers: Sequence[str] = CALLERS) -> None:
    """Each caller got error-free answers holding ids of both markets: its own data and
    the other market's (the catalog is public), so none of them only compared errors."""
    for caller in callers:
        assert tally.answered_by[caller] >= 20, (caller, dict(tally.answered_by))
        assert tally.markets_seen.get(caller, set()) >= set(MARKETS), (
            caller,
            tally.markets_seen.get(caller),
        )


def assert_agree(tally: Tally) -> None:
    if tally.failures:
        shown = "\n\n".join(tally.failures[:15])
        pytest.fail(
            f"the planner disagrees with Strawberry on {len(tally.failures)} of "
            f"{tally.requests} requests:\n\n{shown}",
            pytrace=False,
        )


def test_the_suite_corpus_is_collected() -> None:
    """The collector finds the suite's read documents however they are spelled — a
    module constant (tests/helpers.py), an f-string of constants, a JSON body in bytes —
    with ids of the data set and the literal variables tests send (through a module
    constant, or a helper called with a test's local), and no mutation."""
    collected = corpus.collect()
    assert collected.valid >= corpus.MINIMUM_DOCUMENTS, collected.describe()

    def find(source: str, text: str) -> Doc:
        return next(
            doc
            for doc in collected.docs
            if doc.name.startswith(f"suite.{source}:") and text in " ".join(doc.query.split())
        )

    find("helpers.py", "{ viewer { id phone email userType preferences timezone market")
    order = find("api/test_orders.py", "query ($id: ID!) { order(id: $id) { id number status")
    assert Ref("Order.us", 1) in [variables["id"] for variables in order.variables if variables]
    # A JSON body in bytes whose search literal holds a NUL (JSON's \u0000, decoded).
    find("abuse/test_reproductions.py", '{ products(search: "\x00") { edges { cursor } } }')
    by_phone = find("api/test_admin.py", "userByPhone(phone: $phone) { id phone market")
    assert {"phone": "+1 (201) 555-0123"} in by_phone.variables
    assert {"phone": "+12015550123"} in by_phone.variables  # US_PHONE, a module constant
    users = find("api/test_api_keys.py", "query ($m: ID!) { users(market: $m)")
    assert {"m": "us"} in users.variables  # ask(users, {"m": "us"})
    assert find("api/test_orders.py", "orders(first: $first, after: $after)").page == (
        "viewer",
        "orders",
    )
    assert not any("mutation" in doc.query for doc in collected.docs)


async def test_documents_agree(
    pair: Pair, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every read document of the suite and every hand-written one, as every caller."""
    started = time.monotonic()
    collected = corpus.collect()
    suite, hand = Tally(), Tally()
    for doc in collected.docs:
        await compare_document(pair, suite, seeded, doc)
    for doc in HAND:
        await compare_document(pair, hand, seeded, doc)
    with capsys.disabled():
        print(f"\n{collected.describe()}")
        print(report(suite, "suite documents"))
        print(f"{report(hand, 'hand-written documents')} in {time.monotonic() - started:.1f}s")
    assert_agree(suite)
    assert_agree(hand)
    assert len(suite.documents) >= corpus.MINIMUM_DOCUMENTS and len(hand.documents) >= 40
    # A differential test where everything falls back proves nothing.
    assert suite.planned_share() >= 0.9, suite.unplanned_answers
    assert hand.planned_share() >= 0.9, hand.unplanned_answers
    assert_every_caller_served(suite)
    assert_every_caller_served(hand)


async def test_documents_agree_on_one_database(
    one_database: tuple[Pair, Seeded], capsys: pytest.CaptureFixture[str]
) -> None:
    """With a single DATABASE_URL the four stores share one connection per request and
    sibling branches take turns on it rather than run as tasks: the same bytes again.

    What this mode changes is how a request's reads share a connection, not who may
    read what, so each document goes to three callers in turn (every caller gets 3/8 of
    them) rather than to all eight again, which test_documents_agree already does."""
    pair, seeded = one_database
    assert len(pair.on.state.services.databases.engines) == 1
    started = time.monotonic()
    tally = Tally()
    for n, doc in enumerate([*corpus.collect().docs, *HAND]):
        callers = [CALLERS[(3 * n + k) % len(CALLERS)] for k in range(3)]
        await compare_document(pair, tally, seeded, doc, callers)
    with capsys.disabled():
        print(
            f"\n{report(tally, 'all documents, one database')} in {time.monotonic() - started:.1f}s"
        )
    assert_agree(tally)
    assert tally.planned_share() >= 0.9, tally.unplanned_answers
    assert_every_caller_served(tally)


# --- generated documents ------------------------------------------------------------------------


def value_node(value: Any) -> graphql.ValueNode:
    """A GraphQL literal for a JSON-like Python value."""
    if value is None:
        return graphql.NullValueNode()
    if isinstance(value, bool):
        return graphql.BooleanValueNode(value=value)
    if isinstance(value, int):
        return graphql.IntValueNode(value=str(value))
    if isinstance(value, float):
        return graphql.FloatValueNode(value=repr(value))
    if isinstance(value, str):
        return graphql.StringValueNode(value=value)
    if isinstance(value, list):
        return graphql.ListValueNode(values=tuple(value_node(v) for v in value))
    return graphql.ObjectValueNode(
        fields=tuple(
            graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=value_node(v))
            for k, v in value.items()
        )
    )


def argument_values(seeded: Seeded) -> dict[tuple[str, str], st.SearchStrategy[Any]]:
    """Per (field, argument): values that mostly hit the data set, with some that miss."""

    def ids(*kinds: str) -> list[str]:
        return [v for kind in kinds for m in ("kg", "us") for v in seeded.ids[f"{kind}.{m}"]]

    wrong = [SPACESHIP, ZZ_ORDER, *BAD_IDS]
    first = st.sampled_from([1, 2, 3, 0, 5, 10, 1, 2, 3, 2, 1, 4, None, None, 101, -1])
    return {
        ("node", "id"): st.sampled_from(
            ids("Product", "User", "Order", "WalletTransaction") + wrong[:3]
        ),
        ("product", "id"): st.sampled_from(ids("Product") + ids("Order")[:1] + wrong[2:3]),
        ("order", "id"): st.sampled_from(ids("Order") + ids("Product")[:1] + wrong[1:2]),
        ("market", "code"): st.sampled_from(["kg", "us", "US", "zz"]),
        ("products", "market"): st.sampled_from(["kg", "us", None, "zz"]),
        ("users", "market"): st.sampled_from(["kg", "us", "kg", "us", "zz"]),
        ("*", "first"): first,
        ("*", "after"): st.sampled_from([*seeded.cursors, None, None, "x"]),
        ("products", "search"): st.sampled_from(
            ["чай", "Чай з", "TEA-0", "tea", "Кру", "green", "пря", "", "zzz", None]
        ),
        ("userByPhone", "phone"): st.sampled_from(
            [*seeded.phones["kg"][:3], *seeded.phones["us"][:3], "+996700000000", "junk"]
        ),
        ("users", "preferences"): st.sampled_from(
            [
                None,
                {},
                {"theme": "dark"},
                {"notifications": {"sms": True}},
                {"nested": {"deep": {"x": 2}}},
                {"tags": ["vip"]},
                [1],
            ]
        ),
    }


def rewrite_arguments(
    draw: st.DrawFn,
    document: graphql.DocumentNode,
    values: dict[tuple[str, str], st.SearchStrategy[Any]],
) -> graphql.DocumentNode:
    """The document with each argument's value drawn from `values` (by field and name)."""

    class Rewrite(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_: Any) -> graphql.FieldNode | None:
            if not node.arguments:
                return None
            arguments = []
            for argument in node.arguments:
                name = argument.name.value
                strategy = values.get((node.name.value, name), values.get(("*", name)))
                if strategy is not None:
                    argument = graphql.ArgumentNode(
                        name=argument.name, value=value_node(draw(strategy))
                    )
                arguments.append(argument)
            return graphql.FieldNode(
                alias=node.alias,
                name=node.name,
                arguments=tuple(arguments),
                directives=node.directives,
                selection_set=node.selection_set,
            )

    rewritten: graphql.DocumentNode = graphql.visit(document, Rewrite())
    return rewritten


def generate_documents(seeded: Seeded, examples: int) -> list[tuple[str, tuple[str, ...]]]:
    """`examples` generated read documents (deduplicated), each with the callers to send it as."""
    schema = build_schema()._schema
    values = argument_values(seeded)
    placeholder = graphql.StringValueNode(value="")
    base = queries(
        schema,
        custom_scalars={
            "JSON": st.just(graphql.ObjectValueNode(fields=())),
            "DateTime": st.just(placeholder),
        },
        print_ast=lambda document: document,
        allow_x00=False,
    )

    @st.composite
    def documents(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
        document = rewrite_arguments(draw, draw(base), values)
        # The admin sees every root answer; one other caller sees its own share (or errors).
        other = draw(st.sampled_from([c for c in CALLERS if c != "admin-kg"]))
        return graphql.print_ast(document), ("admin-kg", other)

    drawn: dict[str, tuple[str, ...]] = {}

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(documents())
    def collect(example: tuple[str, tuple[str, ...]]) -> None:
        query, callers = example
        drawn.setdefault(query, callers)

    collect()
    return list(drawn.items())


async def test_generated_documents_agree(
    pair: Pair, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several hundred documents generated from the read side of the schema."""
    started = time.monotonic()
    generated = generate_documents(seeded, GENERATED_EXAMPLES)
    drawn_in = time.monotonic() - started
    tally = Tally()
    for n, (query, callers) in enumerate(generated):
        for caller in callers:
            await compare(pair, tally, f"generated #{n}", caller, query)
    with capsys.disabled():
        print(
            f"\n{report(tally, 'generated documents')} "
            f"(drawn in {drawn_in:.1f}s, compared in {time.monotonic() - started - drawn_in:.1f}s)"
        )
    assert_agree(tally)
    assert len(tally.documents) >= 300, "too few distinct documents generated"
    assert tally.answered >= len(tally.documents) * 0.3, "most generated documents miss the data"
    assert tally.planned_share() >= 0.9, tally.unplanned_answers[:20]
