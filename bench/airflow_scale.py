"""Incremental runs at Airflow scale: butido's DAG beside Airflow's own floor, same run.

    PYTHONPATH=. .venv/bin/python bench/airflow_scale.py N [--skip-floor] [--json FILE]
        [--state DIR] [--only-everything [--rounds R]] [--preload]

Starts a real deployment (api-server, scheduler, dag-processor; LocalExecutor with
parallelism 8; PostgreSQL for Airflow's metadata and the build database), generates an
N-package repository (about 3 dependencies each, ``world`` depending on all, one source
each, ``maxjobs = 4``, a build script that copies the source in the local image
airflow-butido/debian:bookworm), puts the package tasks in a pool sized by
``butido airflow pool``, and triggers runs over REST as ``butido trigger`` does:

- build everything; the same again with nothing changed; one leaf requested;
  one package's source changed (only it and its dependents build); one package broken
  (only its branch fails, the rest is reused, the report waits for every package);
- ``butido build world`` locally with nothing changed (cold and warm parse cache);
- Airflow's floor: a plain DockerOperator DAG with the same tasks and edges, each running
  ``sh -c true`` in the same image, in a pool of 4.

``--state DIR`` saves the repository, the stores and the build database once everything is
built, and a later run with the same DIR starts from them instead of building everything
again (at N = 1,000 that build is half an hour of this machine).

Each figure is trigger to finished run (polled every 0.5 s). Where a target is missed, the
row says where the time went, from the task instances' queued/start/end times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _bytecode import compile_project  # noqa: E402
from _gen import BUILD_SCRIPT, WORLD, generate_buildable, write_buildable  # noqa: E402
from _phases import phase_table  # noqa: E402

from tests.e2e import deployment as harness  # noqa: E402

IMAGE = "airflow-butido/debian:bookworm"
SHORT_NAME = "bookworm"
DAG_ID = harness.DAG_ID  # butido_ + the short name
FLOOR_DAG_ID = "airflow_floor"
WARMUP_DAG_ID = "bench_warm_up"
POOL = "butido"
FLOOR_POOL = "airflow_floor"
MAXJOBS = 4
PG_ADMIN_URL = os.environ.get(
    "BUTIDO_TEST_PG_URL", "postgresql+psycopg2://butido:butido@127.0.0.1:5432/butido"
)
# a package's line in the report's log
REPORT_LINE = re.compile(r"(?:built|reused|failed|not built)\s+((?:pkg\d{5}|world) 1)\b")
# a progress line of `butido build`
LOCAL_EVENT = re.compile(r"^\[\s*([\d.]+)s\] ([^:]+): (.*)$", re.M)
# seconds, trigger to finished run: (N, scenario) -> target
TARGETS = {
    (100, "nothing changed"): 15.0,
    (1000, "nothing changed"): 45.0,
    (1000, "one leaf requested"): 15.0,
    (1000, "butido build, nothing changed"): 5.0,
}

FLOOR_DAG = '''\
"""Airflow's floor: the benchmark's tasks and edges, each `sh -c true` in a pool."""
import json
from pathlib import Path

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG

GRAPH = json.loads(Path({graph!r}).read_text())
with DAG({dag_id!r}, schedule=None, catchup=False) as dag:
    tasks = {{
        name: DockerOperator(
            task_id=f"{{name}}-1",
            image={image!r},
            command=["sh", "-c", "true"],
            pool={pool!r},
            docker_url="unix:///var/run/docker.sock",
            auto_remove="success",
            mount_tmp_dir=False,
        )
        for name, _ in GRAPH
    }}
# the relations directly: `a >> b` hashes the whole DAG per edge
for name, needs in GRAPH:
    for dep in needs:
        tasks[dep].downstream_task_ids.add(tasks[name].task_id)
        tasks[name].upstream_task_ids.add(tasks[dep].task_id)
'''


WARMUP_DAG = '''\
"""One DockerOperator task, run before anything is measured."""
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG

with DAG({dag_id!r}, schedule=None, catchup=False):
    DockerOperator(
        task_id="warm-up",
        image={image!r},
        command=["sh", "-c", "true"],
        docker_url="unix:///var/run/docker.sock",
        auto_remove="success",
        mount_tmp_dir=False,
    )
'''


@dataclass
class Result:
    scenario: str
    seconds: float
    ok: bool
    checks: list[str] = field(default_factory=list)
    where: str = ""


def when(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def breakdown(client: Any, dag_id: str, run_id: str, triggered: float) -> str:
    """Where the time of a run went, from its task instances."""
    tis = {ti["task_id"]: ti for ti in client.task_instances(dag_id, run_id)}
    run = client.dag_run(dag_id, run_id)
    parts = []

    def rel(t: float | None) -> str:
        return "-" if t is None else f"{t - triggered:.1f}"

    plan = tis.get("plan")
    if plan:
        q, s, e = (
            when(plan.get("queued_when")),
            when(plan.get("start_date")),
            when(plan.get("end_date")),
        )
        parts.append(f"plan queued {rel(q)} started {rel(s)} ended {rel(e)}")
        if s and e:
            parts.append(f"plan {e - s:.1f} s")
    packages = [ti for t, ti in tis.items() if t not in ("plan", "report")]
    started = [when(ti.get("start_date")) for ti in packages if ti.get("start_date")]
    ended = [when(ti.get("end_date")) for ti in packages if ti.get("end_date")]
    ran = [ti for ti in packages if ti.get("start_date") and ti.get("state") != "skipped"]
    parts.append(f"{len(ran)} package tasks ran")
    if ran:
        durations = [
            when(ti["end_date"]) - when(ti["start_date"]) for ti in ran if ti.get("end_date")
        ]  # type: ignore[operator]
        parts.append(
            f"first start {rel(min(started))} last end {rel(max(ended))},"
            f" task mean {sum(durations) / max(1, len(durations)):.1f} s"
        )
        parts.append(slot_gaps(ran))
    elif ended:
        parts.append(f"last skip {rel(max(ended))}")
    report = tis.get("report")
    if report:
        parts.append(
            f"report queued {rel(when(report.get('queued_when')))}"
            f" started {rel(when(report.get('start_date')))}"
            f" ended {rel(when(report.get('end_date')))}"
        )
    parts.append(f"run ended {rel(when(run.get('end_date')))}")
    return "; ".join(parts)


def slot_gaps(ran: list[dict[str, Any]], slots: int = MAXJOBS) -> str:
    """How long a pool slot stood empty between tasks: the k-th task to end frees the slot
    the (k + slots)-th task to start takes (the scheduler's and the executor's latency, and
    waiting for dependencies), and how long a task was queued before it started."""
    starts = sorted(t for ti in ran if (t := when(ti.get("start_date"))) is not None)
    ends = sorted(t for ti in ran if (t := when(ti.get("end_date"))) is not None)
    gaps = [starts[k + slots] - end for k, end in enumerate(ends) if k + slots < len(starts)]
    queued = [
        s - q
        for ti in ran
        if (q := when(ti.get("queued_when"))) is not None
        and (s := when(ti.get("start_date"))) is not None
    ]
    if not gaps or not queued:
        return "slot gaps: -"
    return (
        f"slot empty between tasks {statistics.mean(gaps):.2f} s on average,"
        f" queued to started {statistics.mean(queued):.2f} s"
    )


def local_breakdown(progress: str, seconds: float) -> str:
    """Where the time of ``butido build`` went, from its ``[  1.2s] task: state`` lines
    (seconds since the runner started; before that: interpreter, Airflow, the DAG)."""
    events = [(float(m[1]), m[2], m[3]) for m in LOCAL_EVENT.finditer(progress)]
    if not events:
        return ""

    def at(task: str, first: bool) -> float | None:
        times = [t for t, name, _ in events if name == task]
        return (min(times) if first else max(times)) if times else None

    runner = seconds - max(t for t, _, _ in events)
    parts = [f"outside the runner (interpreter, imports, DAG, output): {runner:.1f} s"]
    for task in ("plan", "report"):
        start, end = at(task, True), at(task, False)
        if start is not None and end is not None:
            parts.append(f"{task} {start:.1f}-{end:.1f} s")
    return "; ".join(parts)


def deployment_cpu(deploy: Any) -> float:
    """CPU seconds used so far by the deployment's processes and everything they started
    (task supervisors and task processes included, reaped ones through their parents'
    children times). The Docker engine is not counted: other work on the machine uses it."""
    import psutil

    total = 0.0
    for popen in deploy.processes.values():
        try:
            root = psutil.Process(popen.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in tree:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue  # ended meanwhile: its time reaches its parent's children times
            total += t.user + t.system + t.children_user + t.children_system
    return total


def job_phases(build_db: str, run_id: str) -> str:
    """The mean phases of the jobs of ``run_id`` that ran a container, beside the mean job
    (first to last phase): what a package task spends in its job, against its duration."""
    rows = {phase: mean for phase, mean, _, _ in phase_table(build_db, run_id)}
    total = rows.pop("total", None)
    if total is None:
        return ""
    parts = ", ".join(f"{p} {m:.3f}" for p, m in rows.items() if m >= 0.0005)
    return f"jobs mean {total:.2f} s: {parts}"


def cpu_note(cpu: float, tasks: int) -> str:
    per_task = f", {cpu / tasks:.2f} s per package task" if tasks else ""
    return f"Airflow CPU {cpu:.1f} s{per_task}"


def run_dag(
    client: Any, dag_id: str, conf: dict[str, Any], timeout: float
) -> tuple[str, float, str, float]:
    """Trigger (as ``butido trigger`` does) and poll until finished: the run id, the
    seconds from trigger to finished, the run's state and when it was triggered (epoch)."""
    triggered = time.time()
    start = time.monotonic()
    run_id = client.trigger(dag_id, conf)
    while True:
        state = client.dag_run(dag_id, run_id).get("state")
        seconds = time.monotonic() - start
        if state in ("success", "failed"):
            return run_id, seconds, str(state), triggered
        if seconds > timeout:
            return run_id, seconds, f"timeout ({state})", triggered
        time.sleep(0.5)


