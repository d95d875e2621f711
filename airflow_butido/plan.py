"""The plan of one build run: which packages a run conf asks for, resolved for one image and
environment, and checked up front.

The DAG of an image holds a task for every package of the repository; the plan says which of
them run in this run (the requested packages and their closure), which conditional edges are
active, and which artifacts each task receives. The plan task computes it once, before any
container starts; every package task and the report read it from XCom.

Everything here works without Airflow: ``butido build`` runs the same plan locally.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_butido.errors import ButidoError
from airflow_butido.manifest import Manifest
from airflow_butido.run_inputs import (
    disallowed_env_names,
    env_value_problem,
    is_secret,
    masked_env,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airflow_butido.recipes.config import Config
    from airflow_butido.recipes.package import Package
    from airflow_butido.recipes.repository import Repository

Key = tuple[str, str]

PLAN_TASK_ID = "plan"
REPORT_TASK_ID = "report"
_TASK_ID_BAD = re.compile(r"[^\w.-]")
_TASK_ID_MAX = 250


class PlanError(ButidoError):
    """The run cannot start: bad run conf, unknown package, or a failed up-front check."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


# --- run conf ---------------------------------------------------------------------------


RUN_CONF_KEYS = ("packages", "env", "force_rebuild", "lint", "verify", "shebang", "staging_dir")


@dataclass(frozen=True)
class RunRequest:
    """The run conf: ``{"packages": [...], "env": {...}, "force_rebuild": false}``, and
    butido's build flags: ``lint`` and ``verify`` (default true; ``--no-lint``,
    ``--no-verify``), ``shebang`` (``--shebang``) and ``staging_dir`` (``--staging-dir``)."""

    packages: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    force_rebuild: bool = False
    lint: bool = True
    verify: bool = True
    shebang: str | None = None
    staging_dir: str | None = None

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def to_conf(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "packages": list(self.packages),
            "env": dict(self.env),
            "force_rebuild": self.force_rebuild,
        }
        if not self.lint:
            conf["lint"] = False
        if not self.verify:
            conf["verify"] = False
        if self.shebang is not None:
            conf["shebang"] = self.shebang
        if self.staging_dir is not None:
            conf["staging_dir"] = self.staging_dir
        return conf


def parse_run_conf(conf: Mapping[str, Any] | None) -> RunRequest:
    """Validate a run conf (from the trigger form, REST or ``butido build``)."""
    conf = dict(conf or {})
    problems: list[str] = []
    unknown = sorted(set(conf) - set(RUN_CONF_KEYS))
    if unknown:
        problems.append(f"run conf: unknown key(s) {', '.join(unknown)}")

    packages = conf.get("packages") or []
    if isinstance(packages, str):
        packages = [packages]
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        problems.append('run conf: "packages" must be a list of "NAME" or "NAME VERSION" strings')
        packages = []

    env = conf.get("env") or {}
    env_pairs: list[tuple[str, str]] = []
    if not isinstance(env, Mapping):
        problems.append('run conf: "env" must be an object of NAME: value')
    else:
        for name, value in env.items():
            problem = env_value_problem(name, value)
            if problem is not None:
                problems.append(f"run conf: env: {problem}")
            else:
                env_pairs.append((name, str(value)))

    flags: dict[str, bool] = {}
    for name, default in (("force_rebuild", False), ("lint", True), ("verify", True)):
        value = conf.get(name, default)
        if not isinstance(value, bool):
            problems.append(f'run conf: "{name}" must be true or false')
            value = default
        flags[name] = value
    texts: dict[str, str | None] = {}
    for name in ("shebang", "staging_dir"):
        value = conf.get(name) or None
        if value is not None and (not isinstance(value, str) or "\n" in value):
            problems.append(f'run conf: "{name}" must be one line of text')
            value = None
        texts[name] = value
    if problems:
        raise PlanError(problems)
    return RunRequest(
        tuple(p.strip() for p in packages),
        tuple(sorted(env_pairs)),
        flags["force_rebuild"],
        lint=flags["lint"],
        verify=flags["verify"],
        shebang=texts["shebang"],
        staging_dir=texts["staging_dir"],
    )


