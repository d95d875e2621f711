"""Load + resolve of a 5,000-package repository against a plain tomllib parse of it.

    .venv/bin/python bench/recipes_bench.py [--packages N] [--repeat R]

Targets: load_repository + resolve (all packages) within 2x the plain parse of the
same pkg.toml files; ``butido tree-of --json`` on the repository under 3 s;
``butido tree-of world --json`` (every package, through the parse cache) under 1 s warm and,
cold, within 2x the plain parse done the same way (a fresh process: interpreter included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bytecode import compile_project  # noqa: E402
from _gen import generate  # noqa: E402


def best_of(repeat: int, *fns: Callable[[], object]) -> list[float]:
    """Best time of each function; runs are interleaved so load changes hit all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def plain_parse(repo: Path) -> int:
    """The baseline: find every pkg.toml and parse it, nothing else."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if "pkg.toml" in filenames:
            with open(os.path.join(dirpath, "pkg.toml"), "rb") as fh:
                tomllib.load(fh)
            count += 1
    return count


PLAIN_PARSE_PROCESS = """
import os, sys, tomllib
for dirpath, dirnames, filenames in os.walk(sys.argv[1]):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    if "pkg.toml" in filenames:
        with open(os.path.join(dirpath, "pkg.toml"), "rb") as fh:
            tomllib.load(fh)
"""


def load_and_resolve(repo: Path) -> int:
    from airflow_butido.graph import resolve
    from airflow_butido.recipes import load_repository

    repository = load_repository(repo, environ={})
    graph = resolve(repository, list(repository), image=None, env=None)
    return len(graph)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    compile_project()  # the commands run as installed, not compiling the project each time
    with tempfile.TemporaryDirectory(prefix="butido-bench-") as tmp:
        repo = Path(tmp) / "repo"
        top = generate(repo, packages=args.packages, world=True)
        files = plain_parse(repo)
        nodes = load_and_resolve(repo)
        assert nodes == args.packages + 1, (nodes, args.packages)
        baseline, ours = best_of(
            args.repeat, lambda: plain_parse(repo), lambda: load_and_resolve(repo)
        )
        butido = Path(sys.executable).parent / "butido"  # the venv running this benchmark
        cache = Path(tmp) / "parse-cache"
        warm_env = {**os.environ, "BUTIDO_PARSE_CACHE": str(cache / "warm")}
        name, version = top.split(" ")
        cmd = [str(butido), "--repo", str(repo), "tree-of", name, version, "--json"]
        world = [str(butido), "--repo", str(repo), "tree-of", "world", "--json"]
        runs = iter(range(10**6))

        def cli() -> None:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=warm_env)

        def plain_process() -> None:
            script = PLAIN_PARSE_PROCESS
            subprocess.run([sys.executable, "-c", script, str(repo)], check=True)

        def world_cold() -> None:
            env = {**os.environ, "BUTIDO_PARSE_CACHE": str(cache / f"cold-{next(runs)}")}
            subprocess.run(world, check=True, stdout=subprocess.DEVNULL, env=env)

        def world_warm() -> None:
            subprocess.run(world, check=True, stdout=subprocess.DEVNULL, env=warm_env)

        world_warm()  # fills the warm cache
        plain_proc, cold, warm, cli_time = best_of(
            max(1, args.repeat // 2), plain_process, world_cold, world_warm, cli
        )

        def nodes_of(command: list[str]) -> int:
            done = subprocess.run(command, check=True, capture_output=True, env=warm_env)
            return len(json.loads(done.stdout)["packages"])

        world_nodes, graph_size = nodes_of(world), nodes_of(cmd)
    ratio = ours / baseline
    rows = [
        ("pkg.toml files", f"{files}", ""),
        ("packages", f"{nodes}", ""),
        ("baseline: tomllib parse of all files", f"{baseline:.3f} s", ""),
        ("load_repository + resolve(all)", f"{ours:.3f} s", f"{ratio:.2f}x (target <= 2x)"),
        (f"butido tree-of {top} --json ({graph_size} nodes)", f"{cli_time:.3f} s", "target < 3 s"),
        ("baseline: tomllib parse of all files, fresh process", f"{plain_proc:.3f} s", ""),
        (
            f"butido tree-of world --json ({world_nodes} nodes), cold parse cache",
            f"{cold:.3f} s",
            f"{cold / plain_proc:.2f}x the fresh-process parse (target <= 2x)",
        ),
        (
            f"butido tree-of world --json ({world_nodes} nodes), warm parse cache",
            f"{warm:.3f} s",
            "target < 1 s",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value':>9}  note")
    for label, value, note in rows:
        print(f"{label.ljust(width)}  {value:>9}  {note}")
    met = ratio <= 2.0 and cli_time < 3.0 and warm < 1.0 and cold <= 2 * plain_proc
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
