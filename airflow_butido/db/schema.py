"""The schema of the build database (SQLAlchemy Core), a superset of butido 0.5's.

butido 0.5's tables and columns keep their names and types; everything added is
nullable or has a default, so rows written by butido stay valid. The migrations in
``migrations/versions`` build exactly this state; a test compares the two.

Conventions for the old NOT NULL columns of ``jobs``:
- ``container_hash`` is ``''`` for a reused job (no container ran);
- ``log_text`` is ``''`` until the job finishes;
- ``endpoint_id`` of a reused job points at the endpoint row named ``(reused)``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

REUSED_ENDPOINT = "(reused)"

# Job states written by this project; NULL = a job recorded by butido 0.5, whose
# outcome is read from its log.
RUNNING = "running"
SUCCESS = "success"
FAILED = "failed"
REUSED = "reused"
JOB_STATES = (RUNNING, SUCCESS, FAILED, REUSED)


def _uuid() -> sa.Uuid:
    return sa.Uuid(as_uuid=False)


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


envvars = sa.Table(
    "envvars",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("value", sa.String, nullable=False),
    sa.UniqueConstraint("name", "value", name="uc_name_value"),
)

githashes = sa.Table(
    "githashes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
)

packages = sa.Table(
    "packages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("version", sa.String, nullable=False),
    sa.UniqueConstraint("name", "version", name="uc_name_version"),
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False, unique=True),
)

endpoints = sa.Table(
    "endpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False, unique=True),
)

submits = sa.Table(
    "submits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("uuid", _uuid(), nullable=False, unique=True),
    sa.Column("submit_time", _ts(), nullable=False),
    sa.Column("requested_image_id", sa.Integer, sa.ForeignKey("images.id"), nullable=False),
    sa.Column("requested_package_id", sa.Integer, sa.ForeignKey("packages.id"), nullable=False),
    sa.Column("repo_hash_id", sa.Integer, sa.ForeignKey("githashes.id"), nullable=False),
    # additions
    sa.Column("repo_dirty", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("dag_id", sa.String, nullable=True),
    sa.Column("run_id", sa.String, nullable=True),
    sa.Index("ix_submits_submit_time", "submit_time"),
    sa.Index("ix_submits_requested_package_id", "requested_package_id"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("submit_id", sa.Integer, sa.ForeignKey("submits.id"), nullable=False),
    sa.Column("endpoint_id", sa.Integer, sa.ForeignKey("endpoints.id"), nullable=False),
    sa.Column("package_id", sa.Integer, sa.ForeignKey("packages.id"), nullable=False),
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id"), nullable=False),
    sa.Column("container_hash", sa.String, nullable=False),
    sa.Column("script_text", sa.Text, nullable=False),
    sa.Column("log_text", sa.Text, nullable=False),
    sa.Column("uuid", _uuid(), nullable=False, unique=True),
    # additions
    sa.Column("state", sa.String(16), nullable=True),
    sa.Column("exit_status", sa.Integer, nullable=True),
    sa.Column("failure_class", sa.String(64), nullable=True),
    sa.Column("started_at", _ts(), nullable=True),
    sa.Column("finished_at", _ts(), nullable=True),
    sa.Column("dag_id", sa.String, nullable=True),
    sa.Column("run_id", sa.String, nullable=True),
    sa.Column("try_number", sa.Integer, nullable=True),
    sa.Column("image_digest", sa.String, nullable=True),
    sa.Column("build_key", sa.String(64), nullable=True),
    sa.Column("build_key_inputs", sa.Text, nullable=True),
    sa.Column(
        "reused_from_job_id",
        sa.Integer,
        sa.ForeignKey("jobs.id", name="jobs_reused_from_job_id_fkey"),
        nullable=True,
    ),
    sa.Column("reuse_reason", sa.Text, nullable=True),
    sa.Column("heartbeat_at", _ts(), nullable=True),  # renewed while the job runs
    sa.Column("phase_seconds", sa.Text, nullable=True),  # JSON: {phase: seconds}
    sa.Index("ix_jobs_submit_id", "submit_id"),
    sa.Index("ix_jobs_package_id", "package_id"),
    sa.Index("ix_jobs_build_key", "build_key"),
    sa.Index("ix_jobs_dag_run", "dag_id", "run_id"),
)

job_envs = sa.Table(
    "job_envs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("env_id", sa.Integer, sa.ForeignKey("envvars.id"), nullable=False),
    sa.UniqueConstraint("job_id", "env_id", name="uc_jobid_envid"),
)

submit_envs = sa.Table(
    "submit_envs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("submit_id", sa.Integer, sa.ForeignKey("submits.id"), nullable=False),
    sa.Column("env_id", sa.Integer, sa.ForeignKey("envvars.id"), nullable=False),
    sa.UniqueConstraint("submit_id", "env_id", name="uc_submitid_envid"),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("path", sa.String, nullable=False),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
    # additions
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("path", "job_id", name="uc_path_jobid"),
    sa.Index("ix_artifacts_job_id", "job_id"),
)

release_stores = sa.Table(
    "release_stores",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("store_name", sa.String(255), nullable=False, unique=True),
)

releases = sa.Table(
    "releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifacts.id"), nullable=False),
    sa.Column("release_date", _ts(), nullable=False),
    sa.Column("release_store_id", sa.Integer, sa.ForeignKey("release_stores.id"), nullable=False),
    sa.UniqueConstraint("artifact_id", "release_date", name="uc_art_release_date"),
    sa.Index("ix_releases_artifact_id", "artifact_id"),
)

# --- tables butido 0.5 does not have -------------------------------------------

job_inputs = sa.Table(
    "job_inputs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifacts.id"), nullable=False),
    sa.UniqueConstraint("job_id", "artifact_id", name="uc_job_inputs_job_artifact"),
)

endpoint_leases = sa.Table(
    "endpoint_leases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("endpoint_name", sa.String, nullable=False),
    sa.Column("job_uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("acquired_at", _ts(), nullable=False),
    sa.Column("expires_at", _ts(), nullable=False),
    sa.Index("ix_endpoint_leases_endpoint", "endpoint_name"),
)

# The log of a job in order, one row per chunk, when it is longer than fits in
# jobs.log_text (which then holds its end, see records.LOG_TEXT_MAX_CHARS).
job_log_chunks = sa.Table(
    "job_log_chunks",
    metadata,
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("text", sa.Text, nullable=False),
)

build_claims = sa.Table(
    "build_claims",
    metadata,
    sa.Column("build_key", sa.String(64), primary_key=True),
    sa.Column("job_uuid", sa.String(36), nullable=False),
    sa.Column("claimed_at", _ts(), nullable=False),
    sa.Column("expires_at", _ts(), nullable=False),
)

submit_packages = sa.Table(
    "submit_packages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("submit_id", sa.Integer, sa.ForeignKey("submits.id"), nullable=False),
    sa.Column("package_id", sa.Integer, sa.ForeignKey("packages.id"), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.UniqueConstraint("submit_id", "package_id", name="uc_submit_packages_submit_package"),
)

# How a package of a submit ended (``submit_packages.outcome``): built, failed, not built
# (a dependency failed), reused up front (by the plan) or at run time, or not requested.
SUBMIT_OUTCOMES = (
    "built", "reused up front", "reused at run time", "failed", "not built", "not requested",
)  # fmt: skip

BUTIDO_05_TABLES = (
    "envvars",
    "githashes",
    "packages",
    "images",
    "endpoints",
    "submits",
    "jobs",
    "job_envs",
    "submit_envs",
    "artifacts",
    "release_stores",
    "releases",
)
