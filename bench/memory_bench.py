"""Peak memory of storing a build's log and of bringing back 100,000 output files.

Each case runs in a fresh process, so its peak RSS (``VmHWM``) is that case's alone, beside a
baseline process that imports the same modules and sets up the same database:

* ``log``: a 100 MiB log (short lines) through the log protocol parser and its spool
  file (container.fold_log) into the build database (records.record_job_finish);
* ``line``: one 300 MiB line without a newline, through the line splitter as well;
* ``outputs``: a tar stream of 100,000 small files through stores.extract_outputs,
  then recorded with the job's success (artifact rows written in batches).

Every case runs on SQLite and, when reachable, on PostgreSQL. Target: under 200 MB
each. Run:

    .venv/bin/python bench/memory_bench.py [--log-mib 100] [--line-mib 300]
        [--files 100000] [--pg-url postgresql+psycopg2://butido:butido@127.0.0.1/butido]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 200
PG_URL = os.environ.get(
    "BUTIDO_TEST_PG_URL", "postgresql+psycopg2://butido:butido@127.0.0.1:5432/butido"
)

CHILD = r"""
import io, json, sys, tarfile, tempfile, time, uuid
from pathlib import Path
from airflow_butido.container import fold_log, iter_lines
from airflow_butido.db.engine import make_engine
from airflow_butido.db.migrate import upgrade
from airflow_butido.db import records
from airflow_butido.stores import extract_outputs

case, url, amount, workdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
engine = make_engine(url)
upgrade(engine)
submit, job = str(uuid.uuid4()), str(uuid.uuid4())
records.record_submit(engine, uuid=submit, package_name="p", package_version="1",
                      image="i", repo_commit="c" * 40)
records.record_job_start(engine, uuid=job, submit_uuid=submit, package_name="p",
                         package_version="1", image="i", endpoint="local",
                         container_id="f" * 64, script="#!/bin/bash\n")
MIB = 1 << 20
start = time.monotonic()

def frames_of_lines(total):
    line = (b"x" * 99) + b"\n"
    block = line * (MIB // len(line))
    sent = 0
    while sent < total:
        yield (1, block)
        sent += len(block)
    yield (1, b"#BUTIDO:STATE:OK\n")

def frames_of_one_line(total):
    block = b"y" * MIB
    for _ in range(total // MIB):
        yield (1, block)

def tar_of_files(count):
    for i in range(count):
        info = tarfile.TarInfo(f"outputs/d{i % 100}/file-{i}.pkg")
        data = f"{i}\n".encode()
        info.size = len(data)
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        yield data + bytes(-len(data) % tarfile.BLOCKSIZE)
    yield bytes(2 * tarfile.BLOCKSIZE)

if case == "baseline":
    pass
elif case in ("log", "line"):
    frames = frames_of_lines(amount * MIB) if case == "log" else frames_of_one_line(amount * MIB)
    outcome = fold_log(iter_lines(frames), exit_code=lambda: 0, tail_lines=10)
    with outcome.log:
        records.record_job_finish(engine, uuid=job, state="success", exit_status=0,
                                  log=outcome.log)
elif case == "outputs":
    artifacts = extract_outputs(tar_of_files(amount), workdir / "store", owner="p 1")
    assert len(artifacts) == amount, len(artifacts)
    records.record_job_finish(engine, uuid=job, state="success", exit_status=0, log="ok\n",
                              artifacts=artifacts)
# VmHWM, the peak of this process's own memory: ru_maxrss would also count the parent's
# memory at the fork that started this interpreter (Linux keeps it across exec)
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.monotonic() - start, "maxrss_kb": peak_kb}))
"""


def run_case(case: str, url: str, amount: int) -> dict[str, float]:
    """Run one case in a fresh interpreter; its peak RSS in MB and its duration."""
    with tempfile.TemporaryDirectory(prefix="butido-membench-") as work:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, case, url, str(amount), work],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"peak_mb": result["maxrss_kb"] / 1024, "seconds": result["seconds"]}


class Databases:
    """A SQLite file per case and, when the server answers, a fresh PostgreSQL database."""

    def __init__(self, pg_url: str | None) -> None:
        self.pg_url = pg_url
        self.admin = None
        self.created: list[str] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="butido-membench-db-")
        if pg_url:
            try:
                import sqlalchemy as sa

                self.admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
                with self.admin.connect() as conn:
                    conn.execute(sa.text("select 1"))
            except Exception as exc:  # no server: SQLite only
                print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
                self.admin = None

    def urls(self) -> list[tuple[str, str]]:
        found = [("sqlite", f"sqlite:///{self.tmp.name}/{uuid.uuid4().hex}.sqlite")]
        if self.admin is not None:
            import sqlalchemy as sa

            name = f"butido_membench_{uuid.uuid4().hex[:10]}"
            with self.admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            self.created.append(name)
            found.append(("postgresql", self.admin.url.set(database=name).render_as_string(False)))
        return found

    def close(self) -> None:
        if self.admin is not None:
            import sqlalchemy as sa

            with self.admin.connect() as conn:
                for name in self.created:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            self.admin.dispose()
        self.tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-mib", type=int, default=100)
    parser.add_argument("--line-mib", type=int, default=300)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--pg-url", default=PG_URL, help="an admin URL ('' for SQLite only)")
    args = parser.parse_args(argv)
    cases = [
        ("baseline", 0, "imports, engine, schema"),
        ("log", args.log_mib, f"{args.log_mib} MiB log"),
        ("line", args.line_mib, f"one {args.line_mib} MiB line"),
        ("outputs", args.files, f"{args.files} output files"),
    ]
    databases = Databases(args.pg_url or None)
    failed = False
    try:
        print(f"{'database':<11} {'case':<26} {'peak RSS':>10} {'seconds':>8}")
        for case, amount, label in cases:
            for kind, url in databases.urls():
                result = run_case(case, url, amount)
                over = case != "baseline" and result["peak_mb"] >= TARGET_MB
                failed |= over
                print(
                    f"{kind:<11} {label:<26} {result['peak_mb']:>7.0f} MB "
                    f"{result['seconds']:>8.1f}{'  OVER TARGET' if over else ''}",
                    flush=True,
                )
    finally:
        databases.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
