"""Fixed-window counters in the key-value store: checked before any work, then spent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from marketgraph.errors import DomainError, ErrorCode
from marketgraph.kv import KeyValueStore

HOUR = 3600
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `limit` counts under `key` in a window of `window` seconds from the first.

    With `refunds_key`, counts recorded there by `refund` (successes, say) do not count:
    a limit of failures that must be counted before the outcome is known.
    """

    key: str
    limit: int
    window: float
    message: str = "Too many requests; try again later"
    refunds_key: str | None = None


async def check(kv: KeyValueStore, limits: Sequence[Limit]) -> None:
    """`RATE_LIMITED` with `retryAfter` if one of `limits` is used up; spends nothing."""
    keys = [key for limit in limits for key in (limit.key, limit.refunds_key) if key]
    values = dict(zip(keys, await kv.get_many(*keys), strict=True))
    for limit in limits:
        if _count(values[limit.key]) - _refunds(limit, values) >= limit.limit:
            raise await refusal(kv, limit)


async def spend(kv: KeyValueStore, limits: Sequence[Limit]) -> None:
    """Count one against each of `limits`, in order; `RATE_LIMITED` at the first one over.

    Concurrent requests may all pass `check`; the atomic increments still decide. Counts
    spent before a refusal stay spent, as they would have been by a lone request.
    """
    for limit in limits:
        used = await kv.incr(limit.key, limit.window)
        if used > limit.limit and limit.refunds_key is not None:
            used -= _count(await kv.get(limit.refunds_key))
        if used > limit.limit:
            raise await refusal(kv, limit)


async def refund(kv: KeyValueStore, limit: Limit) -> None:
    """Take back one count of `limit`, for the rest of its current window."""
    if limit.refunds_key is None:
        raise ValueError(f"limit {limit.key} takes no refunds")
    remaining = await kv.ttl(limit.key)
    if remaining:
        # The refunds end with the window they belong to (within a millisecond).
        await kv.incr(limit.refunds_key, remaining)


async def refusal(kv: KeyValueStore, limit: Limit) -> DomainError:
    """The `RATE_LIMITED` error of `limit`, with the seconds until its window ends."""
    remaining = await kv.ttl(limit.key)
    return DomainError(
        ErrorCode.RATE_LIMITED, limit.message, retryAfter=max(1, math.ceil(remaining or 1))
    )


def _count(value: str | None) -> int:
    return int(value) if value is not None else 0


def _refunds(limit: Limit, values: dict[str, str | None]) -> int:
    return _count(values[limit.refunds_key]) if limit.refunds_key else 0
