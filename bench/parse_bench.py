"""Import time of dags/butido_build.py on a generated 5,000-package repository.

    .venv/bin/python bench/parse_bench.py [--packages N] [--repeat R]

Each measurement is a fresh Python process (as the DAG processor and every task process
are): first the floor every DAG file pays (``import airflow.sdk`` and the DockerOperator),
then the DAG file itself: cold (empty parse cache: load, resolve, pickle), warm (unchanged
repository: stat fingerprint + unpickle), and warm as a task process (the parsing context
names one task, so the DAG holds only that task). The baseline is a plain ``tomllib`` parse
of the same pkg.toml files (bench/recipes_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gen import generate  # noqa: E402
from recipes_bench import plain_parse  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = ROOT / "dags" / "butido_build.py"

CHILD = """
import json, runpy, sys, time
t0 = time.perf_counter()
import airflow.sdk
from airflow.providers.docker.operators.docker import DockerOperator
t1 = time.perf_counter()
module = runpy.run_path(sys.argv[1])
t2 = time.perf_counter()
dags = [v for v in module.values() if type(v).__name__ == "DAG"]
print(json.dumps({"floor": t1 - t0, "file": t2 - t1,
                  "tasks": sum(len(d.tasks) for d in dags), "dags": len(dags)}))
"""


def child(repo: Path, cache: Path, extra_env: dict[str, str] | None = None) -> dict[str, float]:
    env = {
        **os.environ,
        "BUTIDO_REPO": str(repo),
        "BUTIDO_PARSE_CACHE": str(cache),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **(extra_env or {}),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(DAG_FILE)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["file"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="parse-bench-") as tmp:
        repo = Path(tmp) / "repo"
        generate(repo, packages=args.packages)
        baseline = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            plain_parse(repo)
            baseline = min(baseline, time.perf_counter() - start)

        cold_runs = []
        for i in range(args.repeat):
            cold_runs.append(child(repo, Path(tmp) / f"cold-cache-{i}"))
        cache = Path(tmp) / "cache"
        child(repo, cache)  # fill
        warm = best([child(repo, cache) for _ in range(args.repeat)])
        task_env = {
            "_AIRFLOW_PARSING_CONTEXT_DAG_ID": "butido_deb12",
            "_AIRFLOW_PARSING_CONTEXT_TASK_ID": "pkg04999-1.1",
        }
        task = best([child(repo, cache, task_env) for _ in range(args.repeat)])
        cold = best(cold_runs)

    rows = [
        ("tomllib parse of every pkg.toml (baseline)", baseline, None, None, None),
        ("DAG file, cold parse cache", cold["file"], cold["floor"], cold["wall"], cold["tasks"]),
        ("DAG file, warm parse cache", warm["file"], warm["floor"], warm["wall"], warm["tasks"]),
        ("DAG file, warm, task process", task["file"], task["floor"], task["wall"], task["tasks"]),
    ]
    print(f"{args.packages} packages, best of {args.repeat}")
    print(f"{'':46} {'file s':>8} {'floor s':>8} {'process s':>10} {'tasks':>6}")
    for name, file_s, floor, wall, tasks in rows:
        cells = [f"{file_s:8.2f}"]
        cells.append(f"{floor:8.2f}" if floor is not None else f"{'':8}")
        cells.append(f"{wall:10.2f}" if wall is not None else f"{'':10}")
        cells.append(f"{tasks:6d}" if tasks is not None else f"{'':6}")
        print(f"{name:46} " + " ".join(cells))
    print(f"warm / baseline: {warm['file'] / baseline:.2f}x (file time beyond the import floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