# --- task ids -----------------------------------------------------------------------------


def task_ids_for(keys: Iterable[Key]) -> dict[Key, str]:
    """``<name>-<version>`` per package, with characters Airflow rejects replaced by ``_``.

    Two keys that would share an id (``a-b 1`` and ``a b-1``) both get a short hash of their
    label appended, so ids stay readable, unique and independent of iteration order.
    """
    groups: dict[str, list[Key]] = {}
    for key in keys:
        base = _TASK_ID_BAD.sub("_", f"{key[0]}-{key[1]}")[: _TASK_ID_MAX - 9]
        groups.setdefault(base, []).append(key)
    ids: dict[Key, str] = {}
    for base, members in groups.items():
        if len(members) == 1 and len(base) < _TASK_ID_MAX - 9:
            ids[members[0]] = base
            continue
        for key in members:
            digest = hashlib.sha1(f"{key[0]} {key[1]}".encode()).hexdigest()[:8]
            ids[key] = f"{base}-{digest}"
    return ids


# --- selection ------------------------------------------------------------------------------


def select_packages(repo: Repository, specs: Sequence[str]) -> list[Package]:
    """Packages named by ``"NAME"`` or ``"NAME VERSION"`` (exact version, as butido build)."""
    problems: list[str] = []
    selected: dict[Key, Package] = {}
    for spec in specs:
        parts = spec.split()
        if len(parts) not in (1, 2):
            problems.append(f"package {spec!r}: expected NAME or NAME VERSION")
            continue
        name = parts[0]
        versions = list(repo.versions_of(name))
        if not versions:
            problems.append(f"package {name!r} not found in the repository")
            continue
        if len(parts) == 2:
            version = parts[1].removeprefix("=")
            if version not in versions:
                problems.append(
                    f"package {name} {version} not found; versions of {name}: {', '.join(versions)}"
                )
                continue
        elif len(versions) > 1:
            problems.append(
                f"package {name} has several versions ({', '.join(versions)}): "
                f'name one, e.g. "{name} {versions[-1]}"'
            )
            continue
        else:
            version = versions[0]
        package = repo.packages[(name, version)]
        selected[package.key] = package
    if problems:
        raise PlanError(problems)
    return list(selected.values())


