"""Alembic environment: always run programmatically by airflow_butido.db.migrate,
which passes an open connection in ``config.attributes["connection"]``."""

from __future__ import annotations

from alembic import context

from airflow_butido.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through migrate.upgrade()
    raise RuntimeError("run migrations through airflow_butido.db.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
