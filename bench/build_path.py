"""The build path beside the Docker engine's floor, in one run.

1. ``butido build`` of N independent trivial packages plus a meta package depending on all
   of them (each writes one small file to /outputs), against ``docker run`` of the same
   N + 1 containers with the same parallelism (``maxjobs``), each followed by ``docker cp``
   of its /outputs, the floor of a package build. Best of ``--rounds`` (2), each round in
   a fresh repository and database, the two alternating which goes first.
2. The phases of those jobs, read back from the build database (jobs.phase_seconds);
   ``remove`` happens after the job has left its slot (butido build does it in the
   background), ``slot_wait`` includes waiting for a slot held by another job.
3. 1 GiB of outputs: stores.extract_outputs against ``docker cp`` (bench/outputs_bench.py).

Targets on a 2-core machine: per package at most 1.3x ``docker run``; outputs at least
0.8x the throughput of ``docker cp``, peak RSS under 100 MB. Run:

    .venv/bin/python bench/build_path.py [-n 60] [--maxjobs 4] [--size-mib 1024] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import outputs_bench  # noqa: E402
from _gen import BUILDABLE_CONFIG  # noqa: E402
from _phases import phase_table  # noqa: E402

IMAGE = os.environ.get("BUTIDO_TEST_IMAGE", "airflow-butido/debian:bookworm")
SOCKET = "/var/run/docker.sock"
PG_ADMIN = os.environ.get("BUTIDO_BENCH_PG", "postgresql+psycopg2://butido:butido@127.0.0.1:5432/")
TARGET_RATIO = 1.3
SCRIPT = "mkdir -p /outputs && echo {name} > /outputs/{name}-1.pkg"


def write_repo(root: Path, n: int, maxjobs: int) -> list[str]:
    for d in ("staging", "releases/default", "sources", "logs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(
        BUILDABLE_CONFIG.format(
            stores=root, image=IMAGE, short="bench", socket=SOCKET, maxjobs=maxjobs
        )
    )
    names = [f"p{i:03d}" for i in range(n)]
    for name, deps in [*((x, []) for x in names), ("meta", names)]:
        (root / name).mkdir()
        (root / name / "pkg.toml").write_text(
            f'name = "{name}"\nversion = "1"\nversion_is_semver = false\npatches = []\n\n'
            f"[dependencies]\nbuild = {json.dumps([f'{d} =1' for d in deps])}\nruntime = []\n\n"
            f"[sources]\n\n[phases]\nbuild.script = '''\n{SCRIPT.format(name=name)}\n'''\n"
        )
    return names


def fresh_database() -> tuple[str, str]:
    import sqlalchemy as sa

    name = f"butido_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN + "postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return name, PG_ADMIN + name


def drop_database(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN + "postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


def butido_build(root: Path, url: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "airflow_butido.cli.main", "--repo", str(root),
         "--database-url", url, "build", "meta", "1", "-I", "bench"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit("butido build failed")
    return elapsed


def docker_run_floor(names: list[str], maxjobs: int, work: Path) -> float:
    """Each package as plain docker: run the script in a container, copy /outputs out."""

    def one(name: str) -> None:
        cid = f"butido-bench-floor-{name}-{uuid.uuid4().hex[:8]}"
        try:
            subprocess.run(
                ["docker", "run", "--name", cid, "--label", "io.butido.managed=true", IMAGE,
                 "/bin/bash", "-c", SCRIPT.format(name=name)],
                check=True, capture_output=True,
            )  # fmt: skip
            subprocess.run(
                ["docker", "cp", f"{cid}:/outputs", str(work / name)],
                check=True, capture_output=True,
            )  # fmt: skip
        finally:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)

    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=maxjobs) as pool:
        list(pool.map(one, names))
    one("meta")
    return time.monotonic() - start


def build_once(n: int, maxjobs: int, sqlite: bool) -> tuple[float, list]:
    """``butido build`` in a fresh repository and build database: seconds, phases."""
    db_name, url = ("", "") if sqlite else fresh_database()
    work = Path(tempfile.mkdtemp(prefix="butido-bench-path-"))
    url = url or f"sqlite:///{work}/butido.db"
    try:
        write_repo(work / "repo", n, maxjobs)
        return butido_build(work / "repo", url), phase_table(url)
    finally:
        if db_name:
            drop_database(db_name)
        shutil.rmtree(work, ignore_errors=True)


def floor_once(n: int, maxjobs: int) -> float:
    work = Path(tempfile.mkdtemp(prefix="butido-bench-floor-"))
    try:
        return docker_run_floor([f"p{i:03d}" for i in range(n)], maxjobs, work / "floor")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=60, help="independent packages")
    parser.add_argument("--maxjobs", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=1024, help="0 skips the outputs part")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument(
        "--sqlite", action="store_true", help="a SQLite build database (default: PostgreSQL)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="best of this many, build and floor alternating"
    )
    args = parser.parse_args()

    load = os.getloadavg()[0]
    builds: list[tuple[float, list[tuple[str, float, float, float]]]] = []
    floors: list[float] = []
    for round_ in range(args.rounds):
        # alternating which goes first, so a change of load between them evens out
        if round_ % 2:
            floors.append(floor_once(args.n, args.maxjobs))
            builds.append(build_once(args.n, args.maxjobs, args.sqlite))
        else:
            builds.append(build_once(args.n, args.maxjobs, args.sqlite))
            floors.append(floor_once(args.n, args.maxjobs))
    built, phases = min(builds, key=lambda b: b[0])
    floor = min(floors)
    outputs = (
        outputs_bench.measure(args.size_mib, args.files, f"unix://{SOCKET}")
        if args.size_mib
        else None
    )

    count = args.n + 1
    ratio = built / floor
    database = "SQLite" if args.sqlite else "PostgreSQL"
    print(
        f"load average at the start: {load:.2f}; {count} packages, maxjobs {args.maxjobs}, "
        f"{database}\n"
    )
    print(f"{'':<40} {'seconds':>8} {'per package':>12}")
    print(f"{'butido build (whole command)':<40} {built:8.1f} {built / count:12.3f}")
    print(f"{'docker run + docker cp, same parallelism':<40} {floor:8.1f} {floor / count:12.3f}")
    print(f"{'ratio (target <= 1.3x)':<40} {ratio:8.2f}x")
    rounds = ", ".join(f"{b:.1f}/{f:.1f}" for (b, _), f in zip(builds, floors, strict=True))
    print(f"(best of {args.rounds}; build/floor seconds of each round: {rounds})")
    print(f"\n{'phase (per job, from the database)':<40} {'mean':>8} {'median':>8} {'max':>8}")
    for phase, mean, median, top in phases:
        print(f"{phase:<40} {mean:8.3f} {median:8.3f} {top:8.3f}")
    ok = ratio <= TARGET_RATIO
    if outputs is not None:
        mib = args.size_mib // args.files * args.files
        extract, copied = outputs["extract"], outputs["docker_cp"]
        base = outputs["baseline"]["maxrss_kb"] / 1024
        out_ratio = copied["seconds"] / extract["seconds"]
        peak = extract["maxrss_kb"] / 1024
        head = f"{mib} MiB of outputs"
        print(
            f"\n{head:<40} {'seconds':>8} {'MiB/s':>8} {'CPU s':>6} {'engine CPU s':>12} "
            f"{'peak RSS':>9}"
        )
        for label, r in (
            ("stores.extract_outputs", extract),
            ("docker cp", copied),
            ("archive stream only, discarded", outputs["stream"]),
        ):
            rss, cpu, engine = r["maxrss_kb"] / 1024, r["cpu_seconds"], r["engine_cpu_seconds"]
            rate = mib / r["seconds"]
            print(
                f"{label:<40} {r['seconds']:8.2f} {rate:8.0f} {cpu:6.2f} {engine:12.2f} "
                f"{rss:6.1f} MB"
            )
        print(f"{'throughput vs docker cp (target >= 0.8x)':<40} {out_ratio:8.2f}x")
        print(f"(peak RSS of a process with the same imports, doing nothing: {base:.1f} MB)")
        ok = ok and out_ratio >= outputs_bench.TARGET_RATIO and peak < outputs_bench.TARGET_MB
    print("\nOK" if ok else "\nMISSED a target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
