"""RFC 7386 JSON Merge Patch: the RFC's own examples, and the target is never changed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from marketgraph.resolvers.accounts import merge_patch

# RFC 7386, Appendix A: (original, patch, result).
RFC_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "expected"), RFC_EXAMPLES)
def test_rfc_7386_examples(original: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy(original)
    assert merge_patch(original, patch) == expected
    assert original == before


def test_nested_objects_merge_at_every_depth() -> None:
    target = {"notifications": {"email": {"orders": True, "news": True}, "sms": False}}
    patch = {"notifications": {"email": {"news": False}, "push": {"orders": True}}}
    assert merge_patch(target, patch) == {
        "notifications": {
            "email": {"orders": True, "news": False},
            "sms": False,
            "push": {"orders": True},
        }
    }


def test_the_result_shares_no_objects_with_the_patch() -> None:
    patch: dict[str, Any] = {"a": {"list": [1, 2]}}
    result = merge_patch({}, patch)
    result["a"]["list"].append(3)
    assert patch == {"a": {"list": [1, 2]}}


def test_removing_a_missing_key_is_harmless() -> None:
    assert merge_patch({"a": 1}, {"b": None, "c": {"d": None}}) == {"a": 1, "c": {}}
