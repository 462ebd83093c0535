"""Development logs: an unexpected error is logged with a plain traceback, not one that
prints every frame's local variables (thousands of lines, over a second of a blocked loop)."""

from __future__ import annotations

import logging

import pytest
import structlog

from marketgraph.logs import configure_logging


def test_an_error_is_logged_with_a_short_plain_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "console")
    log = structlog.get_logger("test")

    def deep(n: int, payload: list[str]) -> None:
        if n == 0:
            raise RuntimeError("boom")
        deep(n - 1, payload)

    secret_local = ["a value only a frame's locals hold"] * 1000
    try:
        deep(20, secret_local)
    except RuntimeError:
        log.error("unhandled error", exc_info=True)
    written = capsys.readouterr().err
    logging.getLogger().handlers.clear()
    assert "RuntimeError: boom" in written
    assert "a value only a frame's locals hold" not in written
    assert len(written.splitlines()) < 80
