"""How each package of a submit ended: built, reused up front or at run time, failed, not
built because a dependency failed, or not requested.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "submit_packages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("submit_id", sa.Integer, sa.ForeignKey("submits.id"), nullable=False),
        sa.Column("package_id", sa.Integer, sa.ForeignKey("packages.id"), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.UniqueConstraint("submit_id", "package_id", name="uc_submit_packages_submit_package"),
    )


def downgrade() -> None:
    op.drop_table("submit_packages")
