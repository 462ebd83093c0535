"""The one rule for strings a client sends: no NUL character, no unpaired surrogate.

PostgreSQL cannot store either (text and jsonb refuse NUL; UTF-8 has no surrogates), so a
string holding one would fail deep inside a statement as an internal error. Every way a
string enters — GraphQL literals, variables, JSON scalars, the payment webhook — is
checked here before anything runs, and refused as bad input naming where it was.
"""

from __future__ import annotations

from typing import Any


def text_problem(value: str) -> str | None:
    """What makes `value` unstorable, or None when it is fine."""
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired surrogate"
    return None


def find_bad_text(value: Any, path: str) -> tuple[str, str] | None:
    """The path and problem of the first bad string or object key within a JSON value."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return where, problem
        elif isinstance(item, dict):
            for key, inner in item.items():
                problem = text_problem(key) if isinstance(key, str) else None
                if problem is not None:
                    return where, f"has a key that {problem}"
                stack.append((inner, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((inner, f"{where}[{i}]") for i, inner in enumerate(item))
    return None


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            stack.extend((inner, depth + 1) for inner in item.values())
        elif isinstance(item, list):
            stack.extend((inner, depth + 1) for inner in item)
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
    return deepest