def dependents_of(graph: list[tuple[str, list[str]]], name: str) -> set[str]:
    needed_by: dict[str, list[str]] = {}
    for pkg, needs in graph:
        for dep in needs:
            needed_by.setdefault(dep, []).append(pkg)
    found: set[str] = set()
    todo = [name]
    while todo:
        for pkg in needed_by.get(todo.pop(), []):
            if pkg not in found:
                found.add(pkg)
                todo.append(pkg)
    return found


def pick(graph: list[tuple[str, list[str]]], share: float, avoid: set[str]) -> str:
    """A package with dependencies whose dependents are about ``share`` of the repository."""
    want = max(2, int(len(graph) * share))
    candidates = [
        (abs(len(dependents_of(graph, n)) - want), n)
        for n, needs in graph
        if needs and n != WORLD and n not in avoid
    ]
    if not candidates:  # a tiny repository: any package but world
        return pick(graph, share, set()) if avoid else next(n for n, _ in graph if n != WORLD)
    return min(candidates)[1]


class Bench:
    def __init__(
        self,
        n: int,
        base: Path,
        deploy: Any,
        graph: list[tuple[str, list[str]]],
        env: dict[str, str],
        *,
        build_db: str,
    ) -> None:
        self.n = n
        self.build_db = build_db
        self.base = base
        self.deploy = deploy
        self.graph = graph
        self.env = env
        self.results: list[Result] = []
        self.json_path: Path | None = None
        self.timeout = max(900.0, n * 6.0)

    @property
    def client(self) -> Any:
        return self.deploy.client()  # a fresh token for every use (runs take long)

    def record(self, result: Result) -> None:
        target = TARGETS.get((self.n, result.scenario))
        if target is not None and result.seconds >= target and not result.where:
            result.where = "missed the target"
        self.results.append(result)
        mark = "ok" if result.ok else "CHECK FAILED"
        print(f"== {result.scenario}: {result.seconds:.1f} s [{mark}]", flush=True)
        for line in result.checks:
            print(f"   {line}", flush=True)
        if result.where:
            print(f"   where the time went: {result.where}", flush=True)
        if self.json_path is not None:
            self.json_path.write_text(json.dumps([r.__dict__ for r in self.results], indent=2))

    def outcomes(self, run_id: str) -> dict[str, str]:
        report = self.client.xcom(DAG_ID, run_id, "report") or {}
        return {p["package"].split(" ")[0]: p["outcome"] for p in report.get("packages", [])}

    def states(self, run_id: str) -> dict[str, str]:
        tis = self.client.task_instances(DAG_ID, run_id)
        return {ti["task_id"].rsplit("-", 1)[0]: str(ti.get("state")) for ti in tis}

    def butido_run(
        self, scenario: str, packages: list[str], expect: Callable[[str, float], Result]
    ) -> None:
        cpu = deployment_cpu(self.deploy)
        run_id, seconds, state, triggered = run_dag(
            self.client,
            DAG_ID,
            {"packages": packages, "env": {}, "force_rebuild": False},
            self.timeout,
        )
        cpu = deployment_cpu(self.deploy) - cpu
        result = expect(run_id, seconds)
        result.checks.insert(0, f"run {run_id}: {state}")
        result.where = breakdown(self.client, DAG_ID, run_id, triggered)
        result.where += "; " + cpu_note(cpu, self.tasks_ran(DAG_ID, run_id))
        phases = job_phases(self.build_db, run_id)
        if phases:
            result.where += "; " + phases
        self.record(result)

    def tasks_ran(self, dag_id: str, run_id: str) -> int:
        tis = self.client.task_instances(dag_id, run_id)
        return sum(
            1
            for ti in tis
            if ti.get("start_date")
            and ti.get("state") != "skipped"
            and ti["task_id"] not in ("plan", "report")
        )

    def everything(self, scenario: str = "build everything") -> None:
        names = {n for n, _ in self.graph}

        def expect(run_id: str, seconds: float) -> Result:
            outcomes = self.outcomes(run_id)
            built = sum(1 for o in outcomes.values() if o == "built")
            ok = built == len(names) and set(outcomes) == names
            return Result(scenario, seconds, ok, [f"{built} of {len(names)} built"])

        self.butido_run(scenario, [], expect)

    def everything_again(self, round_no: int) -> None:
        """Every package's source changed: everything builds again, on the first build's
        path (the reuse lookup finds nothing). The deployment's parse cache is filled first,
        as the DAG processor would have done on its next parse."""
        from airflow_butido import parse_cache

        for name, needs in self.graph:
            source = f"{name} source {round_no}\n"
            write_buildable(self.base / "repo", self.base / "stores", name, needs, source)
        parse_cache.load(self.base / "repo", environ=self.deploy.env)
        self.everything(f"build everything (round {round_no})")

    def build_world(self, expected: str, what: str) -> Result:
        """``butido build world`` (every package) here, checked for ``expected`` outcomes."""
        cmd = [str(harness.VENV_BIN / "butido"), "--repo", str(self.base / "repo"),
               "build", WORLD, "-I", SHORT_NAME, "--json"]  # fmt: skip
        start = time.monotonic()
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=14400)
        seconds = time.monotonic() - start
        try:
            outcomes = [p["outcome"] for p in json.loads(done.stdout)["packages"]]
        except (ValueError, KeyError):
            outcomes = []
        count = outcomes.count(expected)
        ok = done.returncode == 0 and count == len(self.graph)
        checks = [f"{what}: exit {done.returncode}, {count} of {len(self.graph)} {expected}"]
        if not ok:
            checks.append(done.stderr[-1500:])
        result = Result("", seconds, ok, checks)
        result.where = local_breakdown(done.stderr, seconds)
        return result

    def everything_locally(self) -> None:
        """Build everything with ``butido build world`` instead: the same containers and
        build database, without a task process per package (for a large N, where building
        it all through Airflow takes hours on two busy cores)."""
        result = self.build_world("built", "locally")
        result.scenario, result.where = "build everything (locally, butido build world)", ""
        self.record(result)

    def nothing_changed(self) -> None:
        names = {n for n, _ in self.graph}

        def expect(run_id: str, seconds: float) -> Result:
            outcomes = self.outcomes(run_id)
            reused = sum(1 for o in outcomes.values() if o == "reused")
            started = [
                t
                for t, s in self.states(run_id).items()
                if s not in ("skipped",) and t not in ("plan", "report")
            ]
            ok = reused == len(names) and not started
            return Result(
                "nothing changed",
                seconds,
                ok,
                [f"{reused} of {len(names)} reused up front, {len(started)} tasks ran"],
            )

        self.butido_run("nothing changed", [], expect)

    def one_leaf(self) -> None:
        leaf = next(n for n, needs in self.graph if not needs)

        def expect(run_id: str, seconds: float) -> Result:
            outcomes = self.outcomes(run_id)
            ok = outcomes == {leaf: "reused"}
            return Result("one leaf requested", seconds, ok, [f"{leaf}: {outcomes}"])

        self.butido_run("one leaf requested", [leaf], expect)

    def package_of(self, name: str) -> list[str]:
        return next(needs for n, needs in self.graph if n == name)

    def source_changed(self) -> str:
        changed = pick(self.graph, 0.02, set())
        expected = {changed} | dependents_of(self.graph, changed)
        write_buildable(
            self.base / "repo",
            self.base / "stores",
            changed,
            self.package_of(changed),
            f"{changed} source changed at {time.time_ns()}\n",
        )

        def expect(run_id: str, seconds: float) -> Result:
            outcomes = self.outcomes(run_id)
            built = {n for n, o in outcomes.items() if o == "built"}
            reused = {n for n, o in outcomes.items() if o == "reused"}
            ok = built == expected and len(reused) == len(self.graph) - len(expected)
            return Result(
                "one package's source changed",
                seconds,
                ok,
                [
                    f"{changed} changed: {len(built)} built (expected {len(expected)}:"
                    f" it and its dependents), {len(reused)} reused"
                ],
            )

        self.butido_run("one package's source changed", [], expect)
        return changed

    def broken(self, avoid: str) -> None:
        broken = pick(self.graph, 0.02, {avoid} | dependents_of(self.graph, avoid))
        dependents = dependents_of(self.graph, broken)
        write_buildable(
            self.base / "repo",
            self.base / "stores",
            broken,
            self.package_of(broken),
            f"{broken} source 2\n",
            script="echo broken on purpose; exit 1",
        )

        def expect(run_id: str, seconds: float) -> Result:
            tis = self.client.task_instances(DAG_ID, run_id)
            states = {ti["task_id"].rsplit("-", 1)[0]: ti for ti in tis}
            failed = {n for n, ti in states.items() if ti.get("state") == "failed"}
            upstream_failed = {
                n for n, ti in states.items() if ti.get("state") == "upstream_failed"
            }
            report = states["report"]
            package_ends = [
                when(ti.get("end_date")) or 0.0
                for n, ti in states.items()
                if n not in ("plan", "report")
            ]
            waited = (when(report.get("start_date")) or 0.0) >= max(package_ends)
            log = self.report_log(run_id)
            listed = len(set(REPORT_LINE.findall(log)))
            ok = (
                failed == {broken, "report"}
                and upstream_failed == dependents
                and waited
                and listed >= len(self.graph)
            )
            return Result(
                "one package broken",
                seconds,
                ok,
                [
                    f"{broken} broken: failed {sorted(failed)}, {len(upstream_failed)} not built"
                    f" (expected its {len(dependents)} dependents), the rest reused",
                    f"report started after the last package task: {waited};"
                    f" report lists {listed} of {len(self.graph)} packages",
                ],
            )

        self.butido_run("one package broken", [], expect)

    def report_log(self, run_id: str) -> str:
        client = self.client
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/report/logs/1"
        try:
            data = client._request("GET", path, params={"full_content": "true"})
        except Exception as exc:  # the log is a check, not the figure
            return f"(no log: {exc})"
        content = data.get("content", []) if isinstance(data, dict) else []
        return "\n".join(str(c.get("event", c)) if isinstance(c, dict) else str(c) for c in content)

    def local_build(self) -> None:
        for attempt in ("cold parse cache", "warm parse cache"):
            result = self.build_world("reused", attempt)
            name = "butido build, nothing changed"
            result.scenario = name if "warm" in attempt else f"{name} (cold cache)"
            self.record(result)

    def floor(self, round_no: int = 1) -> None:
        cpu = deployment_cpu(self.deploy)
        run_id, seconds, state, triggered = run_dag(self.client, FLOOR_DAG_ID, {}, self.timeout)
        cpu = deployment_cpu(self.deploy) - cpu
        states = [str(ti.get("state")) for ti in self.client.task_instances(FLOOR_DAG_ID, run_id)]
        ok = state == "success" and states.count("success") == len(self.graph)
        where = breakdown(self.client, FLOOR_DAG_ID, run_id, triggered)
        where += "; " + cpu_note(cpu, self.tasks_ran(FLOOR_DAG_ID, run_id))
        self.record(
            Result(
                "Airflow floor: plain DockerOperator DAG, sh -c true"
                + (f" (round {round_no})" if round_no > 1 else ""),
                seconds,
                ok,
                [f"run {run_id}: {state}, {states.count('success')} tasks"],
                where,
            )
        )


