"""Reused greenlets run SQLAlchemy's sync calls as greenlet_spawn does: awaiting inside,
errors and cancellation reaching the caller, the caller's context variables visible."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from sqlalchemy.util import await_

from marketgraph.db import greenlets

request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


async def double(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


def sync_io(value: int) -> tuple[int, str]:
    """What a pool checkout is: synchronous code that awaits the driver halfway."""
    return await_(double(value)) + await_(double(1)), request.get()


async def test_a_call_awaits_inside_and_sees_the_callers_context() -> None:
    async def one(n: int) -> tuple[int, str]:
        request.set(f"r{n}")
        await asyncio.sleep(0)
        return await greenlets.call(sync_io, n)

    # Concurrent calls each get their own greenlet and their own task's context.
    results = await asyncio.gather(*(one(n) for n in range(20)))
    assert results == [(2 * n + 2, f"r{n}") for n in range(20)]


async def test_finished_greenlets_are_reused() -> None:
    await greenlets.call(sync_io, 1)
    idle = list(greenlets._idle.workers)
    assert idle
    for _ in range(5):
        await greenlets.call(sync_io, 1)
    assert greenlets._idle.workers == idle  # the same workers, none started anew


async def test_errors_reach_the_caller_and_the_greenlet_stays_usable() -> None:
    def fails_after_awaiting() -> None:
        await_(double(1))
        raise LookupError("no such connection")

    with pytest.raises(LookupError, match="no such connection"):
        await greenlets.call(fails_after_awaiting)
    assert await greenlets.call(sync_io, 3) == (8, "none")


async def test_a_failed_await_is_raised_inside_where_the_sync_code_can_handle_it() -> None:
    async def broken() -> None:
        raise ConnectionResetError("server closed the connection")

    def handles() -> str:
        try:
            await_(broken())
        except ConnectionResetError:
            return "replaced the connection"
        return "unreachable"

    assert await greenlets.call(handles) == "replaced the connection"


async def test_cancelling_the_caller_cancels_the_call() -> None:
    entered = asyncio.Event()
    cleaned_up: list[bool] = []

    async def wait_forever() -> None:
        entered.set()
        await asyncio.Event().wait()

    def blocks() -> None:
        try:
            await_(wait_forever())
        finally:
            cleaned_up.append(True)

    task = asyncio.create_task(greenlets.call(blocks))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up == [True]
    assert await greenlets.call(sync_io, 2) == (6, "none")
