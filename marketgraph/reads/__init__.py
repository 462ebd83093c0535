"""The read side's one definition: each GraphQL field of a read type declared once
(`reads.spec`), which both read paths — Strawberry's resolvers and the query planner — use."""