# --- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one run builds. Task ids are the DAG's; JSON round-trips through XCom.

    Only the active direct edges are stored: every package task reads the plan, and the
    transitive dependency lists of a large run would make it tens of megabytes (5,000
    packages: 1.5 million entries); :meth:`dependencies_of` derives them.
    """

    submit_uuid: str
    image: str
    env: tuple[tuple[str, str], ...]
    force_rebuild: bool
    requested: tuple[str, ...]
    packages: tuple[str, ...]  # every task id in the closure, dependencies first
    labels: Mapping[str, str] = field(default_factory=dict)  # task id -> "NAME VERSION"
    edges: tuple[tuple[str, str], ...] = ()  # active (dependent, dependency)
    # packages reused up front: their tasks never run, dependents read these manifests
    reused: Mapping[str, Manifest] = field(default_factory=dict)
    # packages that cannot build in this run, and why: their tasks fail at once
    failures: Mapping[str, str] = field(default_factory=dict)
    # variables whose values ``env`` masks: package tasks take them from the run conf
    secret_names: tuple[str, ...] = ()
    shebang: str | None = None  # overrides the configured shebang for every script
    verify: bool = True  # the jobs check their sources' hashes

    def includes(self, task_id: str) -> bool:
        return task_id in self.labels

    def with_failures(self, failures: Mapping[str, str]) -> Plan:
        merged = dict(self.failures)
        for task_id, message in failures.items():
            merged[task_id] = f"{merged[task_id]}; {message}" if task_id in merged else message
        return replace(self, failures=merged)

    def with_reused(self, reused: Mapping[str, Manifest]) -> Plan:
        return replace(self, reused={**self.reused, **reused})

    def failed_because(self, task_id: str) -> list[str]:
        """The planned failures among ``task_id`` and its active transitive dependencies."""
        return [t for t in (*self.dependencies_of(task_id), task_id) if t in self.failures]

    @cached_property
    def _direct(self) -> dict[str, list[str]]:
        direct: dict[str, list[str]] = {}
        for dependent, dependency in self.edges:
            direct.setdefault(dependent, []).append(dependency)
        return direct

    @cached_property
    def _position(self) -> dict[str, int]:
        return {task_id: i for i, task_id in enumerate(self.packages)}

    def direct_dependencies_of(self, task_id: str) -> tuple[str, ...]:
        """The active direct dependencies of a task, dependencies first."""
        return tuple(sorted(self._direct.get(task_id, ()), key=self._position.__getitem__))

    def dependencies_of(self, task_id: str) -> tuple[str, ...]:
        """The active transitive dependencies of a task, dependencies first: the tasks whose
        artifacts it receives."""
        seen: set[str] = set()
        stack = list(self._direct.get(task_id, ()))
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self._direct.get(current, ()))
        return tuple(sorted(seen, key=self._position.__getitem__))

    def all_dependencies(self) -> dict[str, tuple[str, ...]]:
        """:meth:`dependencies_of` of every package at once: in dependency order, each set
        is its direct dependencies and their sets (the plan deciding reuse needs them all;
        one walk per package costs seconds at a thousand)."""
        found: dict[str, set[str]] = {}
        for task_id in self.packages:
            closure: set[str] = set()
            for dependency in self._direct.get(task_id, ()):
                closure.add(dependency)
                known = found.get(dependency)
                closure.update(self.dependencies_of(dependency) if known is None else known)
            found[task_id] = closure
        position = self._position.__getitem__
        return {t: tuple(sorted(closure, key=position)) for t, closure in found.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "submit_uuid": self.submit_uuid,
            "image": self.image,
            "env": dict(self.env),
            "force_rebuild": self.force_rebuild,
            "requested": list(self.requested),
            "packages": list(self.packages),
            "labels": dict(self.labels),
            "edges": [list(e) for e in self.edges],
            "reused": {task_id: m.to_json() for task_id, m in self.reused.items()},
            "failures": dict(self.failures),
            "secret_names": list(self.secret_names),
            "shebang": self.shebang,
            "verify": self.verify,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            submit_uuid=data["submit_uuid"],
            image=data["image"],
            env=tuple(sorted(dict(data.get("env") or {}).items())),
            force_rebuild=bool(data.get("force_rebuild", False)),
            requested=tuple(data.get("requested") or ()),
            packages=tuple(data.get("packages") or ()),
            labels=dict(data.get("labels") or {}),
            edges=tuple((a, b) for a, b in data.get("edges") or ()),
            reused={t: Manifest.from_json(m) for t, m in (data.get("reused") or {}).items()},
            failures={str(t): str(m) for t, m in (data.get("failures") or {}).items()},
            secret_names=tuple(data.get("secret_names") or ()),
            shebang=data.get("shebang") or None,
            verify=bool(data.get("verify", True)),
        )


def resolve_plan(
    repo: Repository,
    image: str,
    request: RunRequest,
    *,
    default_packages: Sequence[str] = (),
    task_ids: Mapping[Key, str] | None = None,
    submit_uuid: str | None = None,
) -> Plan:
    """Resolve the request for ``image`` and its env.

    Without packages in the request, ``default_packages`` are built, or else every package
    the image may build (the nightly case). Problems of the run itself (unknown packages,
    variables the configuration does not allow) raise one PlanError listing them all;
    problems of single packages (an image they may not be built in, an environment name
    not allowed) become the plan's ``failures``: those packages fail, the rest builds.
    """
    from airflow_butido.graph import resolve

    image = repo.config.resolve_image(image)
    env = request.env_dict
    specs = request.packages or tuple(default_packages)
    problems = _run_env_problems(repo.config, env)
    try:
        # without packages: every package this image may build (the nightly case)
        roots = (
            select_packages(repo, specs) if specs else [p for p in repo if p.image_allowed(image)]
        )
    except PlanError as exc:
        raise PlanError([*exc.problems, *problems]) from None
    if request.staging_dir is not None and submit_uuid is None:
        try:
            submit_uuid = staging_dir_submit(repo.config, request.staging_dir)
        except PlanError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PlanError(problems)
    if not roots:
        raise PlanError([f"no package to build for image {image}"])
    graph = resolve(repo, roots, image=image, env=env)
    ids = dict(task_ids) if task_ids is not None else task_ids_for(repo.packages)

    failures: dict[str, list[str]] = {}
    for package in graph.packages.values():
        found = _image_problems(package, image) + _package_env_problems(repo.config, package)
        if found:
            failures[ids[package.key]] = found

    order = graph.build_order()
    edges = tuple(sorted({(ids[e.dependent], ids[e.dependency]) for e in graph.edges}))
    return Plan(
        submit_uuid=submit_uuid or str(uuid.uuid4()),
        image=image,
        env=masked_env(request.env, repo.config.secret_env),
        force_rebuild=request.force_rebuild,
        requested=tuple(ids[p.key] for p in roots),
        packages=tuple(ids[k] for k in order),
        labels={ids[k]: f"{k[0]} {k[1]}" for k in order},
        edges=edges,
        failures={t: "; ".join(found) for t, found in failures.items()},
        secret_names=tuple(k for k, _ in request.env if is_secret(k, repo.config.secret_env)),
        shebang=request.shebang,
        verify=request.verify,
    )


def staging_dir_submit(config: Config, directory: str) -> str:
    """The submit UUID of an existing staging directory ``<staging>/<submit uuid>``
    (``--staging-dir``: the run continues that submit, its artifacts land next to the old)."""
    where = f"staging directory {directory}"
    if not isinstance(config.staging, Path):  # an object store: the URL of the submit
        base, _, name = directory.rstrip("/").rpartition("/")
        try:
            submit = str(uuid.UUID(name))
        except ValueError:
            raise PlanError([f"{where}: its name must be a submit UUID"]) from None
        if base != config.staging.url or name != submit:
            raise PlanError([f"{where}: must be {config.staging}/<submit uuid>"])
        return submit
    path = Path(directory)
    root = config.staging
    if not path.is_absolute():
        raise PlanError([f"{where}: must be an absolute path"])
    if not path.is_dir():
        raise PlanError([f"{where}: no such directory"])
    try:
        submit = str(uuid.UUID(path.name))
    except ValueError:
        raise PlanError([f"{where}: its name must be a submit UUID"]) from None
    if path.resolve().parent != root.resolve() or path.name != submit:
        raise PlanError(
            [f"{where}: must be {root}/<submit uuid> (the staging root of config.toml)"]
        )
    return submit


def _image_problems(package: Package, image: str) -> list[str]:
    problems = []
    if package.allowed_images is not None and image not in package.allowed_images:
        problems.append(
            f"{package.path}: allowed_images: {package.label} may not be built in {image} "
            f"(allowed: {', '.join(package.allowed_images) or 'none'})"
        )
    if package.denied_images is not None and image in package.denied_images:
        problems.append(f"{package.path}: denied_images: {package.label} denies {image}")
    return problems


def _run_env_problems(config: Config, env: Mapping[str, str]) -> list[str]:
    """Run-level: the run's variables and the configured git variables must be allowed."""
    containers = config.containers
    if not containers.check_env_names:
        return []
    allowed = set(containers.allowed_env)
    problems = [
        f"config.toml: containers.allowed_env: environment variable {name} is not allowed"
        for name in disallowed_env_names(env, containers)
    ]
    for var in (containers.git_author, containers.git_commit_hash):
        if var and var not in allowed:
            problems.append(
                f"config.toml: containers.allowed_env: git variable {var} is not allowed"
            )
    return problems