def set_up(deploy: Any, env: dict[str, str], repo: Path) -> str:
    """What a deployment's init does (the compose file's too): the build database's schema
    and the package tasks' pool; and the floor's pool."""
    deploy.client().set_pool(FLOOR_POOL, MAXJOBS, "benchmark floor")
    butido = [str(harness.VENV_BIN / "butido"), "--repo", str(repo)]
    airflow = ["--airflow", deploy.url, "--user", "ci", "--password", harness.PASSWORD]
    said = []
    for command in (["db", "setup"], ["airflow", "pool", *airflow]):
        done = subprocess.run(
            butido + command, env=env, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise SystemExit(f"butido {command[0]} {command[1]} failed: {done.stdout}{done.stderr}")
        said.append(done.stdout.strip())
    return "\n".join(said)


def warm_up(client: Any, timeout: float) -> str:
    """One run of a one-task DockerOperator DAG first, so that no measured run pays the
    deployment's first task (worker start-up, first imports)."""
    run_id, seconds, state, _ = run_dag(client, WARMUP_DAG_ID, {}, timeout)
    if state != "success":
        raise SystemExit(f"the warm-up run {run_id} ended {state}")
    return f"warm-up run: {seconds:.1f} s"


def pool_demo(deploy: Any, env: dict[str, str], repo: Path, waiting: int) -> None:
    """Why the pool: with ``maxjobs = 1``, ``waiting`` + 1 packages ready at once, each
    building for a few seconds. Once the pool holds as many slots as Airflow would give
    (the default pool: 128), once as many as the endpoints take jobs (1). Sampled every
    0.5 s: package tasks running (each a task process holding an executor slot)."""
    client = deploy.client()
    client.set_paused(DAG_ID, False)
    print(f"\n{waiting + 1} packages ready at once, maxjobs 1, each building about 8 s")
    print("| package tasks' pool | run s | task processes at most | task-process seconds |")
    print("|---|---|---|---|")
    for label, slots in (("default_pool size (128 slots)", 128), ("sized to maxjobs (1 slot)", 1)):
        client.set_pool(POOL, slots, "benchmark")
        conf = {"packages": [], "env": {}, "force_rebuild": True}
        start = time.monotonic()
        run_id = client.trigger(DAG_ID, conf)
        most, busy, last = 0, 0.0, time.monotonic()
        while True:
            tis = client.task_instances(DAG_ID, run_id)
            running = sum(
                1
                for ti in tis
                if ti.get("state") == "running" and ti["task_id"] not in ("plan", "report")
            )
            now = time.monotonic()
            busy += running * (now - last)
            last, most = now, max(most, running)
            if client.dag_run(DAG_ID, run_id).get("state") in ("success", "failed"):
                break
            time.sleep(0.5)
        print(f"| {label} | {time.monotonic() - start:.1f} | {most} | {busy:.0f} |", flush=True)


def everything_ratios(results: list[Result]) -> str:
    """Each build-everything run against the floor run next to it (same round), and the
    median: one run swings by a tenth on two busy cores."""
    ours = [r for r in results if r.scenario.startswith("build everything")]
    floors = [r for r in results if r.scenario.startswith("Airflow floor")]
    ratios = [mine.seconds / floor.seconds for mine, floor in zip(ours, floors, strict=False)]
    if len(ratios) < 2:
        return ""
    listed = ", ".join(f"{r:.2f}x" for r in ratios)
    return f"build everything / floor per round: {listed}; median {statistics.median(ratios):.2f}x"


def print_table(n: int, results: list[Result]) -> None:
    floor = next((r for r in results if r.scenario.startswith("Airflow floor")), None)
    print(f"\n{n} packages (+ world), maxjobs {MAXJOBS}, LocalExecutor parallelism 8")
    print("| run | seconds | Airflow floor (same run) | target | checks |")
    print("|---|---|---|---|---|")
    for r in results:
        target = TARGETS.get((n, r.scenario))
        floor_cell = f"{floor.seconds:.1f}" if floor and r is not floor else ""
        target_cell = f"< {target:.0f} s" if target else ""
        print(
            f"| {r.scenario} | {r.seconds:.1f} | {floor_cell} | {target_cell} |"
            f" {'ok' if r.ok else 'FAILED'} |"
        )


def _pg(url: str, *command: str) -> dict[str, Any]:
    """``subprocess.run`` arguments for ``command`` (pg_dump, psql) on the database of
    ``url``."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    args = [*command, "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432),
            "-U", parsed.username or "", "-d", parsed.database or ""]  # fmt: skip
    return {"args": args, "env": {**os.environ, "PGPASSWORD": parsed.password or ""}}


def save_state(state: Path, base: Path, build_db: str) -> None:
    """The repository, stores and build database with everything built, for ``--state``."""
    import shutil

    tmp = state.with_name(state.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("repo", "stores", "graph.json"):
        src = base / name
        if src.is_dir():
            shutil.copytree(src, tmp / name, symlinks=True)
        else:
            shutil.copy2(src, tmp / name)
    with (tmp / "build.sql").open("w") as out:
        subprocess.run(**_pg(build_db, "pg_dump", "--no-owner"), stdout=out, check=True)
    (tmp / "base").write_text(str(base))
    shutil.rmtree(state, ignore_errors=True)
    tmp.rename(state)
    print(f"state saved in {state}", flush=True)


def load_state(state: Path, base: Path, build_db: str) -> list[tuple[str, list[str]]]:
    """Copy a saved state into ``base`` (the stores' paths rewritten), fill the build
    database from it; the graph."""
    import shutil

    for name in ("repo", "stores"):
        shutil.copytree(state / name, base / name, symlinks=True)
    config = base / "repo" / "config.toml"
    config.write_text(config.read_text().replace((state / "base").read_text(), str(base)))
    with (state / "build.sql").open() as dump:
        subprocess.run(
            **_pg(build_db, "psql", "-q", "-v", "ON_ERROR_STOP=1"),
            stdin=dump, stdout=subprocess.DEVNULL, check=True,
        )  # fmt: skip
    graph: list[tuple[str, list[str]]] = json.loads((state / "graph.json").read_text())
    return [(name, list(needs)) for name, needs in graph]


def run_scenarios(bench: Bench, args: argparse.Namespace) -> None:
    if args.state is not None and (args.state / "build.sql").exists():
        print(f"everything built: the state in {args.state}", flush=True)
    elif args.seed_locally:
        bench.everything_locally()
    else:
        bench.everything()
    if args.state is not None and not (args.state / "build.sql").exists():
        save_state(args.state, bench.base, bench.build_db)
    if args.only_everything:
        if not args.skip_floor:
            bench.floor()
        for round_no in range(2, args.rounds + 1):  # the order alternates
            if not args.skip_floor and round_no % 2 == 0:
                bench.floor(round_no)
            bench.everything_again(round_no)
            if not args.skip_floor and round_no % 2 == 1:
                bench.floor(round_no)
        return
    bench.nothing_changed()
    bench.local_build()
    bench.one_leaf()
    changed = bench.source_changed()
    bench.broken(avoid=changed)
    if not args.skip_floor:
        bench.floor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", type=int, help="N, the number of packages")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument(
        "--seed-locally",
        action="store_true",
        help="build everything with `butido build world` rather than through Airflow",
    )
    parser.add_argument(
        "--only-everything",
        action="store_true",
        help="only build everything (and the floor): the build path's overhead",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --only-everything: build everything (and the floor) this many times, "
        "every source changed between rounds, the order alternating",
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        help="the deployment preloads the task modules (airflow_butido/preload.py)",
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument(
        "--state",
        type=Path,
        help="start from the everything-built state saved here, or save it here",
    )
    parser.add_argument(
        "--pool-demo",
        action="store_true",
        help="instead: N packages with no dependencies, maxjobs 1, with and without the pool",
    )
    args = parser.parse_args()
    compile_project()

    import sqlalchemy as sa

    harness.START_TIMEOUT = max(300, args.packages)  # a big DAG file takes a while to parse
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with (
        tempfile.TemporaryDirectory(prefix="airflow-scale-") as tmp,
        harness.fresh_databases(admin) as databases,
    ):
        base = Path(tmp)
        if args.state is not None and (args.state / "build.sql").exists():
            graph = load_state(args.state, base, databases[1])
        else:
            graph = generate_buildable(
                base / "repo",
                base / "stores",
                args.packages,
                image=IMAGE,
                short_name=SHORT_NAME,
                maxjobs=1 if args.pool_demo else MAXJOBS,
                deps=0 if args.pool_demo else 3,
            )
        if args.pool_demo:
            for name, needs in graph[:-1]:
                script = "sleep 8 && " + BUILD_SCRIPT.format(name=name)
                write_buildable(
                    base / "repo", base / "stores", name, needs, f"{name} source 0\n", script=script
                )
            graph = graph[:-1]
            (base / "repo" / WORLD / "pkg.toml").unlink()
        overlay = base / "overlay.toml"
        overlay.write_text("")
        settings = base / "settings.toml"
        settings.write_text(f'database_url = "{databases[1]}"\n\n[airflow]\npool = "{POOL}"\n')
        (base / "graph.json").write_text(json.dumps(graph))
        floor_dag = FLOOR_DAG.format(
            graph=str(base / "graph.json"), dag_id=FLOOR_DAG_ID, image=IMAGE, pool=FLOOR_POOL
        )
        env = {
            "AIRFLOW__CORE__PARALLELISM": "8",
            # a big repository: parse seldom, and give the parse time
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "900",
            "BUTIDO_SETTINGS": str(settings),
        }
        if args.preload:
            from airflow_butido.preload import PRELOAD_ENV

            env.update(PRELOAD_ENV)
        print(f"task modules preloaded: {'yes' if args.preload else 'no'}", flush=True)
        workspace = {"base": base, "repo": base / "repo", "overlay": overlay}
        started = time.monotonic()
        with harness.running_deployment(
            databases,
            workspace,
            {
                "airflow_floor.py": floor_dag,
                "bench_warm_up.py": WARMUP_DAG.format(dag_id=WARMUP_DAG_ID, image=IMAGE),
            },
            env,
        ) as deploy:
            print(f"deployment up in {time.monotonic() - started:.0f} s", flush=True)
            cli_env = {**deploy.env, "BUTIDO_PARSE_CACHE": str(base / "cli-parse-cache")}
            print(set_up(deploy, cli_env, base / "repo"), flush=True)
            if args.pool_demo:
                pool_demo(deploy, cli_env, base / "repo", args.packages - 1)
                return 0
            client = deploy.client()
            harness.wait_until(
                "the floor DAG",
                lambda: client.dag(FLOOR_DAG_ID)["dag_id"] == FLOOR_DAG_ID,
                harness.START_TIMEOUT,
                deploy,
            )
            harness.wait_until(
                "the warm-up DAG",
                lambda: client.dag(WARMUP_DAG_ID)["dag_id"] == WARMUP_DAG_ID,
                harness.START_TIMEOUT,
                deploy,
            )
            for dag_id in (DAG_ID, FLOOR_DAG_ID, WARMUP_DAG_ID):
                client.set_paused(dag_id, False)
            print(warm_up(client, 600), flush=True)
            bench = Bench(args.packages, base, deploy, graph, cli_env, build_db=databases[1])
            bench.json_path = args.json
            try:
                run_scenarios(bench, args)
            except Exception:  # noqa: BLE001 - report, then stop the deployment and drop the databases
                traceback.print_exc()
                bench.results.append(Result("(the benchmark stopped early)", 0.0, False))
            print_table(args.packages, bench.results)
            ratios = everything_ratios(bench.results)
            if ratios:
                print(ratios, flush=True)
    admin.dispose()
    return 0 if all(r.ok for r in bench.results) else 1


if __name__ == "__main__":
    sys.exit(main())
