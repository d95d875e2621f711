"""Addition: how long each phase of a job took (``jobs.phase_seconds``, JSON), so the
time a build spends beside its container can be read back per job.

The column is new and nullable: rows written by butido 0.5 stay valid.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("phase_seconds", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("phase_seconds")
