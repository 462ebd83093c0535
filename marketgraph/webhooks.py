"""The payment provider's webhook: signed top-up events, credited exactly once."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from marketgraph.errors import RETRY_AFTER_SECONDS, DomainError, ErrorCode, is_unavailable
from marketgraph.ids import decode_id
from marketgraph.resolvers.wallet import top_up
from marketgraph.text import find_bad_text

log = structlog.get_logger(__name__)

TOLERANCE_SECONDS = 300
COMPLETED = "checkout.session.completed"


def _answer(http_status: int, headers: dict[str, str] | None = None, **body: Any) -> Response:
    return Response(
        orjson.dumps(body), status_code=http_status, media_type="application/json", headers=headers
    )


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Signature` value a provider sends for `body` at `timestamp`."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: bytes, header: str, body: bytes, now: float) -> bool:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, no older than five minutes."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return any(
        hmac.compare_digest(expected, value.strip())
        for key, value in (item.split("=", 1) for item in header.split(",") if "=" in item)
        if key.strip() == "v1"
    )


async def payments(request: Request) -> Response:
    services = request.app.state.services
    secret = services.settings.payment_webhook_secret
    if secret is None:
        return _answer(503, error="payment webhook is not configured (PAYMENT_WEBHOOK_SECRET)")
    body = await request.body()  # at most WEBHOOK_MAX_BODY_BYTES: the edge refused more
    header = request.headers.get("x-signature", "")
    if not verify_signature(secret.get_secret_value().encode(), header, body, time.time()):
        return _answer(400, error="bad signature or stale timestamp")
    try:
        event = orjson.loads(body)
        event_id, event_type = event["id"], event["type"]
        if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
            raise ValueError("id")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return _answer(422, error="malformed event")
    bad = find_bad_text(event, "event")
    if bad is not None:
        return _answer(422, error=f"malformed event: {bad[0]} {bad[1]}")
    if event_type != COMPLETED:
        return _answer(200, status="ignored")
    try:
        data = event["data"]
        amount = data["amount_minor"]
        currency = data["currency"]
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ValueError("amount_minor")
        user = decode_id(str(data["user_id"]), "User", field="user_id")
    except (KeyError, TypeError, ValueError, DomainError):
        return _answer(422, error="malformed event")
    market = services.settings.markets.get(user.market)
    if market is None:
        return _answer(404, error="unknown user")
    if currency != market.currency:
        return _answer(422, error=f"currency must be {market.currency} for this user's market")
    try:
        credited = await top_up(
            services.databases.store(market.code, "auth"),
            services.databases.store(market.code, "app"),
            user.key,
            amount,
            event_id,
        )
    except DomainError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            return _answer(404, error="unknown user")
        if exc.code == ErrorCode.BAD_USER_INPUT:
            return _answer(422, error=exc.message)
        if exc.code != ErrorCode.SERVICE_UNAVAILABLE:
            raise
        return _unavailable()
    except Exception as exc:
        if is_unavailable(exc):
            return _unavailable()
        raise
    log.info("payment event", event_id=event_id, credited=credited, market=market.code)
    return _answer(200, status="processed" if credited else "already_processed")


def _unavailable() -> Response:
    """A store is down: the provider retries later (and the event id keeps it exactly once)."""
    retry = str(RETRY_AFTER_SECONDS)
    return _answer(503, {"Retry-After": retry}, error="store unavailable; retry later")


def webhook_routes() -> list[Route]:
    return [Route("/webhooks/payments", payments, methods=["POST"])]
