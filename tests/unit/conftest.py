"""Fixtures of the unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from marketgraph.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited configuration: every variable Settings could read is removed, and the
    data directory is the test's own."""
    fields = set(Settings.model_fields)
    for name in list(os.environ):
        lower = name.lower()
        if (
            "DATABASE_URL" in name.upper()
            or lower in fields
            or lower.removesuffix("_file") in fields
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
