"""The exported SDL: committed, current, and honouring the frontends' contract."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from marketgraph.schema import export_sdl

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_CHECK = ROOT.parent / "shared" / "tools" / "check_contract.py"


def test_committed_schema_is_current() -> None:
    committed = (ROOT / "schema.graphql").read_text(encoding="utf-8")
    assert committed == export_sdl(), (
        "schema.graphql is stale: run `marketgraph schema export schema.graphql` and commit it"
    )


def test_exported_schema_honours_the_contract() -> None:
    if not CONTRACT_CHECK.exists():
        pytest.skip("../shared/tools/check_contract.py is not beside this checkout")
    spec = importlib.util.spec_from_file_location("check_contract", CONTRACT_CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    contract = (CONTRACT_CHECK.parent.parent / "contract" / "schema.graphql").read_text()
    assert module.problems(export_sdl(), contract) == []
