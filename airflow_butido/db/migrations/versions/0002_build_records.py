"""Additions: job state and timing, Airflow identity, build keys and reuse, artifact
hashes, consumed inputs, endpoint slot leases, build-key claims, query indexes.

Every added column is nullable or has a server default: old rows stay valid.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("submits") as batch:
        batch.add_column(
            sa.Column("repo_dirty", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("dag_id", sa.String, nullable=True))
        batch.add_column(sa.Column("run_id", sa.String, nullable=True))
    op.create_index("ix_submits_submit_time", "submits", ["submit_time"])
    op.create_index("ix_submits_requested_package_id", "submits", ["requested_package_id"])

    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("exit_status", sa.Integer, nullable=True))
        batch.add_column(sa.Column("failure_class", sa.String(64), nullable=True))
        batch.add_column(sa.Column("started_at", _ts(), nullable=True))
        batch.add_column(sa.Column("finished_at", _ts(), nullable=True))
        batch.add_column(sa.Column("dag_id", sa.String, nullable=True))
        batch.add_column(sa.Column("run_id", sa.String, nullable=True))
        batch.add_column(sa.Column("try_number", sa.Integer, nullable=True))
        batch.add_column(sa.Column("image_digest", sa.String, nullable=True))
        batch.add_column(sa.Column("build_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("build_key_inputs", sa.Text, nullable=True))
        batch.add_column(sa.Column("reused_from_job_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("reuse_reason", sa.Text, nullable=True))
        batch.create_foreign_key(
            "jobs_reused_from_job_id_fkey", "jobs", ["reused_from_job_id"], ["id"]
        )
    op.create_index("ix_jobs_submit_id", "jobs", ["submit_id"])
    op.create_index("ix_jobs_package_id", "jobs", ["package_id"])
    op.create_index("ix_jobs_build_key", "jobs", ["build_key"])
    op.create_index("ix_jobs_dag_run", "jobs", ["dag_id", "run_id"])

    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("size", sa.BigInteger, nullable=True))
    op.create_index("ix_artifacts_job_id", "artifacts", ["job_id"])
    op.create_index("ix_releases_artifact_id", "releases", ["artifact_id"])

    op.create_table(
        "job_inputs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifacts.id"), nullable=False),
        sa.UniqueConstraint("job_id", "artifact_id", name="uc_job_inputs_job_artifact"),
    )
    op.create_table(
        "endpoint_leases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("endpoint_name", sa.String, nullable=False),
        sa.Column("job_uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("acquired_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
    )
    op.create_index("ix_endpoint_leases_endpoint", "endpoint_leases", ["endpoint_name"])
    op.create_table(
        "build_claims",
        sa.Column("build_key", sa.String(64), primary_key=True),
        sa.Column("job_uuid", sa.String(36), nullable=False),
        sa.Column("claimed_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("build_claims")
    op.drop_table("endpoint_leases")
    op.drop_table("job_inputs")
    op.drop_index("ix_releases_artifact_id", "releases")
    op.drop_index("ix_artifacts_job_id", "artifacts")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("size")
        batch.drop_column("sha256")
    for index in (
        "ix_jobs_dag_run",
        "ix_jobs_build_key",
        "ix_jobs_package_id",
        "ix_jobs_submit_id",
    ):
        op.drop_index(index, "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("jobs_reused_from_job_id_fkey", type_="foreignkey")
        for column in (
            "reuse_reason",
            "reused_from_job_id",
            "build_key_inputs",
            "build_key",
            "image_digest",
            "try_number",
            "run_id",
            "dag_id",
            "finished_at",
            "started_at",
            "failure_class",
            "exit_status",
            "state",
        ):
            batch.drop_column(column)
    op.drop_index("ix_submits_requested_package_id", "submits")
    op.drop_index("ix_submits_submit_time", "submits")
    with op.batch_alter_table("submits") as batch:
        batch.drop_column("run_id")
        batch.drop_column("dag_id")
        batch.drop_column("repo_dirty")
