"""Every read of one store within one request sees one snapshot: a cart read while a writer
keeps rewriting it.

A writer commits, as fast as it can on a connection of its own, real PostgreSQL transactions
on one cart, each of which changes several things at once: it removes some lines, adds
others, sets new quantities on the lines it keeps (an upsert of several cart_items rows),
and gives every product of the pool a new price. Every state it commits has the
invariants a cart always has (subtotal = the sum of the line totals, item count = the sum
of the quantities), and the writer records each state it commits.

Meanwhile 1,000 reads of the cart (`subtotal`, `itemCount`, and each item's `quantity` and
`lineTotal`) go through the app, 32 in flight at a time. A request that read the cart's
lines, their quantities and the products' prices in one snapshot answers one of the
committed states, so each answer must:

- have `subtotal` equal to the sum of its items' `lineTotal`s;
- have `itemCount` equal to the sum of its items' `quantity`s;
- be, line for line (quantity and line total), a state the writer committed: lines taken
  from one snapshot and prices from another make line totals no committed state had, even
  where the sums above agree.

So that it cannot pass vacuously, the test also asserts the writer committed many
transactions while the reads ran, that many reads each had a commit land between their
start and their answer, and that the reads saw many distinct subtotals.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.applications import Starlette

from marketgraph.db.databases import Databases
from marketgraph.db.models.app import Cart, CartItem, Product
from marketgraph.db.models.base import new_id
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    app_fixture,
    create_customer,
    create_product,
    http_fixture,
    token_for,
)
from tests.helpers import data, gql

CART = """
{ viewer { cart {
  subtotal { amountMinor } itemCount items { quantity lineTotal { amountMinor } }
} } }
"""

READS = 1000
IN_FLIGHT = 32
PRODUCTS = 6
# Floors the run must clear for its verdict to mean anything. Measured (2 CPUs): 90-160
# commits during the reads, every read with a commit between request and answer, 140-180
# distinct subtotals. The writer shares the event loop with the readers, so its pace
# follows theirs on a slower machine.
MIN_COMMITS_DURING_READS = 10
MIN_OVERLAPPED_READS = 100
MIN_DISTINCT_SUBTOTALS = 5

# A cart state as an answer shows it: each line's (quantity, line total), sorted.
Lines = tuple[tuple[int, int], ...]


@dataclass
class CartWriter:
    """Rewrites one cart and its products' prices, one committed transaction after another."""

    cart_id: uuid.UUID
    product_ids: list[uuid.UUID]
    rng: random.Random = field(default_factory=lambda: random.Random(20240611))
    # Every state a transaction wrote (recorded before its commit, so a reader can never
    # see a state that is not here yet).
    states: set[Lines] = field(default_factory=set)
    commits: int = 0
    last: Lines = ()

    async def write_once(self, conn: AsyncConnection) -> None:
        """One transaction: remove some lines, add others, requantify the rest, reprice all."""
        kept = self.rng.sample(self.product_ids, self.rng.randint(2, PRODUCTS - 1))
        quantities = {p: self.rng.randint(1, 9) for p in kept}
        prices = {p: self.rng.randint(100, 99_999) for p in self.product_ids}
        state = tuple(sorted((q, q * prices[p]) for p, q in quantities.items()))
        self.states.add(state)
        async with conn.begin():
            await conn.execute(
                update(Product)
                .where(Product.id.in_(self.product_ids))
                .values(price_minor=case(prices, value=Product.id))
            )
            await conn.execute(
                delete(CartItem).where(
                    CartItem.cart_id == self.cart_id, CartItem.product_id.not_in(kept)
                )
            )
            upsert = insert(CartItem).values(
                [
                    {"id": new_id(), "cart_id": self.cart_id, "product_id": p, "quantity": q}
                    for p, q in quantities.items()
                ]
            )
            await conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[CartItem.cart_id, CartItem.product_id],
                    set_={"quantity": upsert.excluded.quantity},
                )
            )
        self.commits += 1
        self.last = state

    async def run(self, conn: AsyncConnection, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.write_once(conn)


@dataclass(frozen=True)
class Answer:
    """One read's cart, and the writer's commit count when it was sent and answered."""

    subtotal: int
    item_count: int
    lines: Lines
    commits_before: int
    commits_after: int

    @classmethod
    def of(cls, body: dict[str, Any], commits_before: int, commits_after: int) -> Answer:
        cart = data(body)["viewer"]["cart"]
        items = cart["items"]
        return cls(
            subtotal=cart["subtotal"]["amountMinor"],
            item_count=cart["itemCount"],
            lines=tuple(sorted((i["quantity"], i["lineTotal"]["amountMinor"]) for i in items)),
            commits_before=commits_before,
            commits_after=commits_after,
        )

    def describe(self) -> str:
        return (
            f"subtotal={self.subtotal} itemCount={self.item_count} "
            f"lines (quantity, lineTotal)={list(self.lines)}"
        )


def tears(answers: list[Answer], states: set[Lines]) -> dict[str, list[Answer]]:
    """The answers no single snapshot could give, by the check each fails."""
    checks: dict[str, Callable[[Answer], bool]] = {
        "subtotal != sum of lineTotals": lambda a: a.subtotal != sum(t for _, t in a.lines),
        "itemCount != sum of quantities": lambda a: a.item_count != sum(q for q, _ in a.lines),
        "lines (with their prices) of no committed state": lambda a: a.lines not in states,
    }
    found = {name: [a for a in answers if check(a)] for name, check in checks.items()}
    return {name: torn for name, torn in found.items() if torn}


async def test_cart_reads_see_one_snapshot_while_a_writer_rewrites_the_cart(
    app: Starlette, http: httpx.AsyncClient, stores: Databases
) -> None:
    app_store = stores.store("kg", "app")
    products = [await create_product(app_store, stock=1000) for _ in range(PRODUCTS)]
    user = await create_customer(stores, "kg")
    token = token_for(app, "kg", user)
    async with app_store.connect() as conn:
        cart_id = await conn.scalar(select(Cart.id).where(Cart.user_id == user.id))
    assert isinstance(cart_id, uuid.UUID)

    writer = CartWriter(cart_id, [p.id for p in products])
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def read() -> Answer:
        async with slots:
            before = writer.commits
            body = await gql(http, CART, token=token)
            return Answer.of(body, before, writer.commits)

    stop = asyncio.Event()
    # The writer's own connection, so it never queues behind the readers for the pool.
    async with app_store.connect() as conn:
        await writer.write_once(conn)  # the first state, before any read
        writing = asyncio.create_task(writer.run(conn, stop))
        try:
            commits_at_start = writer.commits
            answers = await asyncio.gather(*(read() for _ in range(READS)))
            commits_during = writer.commits - commits_at_start
        finally:
            stop.set()
            await writing

    # Once the writer stops, a read answers its last state, exactly.
    final = Answer.of(await gql(http, CART, token=token), writer.commits, writer.commits)
    assert final.lines == writer.last and not tears([final], writer.states)

    overlapped = sum(a.commits_after > a.commits_before for a in answers)
    subtotals = len({a.subtotal for a in answers})
    run = (
        f"{commits_during} commits during {READS} reads, {overlapped} reads with a commit "
        f"between request and answer, {subtotals} distinct subtotals"
    )
    torn = tears(answers, writer.states)
    if torn:
        pytest.fail(
            f"torn cart reads ({run}):\n"
            + "\n".join(
                f"- {name}: {len(found)} of {READS}, e.g. {found[0].describe()}"
                for name, found in torn.items()
            ),
            pytrace=False,
        )

    # Not vacuous: the reads ran among many commits, and saw the cart change.
    assert commits_during >= MIN_COMMITS_DURING_READS, run
    assert overlapped >= MIN_OVERLAPPED_READS, run
    assert subtotals >= MIN_DISTINCT_SUBTOTALS, run
