"""Build-database benchmark on PostgreSQL: 1,000,000 jobs and 3,000,000 artifacts.

Measures the reuse lookup (``find_reusable``, target p95 < 20 ms) and the command
``butido db jobs --limit 50`` in-process (target p95 < 200 ms) on a fresh database
filled with generate_series, and prints both beside the row counts.

    .venv/bin/python bench/db_bench.py [--admin-url URL] [--jobs N] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import statistics
import sys
import time
import uuid
from unittest import mock

import sqlalchemy as sa

from airflow_butido.cli import main as cli_main
from airflow_butido.db import reuse
from airflow_butido.db.engine import make_engine
from airflow_butido.db.migrate import upgrade

ADMIN_URL = os.environ.get(
    "BUTIDO_TEST_PG_URL", "postgresql+psycopg2://butido:butido@127.0.0.1:5432/butido"
)
TARGET_REUSE_P95_MS = 20.0
TARGET_JOBS_P95_MS = 200.0

FILL = [
    "INSERT INTO packages (name, version) "
    "SELECT 'pkg-' || i, '1.' || (i % 7) FROM generate_series(1, :packages) i",
    "INSERT INTO images (name) SELECT 'debian:' || i FROM generate_series(1, 5) i",
    "INSERT INTO endpoints (name) SELECT 'ep' || i FROM generate_series(1, 4) i",
    "INSERT INTO githashes (hash) SELECT md5(i::text) FROM generate_series(1, 1000) i",
    "INSERT INTO envvars (name, value) SELECT 'VAR' || i, 'v' FROM generate_series(1, 10) i",
    "INSERT INTO submits (uuid, submit_time, requested_image_id, requested_package_id, "
    "repo_hash_id, repo_dirty) "
    "SELECT md5('submit' || i)::uuid, now() - make_interval(secs => :submits - i), "
    "1 + i % 5, 1 + i % :packages, 1 + i % 1000, false FROM generate_series(1, :submits) i",
    "INSERT INTO jobs (submit_id, endpoint_id, package_id, image_id, container_hash, "
    "script_text, log_text, uuid, state, exit_status, started_at, finished_at, dag_id, "
    "run_id, try_number, image_digest, build_key) "
    "SELECT 1 + (i::bigint * :submits / :jobs) % :submits, 1 + i % 4, 1 + i % :packages, "
    "1 + i % 5, "
    "md5(i::text) || md5(i::text), '#!/bin/bash' || chr(10) || 'make ' || (i % :packages), "
    "'building' || chr(10) || '#BUTIDO:STATE:OK', md5('job' || i)::uuid, "
    "CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'success' END, CASE WHEN i % 10 = 0 THEN 1 "
    "ELSE 0 END, now() - make_interval(secs => :jobs - i), now() - make_interval(secs => "
    ":jobs - i - 1), 'butido_debian', 'run' || (i / 100), 1, 'sha256:' || md5((i % 5)::text), "
    "encode(sha256(('key' || (i % (:jobs / 3)))::bytea), 'hex') "
    "FROM generate_series(1, :jobs) i",
    "INSERT INTO artifacts (path, job_id, sha256, size) "
    "SELECT 'out/pkg-' || (1 + ((i - 1) / 3) % :packages) || '-' || (i % 3) || '.pkg', "
    "1 + (i - 1) / 3, md5(i::text) || md5('x' || i), 1000 + i % 5000 "
    "FROM generate_series(1, :artifacts) i",
    "INSERT INTO job_envs (job_id, env_id) SELECT i, 1 + i % 10 FROM generate_series(1, :jobs) i",
]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def fill(engine: sa.Engine, jobs: int) -> dict[str, int]:
    sizes = {
        "packages": 10_000,
        "submits": jobs // 10,
        "jobs": jobs,
        "artifacts": jobs * 3,
    }
    with engine.begin() as conn:
        for statement in FILL:
            started = time.perf_counter()
            conn.execute(sa.text(statement), sizes)
            table = statement.split()[2]
            print(f"  filled {table:<10} {time.perf_counter() - started:6.1f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    with engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("jobs", "artifacts", "submits", "packages")
        }


def bench_reuse(engine: sa.Engine, jobs: int, samples: int) -> list[float]:
    rng = random.Random(5)
    with engine.connect() as conn:
        picks = []
        for _ in range(samples):
            job_id = rng.randint(1, jobs)
            picks.append(
                conn.execute(
                    sa.text(
                        "SELECT p.name, p.version, j.build_key FROM jobs j "
                        "JOIN packages p ON p.id = j.package_id WHERE j.id = :id"
                    ),
                    {"id": job_id},
                ).one()
            )
    timings = []
    found = 0
    for name, version, key in picks:
        started = time.perf_counter()
        hit = reuse.find_reusable(engine, name, version, key, lambda _p, _s: True)
        timings.append((time.perf_counter() - started) * 1000)
        found += hit is not None
    print(f"  reuse lookups: {samples}, with a candidate: {found}")
    return timings


def bench_db_jobs(url: str, samples: int) -> list[float]:
    timings = []
    with mock.patch.object(cli_main, "COMMAND_MODULES", ("airflow_butido.cli.db",)):
        for _ in range(samples):
            out = io.StringIO()
            started = time.perf_counter()
            with contextlib.redirect_stdout(out):
                code = cli_main.main(["db", "jobs", "--db-url", url, "--limit", "50"])
            timings.append((time.perf_counter() - started) * 1000)
            assert code == 0 and len(out.getvalue().splitlines()) >= 50
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    admin = sa.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    name = f"butido_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        print(f"database {name}: migrating and filling", flush=True)
        upgrade(engine)
        started = time.perf_counter()
        counts = fill(engine, args.jobs)
        print(f"  fill total {time.perf_counter() - started:.0f} s")
        reuse_ms = bench_reuse(engine, args.jobs, args.samples)
        jobs_ms = bench_db_jobs(url, max(20, args.samples // 10))
    finally:
        engine.dispose()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    rows = ", ".join(f"{t}={n:,}" for t, n in counts.items())
    reuse_p95, jobs_p95 = percentile(reuse_ms, 95), percentile(jobs_ms, 95)
    print(f"rows: {rows}")
    print(
        f"reuse lookup (find_reusable): median {statistics.median(reuse_ms):.2f} ms, "
        f"p95 {reuse_p95:.2f} ms (target < {TARGET_REUSE_P95_MS:.0f} ms)"
    )
    print(
        f"db jobs --limit 50 (in-process, incl. connect and schema check): median "
        f"{statistics.median(jobs_ms):.1f} ms, p95 {jobs_p95:.1f} ms "
        f"(target < {TARGET_JOBS_P95_MS:.0f} ms)"
    )
    ok = reuse_p95 < TARGET_REUSE_P95_MS and jobs_p95 < TARGET_JOBS_P95_MS
    print("result: " + ("within targets" if ok else "TARGET MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
