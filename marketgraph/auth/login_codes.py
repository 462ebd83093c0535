"""One-time login codes by SMS: issued with rate limits, kept only as an HMAC, burnt after
too many wrong tries."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

import phonenumbers

from marketgraph.errors import DomainError, ErrorCode
from marketgraph.kv import KeyValueStore
from marketgraph.markets import Market, MarketRegistry, detect_market, parse_phone

CODE_TTL = 300
RESEND_AFTER = 60
MAX_WRONG_TRIES = 5
HOUR = 3600

_SMS_CAPABLE = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}


@dataclass(frozen=True, slots=True)
class Challenge:
    market: Market
    phone: str  # E.164
    code: str  # for the SMS only: never stored, never returned to the client
    expires_at: dt.datetime
    resend_after: dt.datetime


@dataclass(frozen=True, slots=True)
class LoginCodeLimits:
    phone_hourly: int
    ip_hourly: int


def sms_phone(phone: str, markets: MarketRegistry) -> tuple[Market, str]:
    """The market and E.164 of a number that can receive SMS; else `INVALID_PHONE`.

    Fixed lines (+996 312 …) and numbers with an extension cannot take a code.
    """
    market, e164 = detect_market(phone, markets)
    number = parse_phone(phone)
    if number.extension or phonenumbers.number_type(number) not in _SMS_CAPABLE:
        raise DomainError(
            ErrorCode.INVALID_PHONE, "This number cannot receive SMS; use a mobile number"
        )
    return market, e164


class LoginCodes:
    """Issues and checks codes; all state lives in the key-value store (shared by workers)."""

    def __init__(self, kv: KeyValueStore, secret: bytes, limits: LoginCodeLimits) -> None:
        self._kv = kv
        self._secret = secret
        self._limits = limits

    def _mac(self, phone: str, code: str) -> str:
        return hmac.new(self._secret, f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()

    async def issue(self, phone: str, markets: MarketRegistry, client_ip: str) -> Challenge:
        """A new code for `phone`, or `RATE_LIMITED` with `retryAfter`.

        The answer does not depend on whether the phone has an account.
        """
        market, e164 = sms_phone(phone, markets)
        resend = f"lc:resend:{e164}"
        hourly = (
            (f"lc:phone:{e164}", self._limits.phone_hourly),
            (f"lc:ip:{client_ip}", self._limits.ip_hourly),
        )
        # Check every limit before spending anything: a refused request must not start the
        # phone's resend wait or use up its (or the IP's) hourly codes.
        if await self._kv.get(resend) is not None:
            await self._limited(resend, "Wait before asking for another code")
        for key, limit in hourly:
            count = await self._kv.get(key)
            if count is not None and int(count) >= limit:
                await self._limited(key, "Too many codes requested; try again later")
        if not await self._kv.set(resend, "1", RESEND_AFTER, only_if_absent=True):
            await self._limited(resend, "Wait before asking for another code")
        for key, limit in hourly:
            # Concurrent requests may pass the checks together; the counters still decide.
            if await self._kv.incr(key, HOUR) > limit:
                await self._kv.delete(resend)
                await self._limited(key, "Too many codes requested; try again later")
        code = f"{secrets.randbelow(10**6):06d}"
        # The nonce names this one issued code, so spending it can be claimed exactly once.
        record = {"mac": self._mac(e164, code), "nonce": secrets.token_hex(16)}
        await self._kv.set(f"lc:code:{e164}", json.dumps(record), CODE_TTL)
        await self._kv.delete(f"lc:tries:{e164}")
        now = dt.datetime.now(dt.UTC)
        return Challenge(
            market=market,
            phone=e164,
            code=code,
            expires_at=now + dt.timedelta(seconds=CODE_TTL),
            resend_after=now + dt.timedelta(seconds=RESEND_AFTER),
        )

    async def verify(self, phone: str, code: str, markets: MarketRegistry) -> tuple[Market, str]:
        """The market and E.164 when `code` is the live code for `phone`; else `INVALID_CODE`.

        Every try counts, right or wrong; the fifth wrong one burns the code.
        """
        market, e164 = sms_phone(phone, markets)
        stored = await self._kv.get(f"lc:code:{e164}")
        if stored is None:
            raise DomainError(ErrorCode.INVALID_CODE, "The code is wrong or has expired")
        tries = await self._kv.incr(f"lc:tries:{e164}", CODE_TTL)
        record = json.loads(stored)
        given = self._mac(e164, code.strip())
        if tries > MAX_WRONG_TRIES or not hmac.compare_digest(record["mac"], given):
            if tries >= MAX_WRONG_TRIES:
                await self._kv.delete(f"lc:code:{e164}")
            raise DomainError(ErrorCode.INVALID_CODE, "The code is wrong or has expired")
        # Concurrent tries with the right code all get this far; only one may sign in.
        claim = f"lc:spent:{record.get('nonce', record['mac'])}"
        if not await self._kv.set(claim, "1", CODE_TTL, only_if_absent=True):
            raise DomainError(ErrorCode.INVALID_CODE, "The code is wrong or has expired")
        await self._kv.delete(f"lc:code:{e164}")
        await self._kv.delete(f"lc:tries:{e164}")
        return market, e164

    async def _limited(self, key: str, message: str) -> None:
        retry_after = await self._kv.ttl(key)
        raise DomainError(
            ErrorCode.RATE_LIMITED, message, retryAfter=max(1, round(retry_after or 1))
        )
