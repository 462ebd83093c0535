"""A planned read holds one pool connection per database it reads, for the whole request,
and gives every one back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.planner.conftest import Pair, Seeded, outcome

# The viewer (auth store) with fields of the app store on three sibling branches.
QUERY = (
    "{ viewer { id email cart { items { quantity product { name } } } "
    "wallet { balance { amountMinor } } "
    "transactions(first: 3) { edges { node { amount { formatted } createdAt } } } } }"
)


@contextmanager
def checkouts(engines: list[AsyncEngine]) -> Iterator[list[AsyncEngine]]:
    """The engines whose pools hand out a connection inside the block, once per checkout."""
    taken: list[AsyncEngine] = []
    listeners = []
    for engine in engines:

        def on_checkout(*_: object, engine: AsyncEngine = engine) -> None:
            taken.append(engine)

        event.listen(engine.sync_engine.pool, "checkout", on_checkout)
        listeners.append((engine, on_checkout))
    try:
        yield taken
    finally:
        for engine, listener in listeners:
            event.remove(engine.sync_engine.pool, "checkout", listener)


async def planned_answer(pair: Pair) -> dict[str, object]:
    before = outcome(pair.on, "planned")
    response = await pair.on_client.post(
        "/graphql", json={"query": QUERY}, headers=pair.headers["member-kg"]
    )
    assert outcome(pair.on, "planned") == before + 1
    body: dict[str, object] = orjson.loads(response.content)
    assert "errors" not in body and body["data"]["viewer"]["cart"]["items"]  # type: ignore[index]
    return body


def checked_in(engines: list[AsyncEngine]) -> bool:
    return all(engine.sync_engine.pool.checkedout() == 0 for engine in engines)  # type: ignore[attr-defined]


async def test_one_database_one_connection(one_database: tuple[Pair, Seeded]) -> None:
    pair, _ = one_database
    engines = pair.on.state.services.databases.engines
    with checkouts(engines) as taken:
        await planned_answer(pair)
    assert len(engines) == 1 and taken == engines
    assert checked_in(engines)


async def test_separate_databases_one_connection_each(pair: Pair, seeded: Seeded) -> None:
    databases = pair.on.state.services.databases
    kg = [databases.store("kg", "auth").engine, databases.store("kg", "app").engine]
    with checkouts(databases.engines) as taken:
        await planned_answer(pair)
    assert sorted(map(id, taken)) == sorted(map(id, kg))  # kg's two databases, once each
    assert checked_in(databases.engines)
