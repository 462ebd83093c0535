"""The marketgraph benchmark: a deterministic data set, a load runner, and a raw asyncpg floor.

`python -m bench.data && python -m bench.run` (see bench/README.md). Not run in CI.
"""