def _package_env_problems(config: Config, package: Package) -> list[str]:
    names = (name for name, _ in package.environment or ())
    return [
        f"{package.path}: environment.{name}: not in containers.allowed_env ({package.label})"
        for name in disallowed_env_names(names, config.containers)
    ]


def source_failures(repo: Repository, plan: Plan) -> dict[str, str]:
    """Packages of the plan whose sources are missing from the cache or fail their hash."""
    from airflow_butido.object_store import store_root
    from airflow_butido.sources import SourceError, source_path, verify_source

    cache = store_root(repo.config, "source_cache")
    failures: dict[str, list[str]] = {}
    for task_id, label in plan.labels.items():
        package = repo.packages[label_key(label)]
        for source in package.sources:
            try:
                verify_source(source_path(cache, package, source), source)
            except SourceError as exc:
                failures.setdefault(task_id, []).append(
                    f"{package.label}: source {source.name}: {exc}"
                )
    return {t: "; ".join(found) for t, found in failures.items()}


def planned_packages(repo: Repository, plan: Plan) -> list[Package]:
    return [repo.packages[label_key(label)] for label in plan.labels.values()]


def label_key(label: str) -> Key:
    """(name, version) of a "NAME VERSION" label."""
    name, version = label.split(" ", 1)
    return name, version


