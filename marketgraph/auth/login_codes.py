"""One-time login codes by SMS: issued within rate limits and SMS budgets, kept only as an
HMAC, burnt after too many wrong tries, guessed at most so often a day."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

import phonenumbers

from marketgraph.auth.rate_limits import DAY, HOUR, Limit, check, refund, refusal, spend
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.kv import KeyValueStore
from marketgraph.markets import Market, MarketRegistry, detect_market, parse_phone

CODE_TTL = 300
RESEND_AFTER = 60
MAX_WRONG_TRIES = 5
# Leading national digits that name a number's range when phonenumbers knows no
# destination code for it.
FALLBACK_PREFIX_DIGITS = 3
TOO_MANY_CODES = "Too many codes requested; try again later"
WAIT_TO_RESEND = "Wait before asking for another code"

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
    """Codes per phone and per client IP an hour, SMS a day per market and per number
    prefix, and code guesses a day per phone (Settings' `login_code_*`, `sms_daily_*`)."""

    phone_hourly: int
    ip_hourly: int
    market_daily: int
    prefix_daily: int
    daily_guesses: int


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


def number_prefix(e164: str) -> str:
    """The country code and national destination code (operator or area prefix) of `e164`.

    SMS pumping sends codes to many numbers of one range that pays the sender per message,
    so the daily budget of a range bounds what one such range can cost.
    """
    number = phonenumbers.parse(e164)
    national = phonenumbers.national_significant_number(number)
    digits = phonenumbers.length_of_national_destination_code(number) or FALLBACK_PREFIX_DIGITS
    return f"+{number.country_code}{national[:digits]}"


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
        resend = Limit(f"lc:resend:{e164}", 1, RESEND_AFTER, WAIT_TO_RESEND)
        budgets = (
            Limit(f"lc:phone:{e164}", self._limits.phone_hourly, HOUR, TOO_MANY_CODES),
            Limit(f"lc:ip:{client_ip}", self._limits.ip_hourly, HOUR, TOO_MANY_CODES),
            Limit(
                f"lc:sms:prefix:{number_prefix(e164)}",
                self._limits.prefix_daily,
                DAY,
                "Too many codes sent to numbers like this one today; try again later",
            ),
            Limit(
                f"lc:sms:market:{market.code}",
                self._limits.market_daily,
                DAY,
                "Codes by SMS are paused in this market for today; try again later",
            ),
        )
        # Check every limit before spending anything: a refused request must not start the
        # phone's resend wait or use up its (or the IP's, the range's, the market's) codes.
        await check(self._kv, (resend, *budgets))
        if not await self._kv.set(resend.key, "1", RESEND_AFTER, only_if_absent=True):
            raise await refusal(self._kv, resend)
        try:
            await spend(self._kv, budgets)
        except DomainError:
            await self._kv.delete(resend.key)
            raise
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
        """The market and E.164 when `code` is the live code for `phone`; else `INVALID_CODE`,
        or `RATE_LIMITED` once the phone's daily tries are used up, the right code included.

        Every try counts, right or wrong; the fifth wrong one burns the code. New codes come
        every minute, so the daily cap is what bounds guessing (NIST SP 800-63B: 100).
        """
        market, e164 = sms_phone(phone, markets)
        guesses = Limit(
            f"lc:guesses:{e164}",
            self._limits.daily_guesses,
            DAY,
            "Too many tries for this number today; try again later",
            refunds_key=f"lc:guesses-ok:{e164}",
        )
        await check(self._kv, (guesses,))
        stored = await self._kv.get(f"lc:code:{e164}")
        if stored is None:
            raise DomainError(ErrorCode.INVALID_CODE, "The code is wrong or has expired")
        # Counted before the code is compared, so a refusal says nothing about the code and
        # parallel tries cannot slip past the cap.
        await spend(self._kv, (guesses,))
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
        # Only failures count towards the cap. The success is refunded rather than the count
        # cleared: clearing would give a guesser a fresh day's tries at each of the owner's
        # sign-ins.
        await refund(self._kv, guesses)
        return market, e164
