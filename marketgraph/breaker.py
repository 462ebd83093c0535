"""A circuit breaker: after a dependency failed, fail fast for a moment instead of waiting.

A store that refuses or swallows connections would otherwise make every request that
needs it wait a whole connect timeout, holding one of the worker's in-flight places, until
the requests of healthy markets are turned away too. After a failure the breaker is open
for `cooldown` seconds: requests are refused at once with `SERVICE_UNAVAILABLE` and a
`retryAfter`. Then one request at a time may try (half-open); its success closes the
breaker, its failure opens it again. A dependency that comes back is used again without
a restart.
"""

from __future__ import annotations

import math
import time

from marketgraph.errors import ServiceUnavailableError, describe_error

DEFAULT_COOLDOWN = 2.0


class Breaker:
    """Tracks one dependency (a database server, the key-value store) for one worker."""

    def __init__(self, name: str, cooldown: float = DEFAULT_COOLDOWN) -> None:
        self.name = name
        self.cooldown = cooldown
        self._open_until = 0.0
        self._trying = False
        self._reason = "unavailable"

    @property
    def is_open(self) -> bool:
        return self._open_until > 0.0

    def before(self) -> None:
        """Raise `SERVICE_UNAVAILABLE` when a call should not be tried now."""
        if self._open_until == 0.0:
            return
        remaining = self._open_until - time.monotonic()
        if remaining > 0 or self._trying:
            refused = ServiceUnavailableError(
                f"{self.name} is unavailable; try again shortly",
                retryAfter=max(1, math.ceil(remaining)),
            )
            refused.reason = self._reason
            raise refused
        self._trying = True  # half-open: this call finds out, the others wait for it

    def succeeded(self) -> None:
        self._open_until = 0.0
        self._trying = False

    def failed(self, exc: BaseException) -> None:
        self._open_until = time.monotonic() + self.cooldown
        self._trying = False
        self._reason = describe_error(exc)
