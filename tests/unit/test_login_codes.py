"""Login codes against each key-value store: issuing, limits, SMS budgets, wrong tries, the
daily guess cap, expiry, secrecy."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

from marketgraph.auth import login_codes, rate_limits
from marketgraph.auth.login_codes import Challenge, LoginCodeLimits, LoginCodes, number_prefix
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.kv import KeyValueStore
from marketgraph.markets import MarketRegistry, load_markets

KG = "+996700123456"
KG_2 = "+996555123456"
US = "+12015550123"
SECRET = b"a test secret for login code macs"
IP = "203.0.113.9"


@pytest.fixture(scope="module")
def markets() -> MarketRegistry:
    return load_markets(None)


def limits(**overrides: int) -> LoginCodeLimits:
    """Limits roomy enough for every test but the one a test sets in `overrides`."""
    values = {
        "phone_hourly": 5,
        "ip_hourly": 30,
        "market_daily": 1_000,
        "prefix_daily": 1_000,
        "daily_guesses": 100,
    }
    return LoginCodeLimits(**{**values, **overrides})


def codes_over(kv: KeyValueStore, **overrides: int) -> LoginCodes:
    return LoginCodes(kv, SECRET, limits(**overrides))


def other_than(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


async def refused(awaitable: object, code: ErrorCode) -> DomainError:
    with pytest.raises(DomainError) as caught:
        await awaitable  # type: ignore[misc]
    assert caught.value.code == code
    return caught.value


async def test_issue_gives_a_six_digit_code_in_the_phones_market(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    before = dt.datetime.now(dt.UTC)
    challenge = await codes_over(kv).issue("+1 (201) 555-0123", markets, IP)
    assert challenge.market.code == "us"
    assert challenge.phone == US
    assert len(challenge.code) == 6
    assert challenge.code.isdigit()
    assert challenge.expires_at - before >= dt.timedelta(seconds=login_codes.CODE_TTL)
    assert challenge.resend_after - before >= dt.timedelta(seconds=login_codes.RESEND_AFTER)
    assert challenge.expires_at - before < dt.timedelta(seconds=login_codes.CODE_TTL + 5)


async def test_codes_are_random(kv: KeyValueStore, markets: MarketRegistry) -> None:
    codes = codes_over(kv, phone_hourly=100, ip_hourly=100)
    seen = set()
    for _ in range(8):
        seen.add((await codes.issue(KG, markets, IP)).code)
        await kv.delete(f"lc:resend:{KG}")
    assert len(seen) > 1


async def test_the_code_is_stored_only_as_an_hmac(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    challenge = await codes_over(kv).issue(KG, markets, IP)
    stored = await kv.get(f"lc:code:{KG}")
    assert stored is not None
    assert challenge.code not in stored
    ttl = await kv.ttl(f"lc:code:{KG}")
    assert ttl is not None
    assert login_codes.CODE_TTL - 5 < ttl <= login_codes.CODE_TTL


async def test_the_right_code_verifies_once(kv: KeyValueStore, markets: MarketRegistry) -> None:
    codes = codes_over(kv)
    challenge = await codes.issue(KG, markets, IP)
    market, phone = await codes.verify("996 700 123 456", f" {challenge.code} ", markets)
    assert (market.code, phone) == ("kg", KG)
    await refused(codes.verify(KG, challenge.code, markets), ErrorCode.INVALID_CODE)


async def test_a_code_belongs_to_its_phone(kv: KeyValueStore, markets: MarketRegistry) -> None:
    codes = codes_over(kv)
    challenge = await codes.issue(KG, markets, IP)
    await codes.issue(KG_2, markets, IP)
    await refused(codes.verify(KG_2, challenge.code, markets), ErrorCode.INVALID_CODE)
    # A secret of another deployment does not accept this deployment's code either.
    foreign = LoginCodes(kv, b"another secret", limits())
    await refused(foreign.verify(KG, challenge.code, markets), ErrorCode.INVALID_CODE)


async def test_no_code_no_entry(kv: KeyValueStore, markets: MarketRegistry) -> None:
    await refused(codes_over(kv).verify(KG, "123456", markets), ErrorCode.INVALID_CODE)


async def test_four_wrong_tries_leave_the_code_alive(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    codes = codes_over(kv)
    challenge = await codes.issue(KG, markets, IP)
    for _ in range(login_codes.MAX_WRONG_TRIES - 1):
        await refused(codes.verify(KG, other_than(challenge.code), markets), ErrorCode.INVALID_CODE)
    assert (await codes.verify(KG, challenge.code, markets))[1] == KG


async def test_the_fifth_wrong_try_burns_the_code(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    codes = codes_over(kv)
    challenge = await codes.issue(KG, markets, IP)
    for _ in range(login_codes.MAX_WRONG_TRIES):
        await refused(codes.verify(KG, other_than(challenge.code), markets), ErrorCode.INVALID_CODE)
    assert await kv.get(f"lc:code:{KG}") is None
    await refused(codes.verify(KG, challenge.code, markets), ErrorCode.INVALID_CODE)


async def test_concurrent_wrong_tries_cannot_exceed_the_limit(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    codes = codes_over(kv)
    challenge = await codes.issue(KG, markets, IP)
    wrong = [f"{n:06d}" for n in range(13) if f"{n:06d}" != challenge.code][:12]
    results = await asyncio.gather(
        *(codes.verify(KG, code, markets) for code in wrong), return_exceptions=True
    )
    assert all(isinstance(r, DomainError) for r in results)
    await refused(codes.verify(KG, challenge.code, markets), ErrorCode.INVALID_CODE)


async def test_a_new_code_replaces_the_old_and_resets_the_tries(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    codes = codes_over(kv)
    old = await codes.issue(KG, markets, IP)
    for _ in range(login_codes.MAX_WRONG_TRIES - 1):
        await refused(codes.verify(KG, other_than(old.code), markets), ErrorCode.INVALID_CODE)
    await kv.delete(f"lc:resend:{KG}")  # as if a minute had passed
    new = await codes.issue(KG, markets, IP)
    if new.code != old.code:
        await refused(codes.verify(KG, old.code, markets), ErrorCode.INVALID_CODE)
    for _ in range(login_codes.MAX_WRONG_TRIES - 2):
        await refused(codes.verify(KG, other_than(new.code), markets), ErrorCode.INVALID_CODE)
    assert (await codes.verify(KG, new.code, markets))[1] == KG


async def test_an_expired_code_is_refused(
    kv: KeyValueStore, markets: MarketRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(login_codes, "CODE_TTL", 0.25)
    codes = codes_over(kv)
    challenge = await codes.issue(KG, markets, IP)
    started = time.monotonic()
    while await kv.get(f"lc:code:{KG}") is not None:  # the store's own expiry, nothing faked
        assert time.monotonic() - started < 1.5, "the code did not expire"
        await asyncio.sleep(0.02)
    await refused(codes.verify(KG, challenge.code, markets), ErrorCode.INVALID_CODE)


@pytest.mark.parametrize(
    ("phone", "code"),
    [
        ("not a phone", ErrorCode.INVALID_PHONE),
        ("+996312123456", ErrorCode.INVALID_PHONE),  # Bishkek fixed line
        ("+996700123456;ext=7", ErrorCode.INVALID_PHONE),
        ("+16045550123", ErrorCode.UNSUPPORTED_MARKET),  # Vancouver
        ("+447400123456", ErrorCode.UNSUPPORTED_MARKET),  # a UK mobile
    ],
)
async def test_unusable_numbers_consume_nothing(
    kv: KeyValueStore, markets: MarketRegistry, phone: str, code: ErrorCode
) -> None:
    codes = codes_over(kv, phone_hourly=1, ip_hourly=1)
    await refused(codes.issue(phone, markets, IP), code)
    await refused(codes.verify(phone, "123456", markets), code)
    assert await kv.get(f"lc:ip:{IP}") is None
    await codes.issue(KG, markets, IP)  # the IP's single code is still there


def retry_after(error: DomainError) -> int:
    value = error.extensions["retryAfter"]
    assert isinstance(value, int)
    return value


async def test_resend_waits_a_minute(kv: KeyValueStore, markets: MarketRegistry) -> None:
    codes = codes_over(kv)
    first = await codes.issue(KG, markets, IP)
    error = await refused(codes.issue(KG, markets, IP), ErrorCode.RATE_LIMITED)
    assert 55 <= retry_after(error) <= login_codes.RESEND_AFTER
    # The refused request changed nothing: the first code still works, one code was counted.
    assert await kv.get(f"lc:phone:{KG}") == "1"
    assert (await codes.verify(KG, first.code, markets))[1] == KG


async def test_per_phone_hourly_limit(kv: KeyValueStore, markets: MarketRegistry) -> None:
    codes = codes_over(kv, phone_hourly=2)
    for _ in range(2):
        await codes.issue(KG, markets, IP)
        await kv.delete(f"lc:resend:{KG}")
    error = await refused(codes.issue(KG, markets, IP), ErrorCode.RATE_LIMITED)
    assert login_codes.RESEND_AFTER < retry_after(error) <= login_codes.HOUR
    # Refusals spend nothing: no resend wait starts, the counters stay where they were.
    assert await kv.get(f"lc:resend:{KG}") is None
    assert await kv.get(f"lc:phone:{KG}") == "2"
    assert await kv.get(f"lc:ip:{IP}") == "2"
    await codes.issue(KG_2, markets, IP)


async def test_per_ip_hourly_limit(kv: KeyValueStore, markets: MarketRegistry) -> None:
    codes = codes_over(kv, ip_hourly=2)
    await codes.issue(KG, markets, IP)
    await codes.issue(US, markets, IP)
    error = await refused(codes.issue(KG_2, markets, IP), ErrorCode.RATE_LIMITED)
    assert login_codes.RESEND_AFTER < retry_after(error) <= login_codes.HOUR
    # The refused phone was not touched: it can get its code from another client at once.
    challenge: Challenge = await codes.issue(KG_2, markets, "203.0.113.10")
    assert challenge.phone == KG_2


async def test_concurrent_requests_send_one_code(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    codes = codes_over(kv)
    results = await asyncio.gather(
        *(codes.issue(KG, markets, IP) for _ in range(10)), return_exceptions=True
    )
    issued = [r for r in results if isinstance(r, Challenge)]
    assert len(issued) == 1
    assert all(
        isinstance(r, DomainError) and r.code == ErrorCode.RATE_LIMITED
        for r in results
        if r not in issued
    )
    assert await kv.get(f"lc:phone:{KG}") == "1"


async def test_concurrent_right_codes_sign_in_once(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    codes = codes_over(kv, phone_hourly=10)
    # Several rounds: the first may run on a single fresh connection, hiding the race.
    for _ in range(3):
        await kv.delete(f"lc:resend:{KG}")
        challenge = await codes.issue(KG, markets, IP)
        results = await asyncio.gather(
            *(codes.verify(KG, challenge.code, markets) for _ in range(5)),
            return_exceptions=True,
        )
        accepted = [r for r in results if not isinstance(r, BaseException)]
        assert len(accepted) == 1
        assert all(
            isinstance(r, DomainError) and r.code == ErrorCode.INVALID_CODE
            for r in results
            if isinstance(r, BaseException)
        )


@pytest.mark.parametrize(
    ("phone", "prefix"),
    [
        (KG, "+996700"),
        (KG_2, "+996555"),
        (US, "+1201"),  # NANP: the area code
        ("+447400123456", "+447400"),
        ("+59171234567", "+591712"),  # Bolivia: no destination code known, three digits
    ],
)
def test_number_prefix_is_the_country_and_destination_code(phone: str, prefix: str) -> None:
    assert number_prefix(phone) == prefix


async def test_per_prefix_daily_sms_budget(kv: KeyValueStore, markets: MarketRegistry) -> None:
    codes = codes_over(kv, prefix_daily=2)
    await codes.issue(KG, markets, IP)
    await codes.issue("+996700000001", markets, "203.0.113.10")
    error = await refused(
        codes.issue("+996700000002", markets, "203.0.113.11"), ErrorCode.RATE_LIMITED
    )
    assert rate_limits.HOUR < retry_after(error) <= rate_limits.DAY
    # The refusal spent nothing: no resend wait, no code of the phone, the IP or the market.
    assert await kv.get_many(
        "lc:resend:+996700000002", "lc:phone:+996700000002", "lc:ip:203.0.113.11"
    ) == [None, None, None]
    assert await kv.get("lc:sms:market:kg") == "2"
    # Another operator's range of the same market still gets codes.
    await codes.issue(KG_2, markets, "203.0.113.11")


async def test_per_market_daily_sms_budget(kv: KeyValueStore, markets: MarketRegistry) -> None:
    codes = codes_over(kv, market_daily=2)
    await codes.issue(KG, markets, IP)
    await codes.issue(KG_2, markets, IP)
    error = await refused(codes.issue("+996770123456", markets, IP), ErrorCode.RATE_LIMITED)
    assert rate_limits.HOUR < retry_after(error) <= rate_limits.DAY
    assert await kv.get_many("lc:resend:+996770123456", "lc:sms:prefix:+996770") == [None, None]
    assert await kv.get(f"lc:ip:{IP}") == "2"
    # Each market has its own budget.
    await codes.issue(US, markets, IP)


async def test_guesses_are_capped_per_phone_and_day_across_codes(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    codes = codes_over(kv, daily_guesses=7)
    first = await codes.issue(KG, markets, IP)
    for _ in range(4):
        await refused(codes.verify(KG, other_than(first.code), markets), ErrorCode.INVALID_CODE)
    await kv.delete(f"lc:resend:{KG}")  # as if a minute had passed
    second = await codes.issue(KG, markets, IP)
    for _ in range(3):
        await refused(codes.verify(KG, other_than(second.code), markets), ErrorCode.INVALID_CODE)
    # Past the cap every try is refused alike, the right code included, which stays unspent.
    wrong = await refused(
        codes.verify(KG, other_than(second.code), markets), ErrorCode.RATE_LIMITED
    )
    right = await refused(codes.verify(KG, second.code, markets), ErrorCode.RATE_LIMITED)
    assert wrong.message == right.message
    assert rate_limits.HOUR < retry_after(right) <= rate_limits.DAY
    assert await kv.get(f"lc:code:{KG}") is not None
    # Other phones keep their own tries.
    other = await codes.issue(KG_2, markets, IP)
    assert (await codes.verify(KG_2, other.code, markets))[1] == KG_2


async def test_right_codes_do_not_count_towards_the_guess_cap(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    codes = codes_over(kv, daily_guesses=2, phone_hourly=10)
    for _ in range(4):
        await kv.delete(f"lc:resend:{KG}")
        challenge = await codes.issue(KG, markets, IP)
        assert (await codes.verify(KG, challenge.code, markets))[1] == KG
    # Failures still count: two are allowed, the third try is refused.
    await kv.delete(f"lc:resend:{KG}")
    challenge = await codes.issue(KG, markets, IP)
    for _ in range(2):
        await refused(codes.verify(KG, other_than(challenge.code), markets), ErrorCode.INVALID_CODE)
    await refused(codes.verify(KG, challenge.code, markets), ErrorCode.RATE_LIMITED)


async def test_concurrent_guesses_cannot_pass_the_cap(
    kv: KeyValueStore, markets: MarketRegistry
) -> None:
    codes = codes_over(kv, daily_guesses=3)
    challenge = await codes.issue(KG, markets, IP)
    wrong = [f"{n:06d}" for n in range(11) if f"{n:06d}" != challenge.code][:10]
    results = await asyncio.gather(
        *(codes.verify(KG, code, markets) for code in wrong), return_exceptions=True
    )
    answers = sorted(r.code for r in results if isinstance(r, DomainError))
    assert answers == [ErrorCode.INVALID_CODE] * 3 + [ErrorCode.RATE_LIMITED] * 7
    await refused(codes.verify(KG, challenge.code, markets), ErrorCode.RATE_LIMITED)
