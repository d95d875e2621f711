"""Additions: logs stored in chunks (``job_log_chunks``) and a heartbeat per running job
(``jobs.heartbeat_at``), so a dead build is recognised within seconds.

Both are new and nullable: rows written by butido 0.5 stay valid, and its
``jobs.log_text`` keeps the log (or, for a log too long to hold in memory, its end).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "job_log_chunks",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("text", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_log_chunks")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_at")
