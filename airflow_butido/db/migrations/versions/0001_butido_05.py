"""butido 0.5's tables, created only where missing (an adopted database has them).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _uuid() -> sa.Uuid:
    return sa.Uuid(as_uuid=False)


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True)


TABLES: dict[str, Callable[[], list[Any]]] = {
    "envvars": lambda: [
        _id(),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("value", sa.String, nullable=False),
        sa.UniqueConstraint("name", "value", name="uc_name_value"),
    ],
    "githashes": lambda: [_id(), sa.Column("hash", sa.String(64), nullable=False, unique=True)],
    "packages": lambda: [
        _id(),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=False),
        sa.UniqueConstraint("name", "version", name="uc_name_version"),
    ],
    "images": lambda: [_id(), sa.Column("name", sa.String, nullable=False, unique=True)],
    "endpoints": lambda: [_id(), sa.Column("name", sa.String, nullable=False, unique=True)],
    "submits": lambda: [
        _id(),
        sa.Column("uuid", _uuid(), nullable=False, unique=True),
        sa.Column("submit_time", _ts(), nullable=False),
        sa.Column("requested_image_id", sa.Integer, sa.ForeignKey("images.id"), nullable=False),
        sa.Column("requested_package_id", sa.Integer, sa.ForeignKey("packages.id"), nullable=False),
        sa.Column("repo_hash_id", sa.Integer, sa.ForeignKey("githashes.id"), nullable=False),
    ],
    "jobs": lambda: [
        _id(),
        sa.Column("submit_id", sa.Integer, sa.ForeignKey("submits.id"), nullable=False),
        sa.Column("endpoint_id", sa.Integer, sa.ForeignKey("endpoints.id"), nullable=False),
        sa.Column("package_id", sa.Integer, sa.ForeignKey("packages.id"), nullable=False),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id"), nullable=False),
        sa.Column("container_hash", sa.String, nullable=False),
        sa.Column("script_text", sa.Text, nullable=False),
        sa.Column("log_text", sa.Text, nullable=False),
        sa.Column("uuid", _uuid(), nullable=False, unique=True),
    ],
    "job_envs": lambda: [
        _id(),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("env_id", sa.Integer, sa.ForeignKey("envvars.id"), nullable=False),
        sa.UniqueConstraint("job_id", "env_id", name="uc_jobid_envid"),
    ],
    "submit_envs": lambda: [
        _id(),
        sa.Column("submit_id", sa.Integer, sa.ForeignKey("submits.id"), nullable=False),
        sa.Column("env_id", sa.Integer, sa.ForeignKey("envvars.id"), nullable=False),
        sa.UniqueConstraint("submit_id", "env_id", name="uc_submitid_envid"),
    ],
    "artifacts": lambda: [
        _id(),
        sa.Column("path", sa.String, nullable=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.UniqueConstraint("path", "job_id", name="uc_path_jobid"),
    ],
    "release_stores": lambda: [
        _id(),
        sa.Column("store_name", sa.String(255), nullable=False, unique=True),
    ],
    "releases": lambda: [
        _id(),
        sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifacts.id"), nullable=False),
        sa.Column("release_date", _ts(), nullable=False),
        sa.Column(
            "release_store_id", sa.Integer, sa.ForeignKey("release_stores.id"), nullable=False
        ),
        sa.UniqueConstraint("artifact_id", "release_date", name="uc_art_release_date"),
    ],
}


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, columns in TABLES.items():  # dict order = foreign-key order
        if name not in existing:
            op.create_table(name, *columns())


def downgrade() -> None:
    raise NotImplementedError("the butido 0.5 tables hold history; they are never dropped")
