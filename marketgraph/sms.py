"""SMS delivery behind one small interface: console (development), webhook, memory (tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import httpx
import structlog

from marketgraph.errors import ServiceUnavailableError
from marketgraph.settings import ConfigError, Settings

log = structlog.get_logger(__name__)


class SmsSender(Protocol):
    async def send_login_code(self, phone: str, code: str, language: str) -> None:
        """Deliver `code` to `phone`, or raise `SERVICE_UNAVAILABLE`."""

    async def close(self) -> None: ...


class ConsoleSms:
    """Logs the code: what a developer needs on day one. Refused in production."""

    async def send_login_code(self, phone: str, code: str, language: str) -> None:
        log.warning(f"login code for {phone}: {code}")

    async def close(self) -> None:
        return None


@dataclass
class MemorySms:
    """Keeps messages in a list, for tests and demos."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    async def send_login_code(self, phone: str, code: str, language: str) -> None:
        self.sent.append((phone, code))

    def last_code(self, phone: str) -> str:
        return next(code for to, code in reversed(self.sent) if to == phone)

    async def close(self) -> None:
        return None


class WebhookSms:
    """POSTs `{"to", "code", "language"}` as JSON to SMS_WEBHOOK_URL, retrying briefly."""

    def __init__(self, url: str, timeout: float = 5.0, attempts: int = 3) -> None:
        self._url = url
        self._attempts = attempts
        self._client = httpx.AsyncClient(timeout=timeout)

    async def send_login_code(self, phone: str, code: str, language: str) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(
                    self._url, json={"to": phone, "code": code, "language": language}
                )
                if response.status_code < 500:
                    response.raise_for_status()
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPStatusError as exc:
                log.error("sms webhook refused the message", status=exc.response.status_code)
                break
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            log.warning("sms webhook failed", attempt=attempt, reason=reason)
            if attempt < self._attempts:
                await asyncio.sleep(0.2 * 2**attempt)
        raise ServiceUnavailableError("The code could not be sent; try again shortly")

    async def close(self) -> None:
        await self._client.aclose()


def open_sms(settings: Settings) -> SmsSender:
    if settings.sms_backend == "webhook":
        if not settings.sms_webhook_url:
            raise ConfigError("SMS_BACKEND=webhook needs SMS_WEBHOOK_URL")
        return WebhookSms(settings.sms_webhook_url)
    if settings.is_production:
        raise ConfigError(f"SMS_BACKEND={settings.sms_backend} is for development; use webhook")
    return MemorySms() if settings.sms_backend == "memory" else ConsoleSms()
