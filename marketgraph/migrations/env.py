"""Alembic environment: runs one store's branch on the connection `marketgraph.db.migrate` passes.

Each store keeps its tables and its own `alembic_version` table in its
schema: `search_path` points there (and so the version table lands there too),
so revisions are written schema-less and serve every store of their role.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from marketgraph.db.models import metadata_for

config = context.config
connection: Connection | None = config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `marketgraph db ...`, which picks the stores")

role = config.attributes["role"]
schema = config.attributes["schema"]

connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
# LOCAL: for this transaction, the whole migration (`migrate._run`), and not after it. Behind
# PgBouncer in transaction mode a session-wide SET would stay on the server connection and
# reach whichever client gets it next.
connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
connection.dialect.default_schema_name = schema

context.configure(
    connection=connection,
    target_metadata=metadata_for(role),
    compare_type=True,
    compare_server_default=True,
)
with context.begin_transaction():
    context.run_migrations()
