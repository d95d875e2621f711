"""`butido build` with nothing changed, beside its baselines, on a generated repository.

    PYTHONPATH=. .venv/bin/python bench/local_build.py N [--dir DIR] [--database-url URL]
        [--image IMAGE] [--repeat 3]

Generates an N-package repository in DIR (about 3 dependencies each, ``world`` depending on
all, one source each, ``maxjobs = 4``, a build script that copies the source), or reuses the
one an earlier run left there, and builds ``world`` once with real containers when the
build database holds no build of it yet (N = 1,000 takes a while: keep DIR). The database
is the embedded SQLite file in DIR, or ``--database-url`` (a PostgreSQL database, say).

Then, each command in a fresh process, best of ``--repeat``:

- ``python -c 'import airflow_butido.cli.main'``: the interpreter and the command's imports;
- the plan alone, as the plan task runs it (load the repository through the parse cache,
  resolve, check the endpoint and the image, record the submit, decide reuse up front and
  record the reused jobs);
- ``butido build world`` with nothing changed, from start to exit, with its CPU time and
  where the time goes (before the plan, the plan, the report, the rest) from its progress
  lines; checked: exit 0, every package reused up front, no package task started, Airflow
  not imported, the submit recorded with every package's outcome.

The target (N = 1,000): the no-change build under 5 s. The exit status is 1 when a check
fails or the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _bytecode import compile_project  # noqa: E402
from _gen import generate_buildable  # noqa: E402

IMAGE = "airflow-butido/busybox:test"  # `sh` only: the scripts run with #!/bin/sh
SHORT_NAME = "bb"
TARGET_N, TARGET_SECONDS = 1000, 5.0
# a progress line of `butido build`
EVENT = re.compile(r"^\[\s*([\d.]+)s\] ([^:]+): (.*)$", re.M)

PLAN_ALONE = """
import sys, uuid
from airflow_butido.plan import RunRequest
from airflow_butido.run_steps import dag_id_of, plan_run
from airflow_butido import parse_cache
repo, url = sys.argv[1], sys.argv[2] or None
config = parse_cache.load(repo).repo.config
image = config.resolve_image(sys.argv[3])
planned = plan_run(repo, image, RunRequest(("world",)), database_url=url,
                   dag_id=dag_id_of(config, image), run_id=f"bench__{uuid.uuid4().hex[:8]}")
