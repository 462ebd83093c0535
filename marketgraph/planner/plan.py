"""Object plans: per selection set, a generated function that builds the response dicts.

An `ObjectPlan` answers one selection set over a list of *sources* (rows, or small
tuples for the types that are not rows). Scalar fields are Python expressions over the
source `p`, compiled together into one list comprehension; fields that need more data
are *children*: async batch resolvers that answer for every source at once (one
statement per level) and whose results the comprehension picks up by position.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from marketgraph.markets import Market
from marketgraph.planner.runtime import Run

# A child: answers one field for every source of a level, in source order.
Child = Callable[[Run, list[Any], Market], Coroutine[Any, Any, list[Any]]]


@dataclass
class ObjectPlan:
    """How to build one selection set of `type_name` from a list of sources."""

    type_name: str
    entries: list[tuple[str, str | None]] = field(default_factory=list)  # (key, expr|child)
    children: list[Child] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    levels: dict[str, str] = field(default_factory=dict)  # expression -> name, once per build
    indexed: bool = False  # an entry reads a per-source level list by the row's index
    _builder: Callable[..., list[dict[str, Any]]] | None = None

    def helper(self, name: str, value: Any) -> str:
        self.env[name] = value
        return name

    def per_level(self, expr: str, *, per_source: bool = False) -> str:
        """A name for `expr` evaluated once per build, before the rows: it may read the
        sources `P` and the market `M`. With `per_source` it is a list of one value per
        source, and what is returned reads the row's own (`name[i]`)."""
        name = self.levels.get(expr)
        if name is None:
            name = self.levels[expr] = f"L{len(self.levels)}"
        if per_source:
            self.indexed = True
            return f"{name}[i]"
        return name

    def add(self, key: str, expr: str) -> None:
        self.entries.append((key, expr))

    def add_child(self, key: str, child: Child) -> None:
        self.entries.append((key, None))
        self.children.append(child)

    def finish(self) -> ObjectPlan:
        """Generate the builder: one comprehension producing every dict of a level."""
        parts, slot = [], 0
        for key, expr in self.entries:
            if expr is None:
                parts.append(f"{key!r}: C{slot}[i]")
                slot += 1
            else:
                parts.append(f"{key!r}: {expr}")
        args = "".join(f", C{n}" for n in range(slot))
        loop = "for i, p in enumerate(P)" if slot or self.indexed else "for p in P"
        prelude = "".join(f"    {name} = {expr}\n" for expr, name in self.levels.items())
        source = f"def build(P, M{args}):\n{prelude}    return [{{{', '.join(parts)}}} {loop}]\n"
        namespace = dict(self.env)
        exec(compile(source, f"<plan {self.type_name}>", "exec"), namespace)  # noqa: S102
        self._builder = namespace["build"]
        return self

    async def build(self, run: Run, sources: list[Any], market: Market) -> list[dict[str, Any]]:
        """The response dicts of `sources`, children resolved concurrently (one level)."""
        assert self._builder is not None, "finish() the plan first"
        if not sources:
            return []
        if not self.children:
            return self._builder(sources, market)
        if len(self.children) == 1 or not run.concurrent:
            results = [await child(run, sources, market) for child in self.children]
            return self._builder(sources, market, *results)
        # A TaskGroup, not gather: when one child fails the others are cancelled and awaited,
        # so none is left running (holding a store connection) after the run has ended.
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(c(run, sources, market)) for c in self.children]
        except ExceptionGroup as failed:  # the first failure, as a sequential build raises it
            raise failed.exceptions[0] from None
        return self._builder(sources, market, *(t.result() for t in tasks))
