"""The key-value store: one suite for both implementations (Redis only with TEST_REDIS_URL)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from marketgraph.kv import KeyValueStore, MemoryStore, RedisStore, open_kv

SHORT = 0.2  # seconds: a window that really expires during a test


async def wait_until_gone(kv: KeyValueStore, key: str, limit: float = 3.0) -> float:
    """Poll until `key` has expired; return how long that took (fails past `limit`)."""
    started = time.monotonic()
    while await kv.get(key) is not None:
        assert time.monotonic() - started < limit, f"{key} did not expire"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_get_and_set(kv: KeyValueStore) -> None:
    assert await kv.get("missing") is None
    assert await kv.set("greeting", "сәлем 👋") is True
    assert await kv.get("greeting") == "сәлем 👋"
    assert await kv.set("greeting", "hello") is True
    assert await kv.get("greeting") == "hello"
    assert await kv.ttl("greeting") is None


async def test_get_many_answers_in_order(kv: KeyValueStore) -> None:
    await kv.set("a", "1")
    await kv.set("c", "3", ttl=0.05)
    assert await kv.get_many("a", "b", "c") == ["1", None, "3"]
    await asyncio.sleep(0.1)
    assert await kv.get_many("c", "a") == [None, "1"]


async def test_set_with_ttl_expires(kv: KeyValueStore) -> None:
    await kv.set("code", "123456", ttl=SHORT)
    await kv.set("keeper", "stays")
    assert await kv.get("code") == "123456"
    remaining = await kv.ttl("code")
    assert remaining is not None
    assert 0 < remaining <= SHORT
    await wait_until_gone(kv, "code")
    assert await kv.ttl("code") is None
    assert await kv.get("keeper") == "stays"


async def test_ttl_reports_seconds_left(kv: KeyValueStore) -> None:
    await kv.set("long", "x", ttl=300)
    remaining = await kv.ttl("long")
    assert remaining is not None
    assert 290 < remaining <= 300
    assert await kv.ttl("nothing-here") is None


async def test_plain_set_replaces_value_and_expiry(kv: KeyValueStore) -> None:
    await kv.set("k", "first", ttl=300)
    await kv.set("k", "second")
    assert await kv.get("k") == "second"
    assert await kv.ttl("k") is None


async def test_only_if_absent(kv: KeyValueStore) -> None:
    assert await kv.set("lock", "a", ttl=SHORT, only_if_absent=True) is True
    assert await kv.set("lock", "b", only_if_absent=True) is False
    assert await kv.get("lock") == "a"
    # An expired key is absent.
    await wait_until_gone(kv, "lock")
    assert await kv.set("lock", "c", only_if_absent=True) is True
    assert await kv.get("lock") == "c"
    await kv.delete("lock")
    assert await kv.set("lock", "d", only_if_absent=True) is True
    assert await kv.get("lock") == "d"


async def test_incr_counts_within_one_window(kv: KeyValueStore) -> None:
    assert [await kv.incr("hits", ttl=60) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert await kv.get("hits") == "5"
    remaining = await kv.ttl("hits")
    assert remaining is not None
    assert 0 < remaining <= 60


async def test_incr_does_not_extend_the_window(kv: KeyValueStore) -> None:
    assert await kv.incr("window", ttl=30) == 1
    # Later increments ask for far longer windows; the first one's expiry stands.
    assert await kv.incr("window", ttl=3600) == 2
    assert await kv.incr("window", ttl=3600) == 3
    remaining = await kv.ttl("window")
    assert remaining is not None
    assert 0 < remaining <= 30


async def test_incr_starts_a_new_window_after_expiry(kv: KeyValueStore) -> None:
    assert await kv.incr("burst", ttl=SHORT) == 1
    assert await kv.incr("burst", ttl=SHORT) == 2
    await wait_until_gone(kv, "burst")
    assert await kv.incr("burst", ttl=120) == 1
    remaining = await kv.ttl("burst")
    assert remaining is not None
    assert 110 < remaining <= 120


async def test_raise_to_keeps_the_largest_value_and_renews_the_expiry(kv: KeyValueStore) -> None:
    big = 2**52 + 7  # a WAL position far beyond any real one, still exact
    await kv.raise_to("lsn", big, ttl=SHORT)
    await kv.raise_to("lsn", 5, ttl=10)  # smaller: kept value unchanged, expiry renewed
    assert await kv.get("lsn") == str(big)
    ttl = await kv.ttl("lsn")
    assert ttl is not None and ttl > 5
    await kv.raise_to("lsn", big + 1, ttl=SHORT)
    assert await kv.get("lsn") == str(big + 1)
    await wait_until_gone(kv, "lsn")


async def test_concurrent_raise_to_leaves_the_largest(kv: KeyValueStore) -> None:
    values = list(range(1, 201))
    await asyncio.gather(*(kv.raise_to("lsn", v, ttl=10) for v in reversed(values)))
    assert await kv.get("lsn") == "200"


async def test_delete(kv: KeyValueStore) -> None:
    await kv.set("a", "1")
    await kv.set("b", "2", ttl=60)
    await kv.delete("a")
    await kv.delete("b")
    await kv.delete("never-existed")
    assert await kv.get("a") is None
    assert await kv.get("b") is None
    assert await kv.ttl("b") is None


async def test_delete_prefix_with_many_keys(kv: KeyValueStore) -> None:
    doomed = [f"sessions:1:{i}" for i in range(1234)]  # more than one SCAN/DELETE batch
    survivors = ["sessions:10:0", "sessions:1", "sessions:2:1", "other:sessions:1:0"]
    for key in doomed + survivors:
        await kv.set(key, "x", ttl=60 if key.endswith("7") else None)
    assert await kv.delete_prefix("sessions:1:") == len(doomed)
    assert [key for key in doomed if await kv.get(key) is not None] == []
    assert [await kv.get(key) for key in survivors] == ["x"] * len(survivors)
    assert await kv.delete_prefix("sessions:1:") == 0


async def test_delete_prefix_takes_glob_characters_literally(kv: KeyValueStore) -> None:
    prefix = "q*[ab]?\\:"
    doomed = [prefix + "1", prefix + "2*", prefix]
    # Each survivor would match the prefix read as a glob pattern.
    survivors = ["qXa!\\:1", "q[ab]?\\:1", "qa?\\:1", "q*b?:1", "q*[ab]X\\:1", "q*[ab]?\\"]
    for key in doomed + survivors:
        await kv.set(key, "x")
    assert await kv.delete_prefix(prefix) == len(doomed)
    assert [await kv.get(key) for key in doomed] == [None] * len(doomed)
    assert [await kv.get(key) for key in survivors] == ["x"] * len(survivors)


async def test_ping(kv: KeyValueStore) -> None:
    await kv.ping()
    assert kv.backend in ("memory", "redis")


async def test_redis_stores_with_different_prefixes_do_not_meet() -> None:
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("TEST_REDIS_URL is not set")
    first = RedisStore(redis_url, prefix=f"mgtest:prefix-a:{os.getpid()}:")
    second = RedisStore(redis_url, prefix=f"mgtest:prefix-b:{os.getpid()}:")
    try:
        await first.set("shared", "from-first")
        await second.set("shared", "from-second")
        assert await first.get("shared") == "from-first"
        assert await second.delete_prefix("") == 1
        assert await first.get("shared") == "from-first"
        assert await second.get("shared") is None
    finally:
        await first.delete_prefix("")
        await second.delete_prefix("")
        await first.close()
        await second.close()


async def test_open_kv_picks_the_backend() -> None:
    memory = open_kv(None)
    assert isinstance(memory, MemoryStore)
    redis = open_kv("redis://127.0.0.1:6379/15")
    assert isinstance(redis, RedisStore)
    await redis.close()