def prepare_plan(
    repo: Repository,
    image: str,
    request: RunRequest,
    *,
    default_packages: Sequence[str] = (),
    task_ids: Mapping[Key, str] | None = None,
) -> Plan:
    """Resolve and check everything that needs no Docker and no database up front.

    Run-level problems raise one PlanError listing all; package-level ones (a missing or
    mismatching source, a denied image, an environment name not allowed) are the plan's
    ``failures``. Whether an endpoint can run the image is the plan task's next check.
    """
    plan = resolve_plan(repo, image, request, default_packages=default_packages, task_ids=task_ids)
    if request.lint and repo.config.script_linter is not None:
        lint_plan(repo, plan)
    return plan.with_failures(source_failures(repo, plan)) if request.verify else plan


def lint_plan(repo: Repository, plan: Plan) -> None:
    """Run the configured ``script_linter`` on the script of every package of the plan, as it
    will run (with the plan's shebang); any failure stops the run with every linter report."""
    from concurrent.futures import ThreadPoolExecutor

    from airflow_butido.scripts.lint import lint_script
    from airflow_butido.scripts.render import render_script

    config = repo.config
    linter = config.script_linter
    assert linter is not None

    def lint_one(package: Package) -> str | None:
        try:
            script = render_script(package, config, shebang=plan.shebang)
        except ButidoError as exc:
            return f"{package.label} ({package.path}): the script does not render: {exc}"
        result = lint_script(linter, script, cwd=Path(repo.root))
        if result.ok:
            return None
        output = result.output.strip()
        return f"{package.label} ({package.path}): script linter {linter} failed" + (
            f":\n{output}" if output else ""
        )

    packages = sorted(planned_packages(repo, plan), key=lambda p: p.key)
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = [problem for problem in pool.map(lint_one, packages) if problem]
    if found:
        raise PlanError([f"lint failed for {len(found)} package(s) (--no-lint skips it):", *found])


def repo_state(root: Path) -> tuple[str, bool]:
    """HEAD commit and dirty flag of the repository's git work tree ("" when not in git).
    Untracked files that git does not ignore count: a new recipe or patch is built too."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "", False
    return commit, bool(git("status", "--porcelain", "--untracked-files=normal"))


def record_submit(
    engine: Engine, repo: Repository, plan: Plan, *, dag_id: str | None, run_id: str | None
) -> None:
    """The submit row: requested (first) package, image, repository commit, env, run."""
    from airflow_butido.db.records import record_submit as write_submit

    commit, dirty = repo_state(Path(repo.root))
    name, version = label_key(plan.labels[plan.requested[0]])
    write_submit(
        engine,
        uuid=plan.submit_uuid,
        package_name=name,
        package_version=version,
        image=plan.image,
        repo_commit=commit,
        repo_dirty=dirty,
        env=dict(plan.env),
        dag_id=dag_id,
        run_id=run_id,
    )