assert not planned.to_run, planned.to_run
"""


@dataclass
class Timed:
    seconds: float
    cpu: float
    done: subprocess.CompletedProcess[str]


def timed(command: list[str], env: dict[str, str]) -> Timed:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(seconds, cpu, done)


def best(runs: list[Timed]) -> Timed:
    return min(runs, key=lambda r: r.seconds)


def where(progress: str, seconds: float) -> str:
    """Where the seconds of a no-change build went, from its progress lines (their clock
    starts with the plan)."""
    events = [(float(m[1]), m[2], m[3]) for m in EVENT.finditer(progress)]
    times = {(task, text): t for t, task, text in events}
    plan_start, plan_end = times.get(("plan", "running")), times.get(("plan", "success"))
    report_start = times.get(("report", "running"))
    report_end = times.get(("report", "success"))
    if None in (plan_start, plan_end, report_start, report_end):
        return "(no progress lines)"
    assert plan_end is not None and report_end is not None
    rest = seconds - report_end
    return (
        f"plan {plan_end:.2f} s, report {report_end - plan_end:.2f} s, "
        f"before the plan and after the report (interpreter, imports, loading the "
        f"repository, the output, exit) {rest:.2f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", type=int, help="N, the number of packages")
    parser.add_argument("--dir", type=Path, help="keep the repository, stores and database here")
    parser.add_argument("--database-url", help="the build database (default: SQLite in DIR)")
    parser.add_argument("--image", default=IMAGE)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    compile_project()  # as an installed wheel has it

    base = args.dir or Path(tempfile.mkdtemp(prefix="local-build-"))
    repo, stores = base / "repo", base / "stores"
    if not (repo / "config.toml").is_file():
        generate_buildable(repo, stores, args.packages, image=args.image, short_name=SHORT_NAME)
        config = repo / "config.toml"
        text = config.read_text()
        config.write_text(
            text.replace("available_phases", 'shebang = "#!/bin/sh"\navailable_phases')
        )
    count = sum(1 for p in repo.iterdir() if (p / "pkg.toml").is_file())
    if count != args.packages + 1:
        raise SystemExit(f"{repo} holds {count - 1} packages, not {args.packages}")
    env = {**os.environ, "BUTIDO_PARSE_CACHE": str(base / "parse-cache")}
    for var in ("BUTIDO_CONFIG", "BUTIDO_SETTINGS"):
        env.pop(var, None)
    butido = [sys.executable, "-m", "airflow_butido.cli.main", "--repo", str(repo)]
    if args.database_url:
        butido += ["--database-url", args.database_url]
    build = [*butido, "build", "world", "-I", SHORT_NAME, "--json"]

    first = timed(build, env)
    outcomes = _outcomes(first.done.stdout)
    if first.done.returncode != 0:
        print(first.done.stderr[-3000:], file=sys.stderr)
        return 1
    if outcomes.count("built"):
        print(f"first build: {outcomes.count('built')} built in {first.seconds:.0f} s")

    imports = [sys.executable, "-c", "import airflow_butido.cli.main"]
    plan_alone = [sys.executable, "-c", PLAN_ALONE, str(repo), args.database_url or "", SHORT_NAME]
    traced = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    runs: dict[str, list[Timed]] = {"imports": [], "plan": [], "build": []}
    for _ in range(max(1, args.repeat)):
        runs["imports"].append(timed(imports, env))
        runs["plan"].append(timed(plan_alone, env))
        runs["build"].append(timed(build, env))
    checks = [_check(run) for run in runs["build"]]
    checks.append(_check_imports(timed(build, traced)))
    for name in ("plan", "imports"):
        for run in runs[name]:
            if run.done.returncode != 0:
                checks.append(f"{name}: exit {run.done.returncode}: {run.done.stderr[-500:]}")
    problems = [c for c in checks if c]
    if not problems:
        problems += _check_record(butido, env, runs["build"][-1].done.stdout)

    load = os.getloadavg()
    no_change = best(runs["build"])
    print(f"\n`butido build world`, N = {args.packages}, nothing changed; ", end="")
    print(f"load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min)")
    print("| measure (best of {}) | wall | CPU |".format(len(runs["build"])))
    print("|---|---|---|")
    rows = [
        ("`python -c 'import airflow_butido.cli.main'`", best(runs["imports"])),
        ("the plan alone (fresh process)", best(runs["plan"])),
        ("`butido build world`, nothing changed", no_change),
    ]
    for label, run in rows:
        print(f"| {label} | {run.seconds:.2f} s | {run.cpu:.2f} s |")
    print("each no-change build: " + ", ".join(f"{r.seconds:.2f} s" for r in runs["build"]))
    print(f"where the time goes: {where(no_change.done.stderr, no_change.seconds)}")
    met = args.packages != TARGET_N or no_change.seconds < TARGET_SECONDS
    if args.packages == TARGET_N:
        verdict = "met" if met else "MISSED"
        print(f"target: under {TARGET_SECONDS:.0f} s: {verdict}")
    for problem in problems:
        print(f"FAILED CHECK: {problem}")
    return 0 if met and not problems else 1


def _outcomes(stdout: str) -> list[str]:
    try:
        return [p["outcome"] for p in json.loads(stdout)["packages"]]
    except (ValueError, KeyError, TypeError):
        return []


def _check(run: Timed) -> str:
    """'' when the no-change build did what it must, else what went wrong."""
    done = run.done
    if done.returncode != 0:
        return f"exit {done.returncode}: {done.stderr[-1000:]}"
    outcomes = _outcomes(done.stdout)
    if not outcomes or set(outcomes) != {"reused"}:
        return f"not everything reused: {sorted(set(outcomes))}"
    shown = {m[3] for m in EVENT.finditer(done.stderr) if m[2] not in ("plan", "report")}
    return f"a package task started: {sorted(shown)}" if shown != {"reused up front"} else ""


def _check_imports(run: Timed) -> str:
    modules = set(re.findall(r"^import time:.*\|\s*(\S+)$", run.done.stderr, re.M))
    if not modules:
        return "no -X importtime lines"
    airflow = sorted(m for m in modules if m.split(".")[0] in ("airflow", "alembic"))
    return f"imported {', '.join(airflow[:5])}" if airflow else ""


def _check_record(butido: list[str], env: dict[str, str], stdout: str) -> list[str]:
    """The submit of the last no-change build is recorded with every package's outcome."""
    submit = json.loads(stdout)["submit_uuid"]
    shown = subprocess.run(
        [*butido, "db", "submit", submit, "--json"], env=env, capture_output=True, text=True
    )
    if shown.returncode != 0:
        return [f"butido db submit: {shown.stderr[-500:]}"]
    outcomes = {p["outcome"] for p in json.loads(shown.stdout)["packages"]}
    return [] if outcomes == {"reused up front"} else [f"recorded outcomes {sorted(outcomes)}"]


if __name__ == "__main__":
    sys.exit(main())
