"""Airflow DAGs from a package repository: one DAG per build image.

Each DAG holds a ``plan`` task, one package task per (name, version) of the repository and a
``report`` task. Edges follow the dependency graph resolved for the DAG's image with the
environment left open: ``in_image`` conditions are decided here, ``has_env`` / ``env_eq``
edges stay in the DAG and the plan decides per run whether they are active.

DAG files are imported constantly (DAG processor, every task process), so this module keeps
the work small: the repository comes from :mod:`airflow_butido.parse_cache`, relations are
written straight into the tasks' relative sets (``a >> b`` hashes the whole DAG per edge),
and a task process, which names its DAG and task in the parsing context, gets a DAG holding
only the task it runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_butido import parse_cache
from airflow_butido.plan import PLAN_TASK_ID, REPORT_TASK_ID, task_ids_for

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from airflow_butido.graph import PackageGraph
    from airflow_butido.recipes.package import Package
    from airflow_butido.recipes.repository import Repository

_UNSET: Any = object()

RUN_CONF_DOC = """\
Builds packages of `{repo}` in `{image}`.

Run conf (trigger form or REST `conf`):

```json
{{"packages": ["NAME", "NAME VERSION"], "env": {{"K": "V"}}, "force_rebuild": false}}
```

{empty}. The `plan` task decides up front: package tasks outside the requested packages and
their dependencies, and packages whose earlier build can be reused, are skipped without
starting; a package that cannot build (a missing source, a denied image, an environment name
not allowed) fails at once and only its dependents are not built. The `report` task waits for
every package task, lists what was built, reused, failed and not built, and fails the run when
a package failed. Each package task links to its build record (script, full log, artifacts).
"""

# Longest DAG tag Airflow stores.
_TAG_MAX = 100


def create_dags(
    repo_path: str | os.PathLike[str],
    *,
    dag_id_prefix: str | None = None,
    schedule: Any = _UNSET,
    default_packages: Sequence[str] | None = None,
    tags: Iterable[str] | None = None,
    images: Iterable[str] | None = None,
    **dag_kwargs: Any,
) -> dict[str, DAG]:
    """One DAG per build image of ``docker.images`` (or of ``images``, full or short names).

    Arguments left out come from the ``[airflow]`` table of ``airflow-butido.toml``
    (``dag_id_prefix`` default ``butido_``, ``schedule`` default none, ``tags``,
    ``default_packages``, ``max_active_runs``); ``dag_kwargs`` go to every ``DAG``.
    Raises the repository's ``RecipeErrors`` / ``ResolveError`` when it is broken.
    """
    from airflow.sdk import get_parsing_context

    root = Path(repo_path).resolve()
    loaded = parse_cache.load(root)
    repo = loaded.repo
    settings = repo.config.airflow
    prefix = settings.dag_id_prefix if dag_id_prefix is None else dag_id_prefix
    if schedule is _UNSET:
        schedule = settings.schedule
    if default_packages is None:
        default_packages = settings.default_packages
    all_tags = ["butido", *settings.tags, *(tags or ())]
    if settings.max_active_runs is not None:
        dag_kwargs.setdefault("max_active_runs", settings.max_active_runs)

    all_images = repo.config.docker.images
    wanted = (
        {repo.config.resolve_image(i) for i in images}
        if images is not None
        else {i.name for i in all_images}
    )
    context = get_parsing_context()
    task_ids = task_ids_for(repo.packages)
    dags: dict[str, DAG] = {}
    for image in all_images:
        if image.name not in wanted:
            continue
        dag_id = f"{prefix}{image.short_name}"
        if context.dag_id and context.dag_id != dag_id:
            continue
        dags[dag_id] = _build_dag(
            dag_id,
            root,
            repo,
            image.name,
            image.short_name,
            loaded.graphs.get(image.name),
            task_ids,
            only_task=context.task_id if context.dag_id == dag_id else None,
            schedule=schedule,
            default_packages=tuple(default_packages),
            tags=list(dict.fromkeys(all_tags)),
            dag_kwargs=dag_kwargs,
        )
    return dags


def broken_repository(repo_path: str | os.PathLike[str], error: Exception) -> Exception:
    """The exception a DAG file raises when its repository does not load.

    Airflow records an import error as the traceback's last frames followed by the message;
    here the frames are the DAG factory's, which tell the user nothing. So the traceback is
    turned off for this import (``[core] dagbag_import_error_tracebacks``, in this process
    only: the DAG processor parses each file in a process of its own) and the import error
    is the recipe errors themselves: file, key and line of each problem.
    """
    try:
        from airflow.configuration import conf

        conf.set("core", "dagbag_import_error_tracebacks", "False")
    except ImportError:  # pragma: no cover - Airflow is installed wherever DAGs are built
        pass
    return BrokenRepository(f"butido repository {repo_path} does not load:\n{error}")


class BrokenRepository(Exception):
    """A DAG file's repository has recipe or configuration errors (listed in the message)."""


def _build_dag(
    dag_id: str,
    root: Path,
    repo: Repository,
    image: str,
    image_short_name: str,
    graph: PackageGraph | None,
    task_ids: Mapping[tuple[str, str], str],
    *,
    only_task: str | None,
    schedule: Any,
    default_packages: tuple[str, ...],
    tags: list[str],
    dag_kwargs: Mapping[str, Any],
) -> DAG:
    from airflow.sdk import DAG
    from airflow.sdk.definitions.param import ParamsDict

    from airflow_butido.assets import package_asset, release_asset
    from airflow_butido.operators.plan import PlannedBuildOperator, PlanOperator
    from airflow_butido.operators.report import ReportOperator

    kwargs = dict(dag_kwargs)
    kwargs.setdefault("catchup", False)
    empty = empty_packages_meaning(default_packages)
    kwargs.setdefault("doc_md", RUN_CONF_DOC.format(repo=root, image=image, empty=empty))
    kwargs.setdefault("description", f"butido packages of {root.name}, built in {image}")
    tags = [*tags, image[:_TAG_MAX]]
    # Params are set once the tasks exist: every operator deep-copies the DAG's params when
    # it is created (O(packages) each, with the package list offered in the form), and
    # Airflow merges the DAG's params into each task's at run time anyway.
    dag = DAG(dag_id, schedule=schedule, tags=tags, **kwargs)
    common: dict[str, Any] = {"repo_path": str(root), "image": image, "dag": dag}
    tasks: dict[str, Any] = {}
    if only_task in (None, PLAN_TASK_ID):
        tasks[PLAN_TASK_ID] = PlanOperator(
            task_id=PLAN_TASK_ID,
            default_packages=default_packages,
            # reuse looks up earlier artifacts in the release stores, too
            inlets=[release_asset(store) for store in repo.config.release_stores],
            **common,
        )
    if only_task in (None, REPORT_TASK_ID):
        tasks[REPORT_TASK_ID] = ReportOperator(
            task_id=REPORT_TASK_ID, trigger_rule="all_done", **common
        )
    # Infrastructure failures are retried (possibly on another endpoint); build failures
    # raise AirflowFailException, which Airflow never retries.
    settings = repo.config.airflow
    retry_delay = timedelta(seconds=settings.retry_delay)
    # Package tasks wait for an endpoint slot in the pool, not in a worker process; the plan
    # and the report stay in the default pool so they never queue behind builds.
    pool: dict[str, Any] = {"pool": settings.pool} if settings.pool else {}
    for key, task_id in task_ids.items():
        if only_task is not None and task_id != only_task:
            continue
        # [airflow.queues]: the Celery queue of the package's workers (else the default one)
        queue: dict[str, Any] = {"queue": q} if (q := settings.queue_of(key[0])) else {}
        tasks[task_id] = PlannedBuildOperator(
            task_id=task_id,
            task_display_name=f"{key[0]} {key[1]}",
            doc_md=package_doc(repo.packages[key]) if only_task is None else None,
            outlets=[package_asset(image_short_name, *key)],
            package_name=key[0],
            package_version=key[1],
            trigger_rule="none_failed",
            retries=settings.retries,
            retry_delay=retry_delay,
            **pool,
            **queue,
            **common,
        )
    dag.params = ParamsDict(_params(repo, empty))
    if only_task is not None or graph is None:
        return dag  # a task process runs one task; relations are the scheduler's business

    # The plan precedes every package task (it skips those outside the run or reused up
    # front), and the report follows every one, so it never reports a package that is
    # still building in another branch.
    for edge in graph.edges:
        _relate(tasks[task_ids[edge.dependency]], tasks[task_ids[edge.dependent]])
    for task_id in task_ids.values():
        _relate(tasks[PLAN_TASK_ID], tasks[task_id])
        _relate(tasks[task_id], tasks[REPORT_TASK_ID])
    if not task_ids:
        _relate(tasks[PLAN_TASK_ID], tasks[REPORT_TASK_ID])
    return dag


def _relate(upstream: Any, downstream: Any) -> None:
    """``upstream >> downstream`` without the DAG lookup and hashing ``>>`` does per call
    (both tasks are already in the same DAG)."""
    upstream.downstream_task_ids.add(downstream.task_id)
    downstream.upstream_task_ids.add(upstream.task_id)


def empty_packages_meaning(default_packages: Sequence[str]) -> str:
    """What a run without packages builds: one sentence for the DAG docs and the form."""
    if default_packages:
        return "An empty Packages builds " + ", ".join(f"`{p}`" for p in default_packages)
    return "An empty Packages builds every package the image may build"


def package_doc(package: Package) -> str:
    """A package task's docs (Markdown) from its recipe: what it builds and from what."""
    lines = [f"### {package.name} {package.version}", ""]
    description = dict(package.meta or ()).get("description")
    if description:
        lines += [description, ""]
    lines.append(f"Recipe: `{package.path}`")
    for source in package.sources:
        lines.append(f"- source `{source.name}`: <{source.url}> ({source.hash_type})")
    for patch in package.patches:
        lines.append(f"- patch `{patch}`")
    for dep in package.dependencies:
        condition = " (conditional)" if dep.condition is not None else ""
        lines.append(f"- {dep.kind} dependency `{dep.name} {dep.version}`{condition}")
    for name, value in package.environment or ():
        lines.append(f"- environment `{name}={value}`")
    return "\n".join(lines)


def _params(repo: Repository, empty_packages: str) -> dict[str, Any]:
    from airflow.sdk import Param

    labels = [f"{name} {version}" for name, version in repo.packages]
    names = sorted({name for name, _ in repo.packages})
    containers = repo.config.containers
    env_schema: dict[str, Any] = {
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    }
    env_help = "Variables for every build container (and env conditions)."
    if containers.check_env_names:
        allowed = sorted(containers.allowed_env)
        env_schema["propertyNames"] = {"enum": allowed}
        env_help += " Allowed names: " + (", ".join(allowed) or "none") + "."
    # "null" in a type keeps the form from marking a field required (it may stay empty).
    return {
        "packages": Param(
            [],
            type=["array", "null"],
            items={"type": "string"},
            examples=[*names, *labels],
            title="Packages",
            description=f'"NAME" or "NAME VERSION" per entry. {empty_packages.replace("`", "")}.',
        ),
        "env": Param(
            {},
            type=["object", "null"],
            title="Environment",
            description=env_help,
            **env_schema,
        ),
        "force_rebuild": Param(
            False,
            type="boolean",
            title="Force rebuild",
            description="Build even when a reusable artifact exists.",
        ),
        "lint": Param(True, type="boolean", title="Lint", description="Run script_linter."),
        "verify": Param(True, type="boolean", title="Verify", description="Check source hashes."),
        "shebang": Param(
            None, type=["null", "string"], title="Shebang", description="Script's first line."
        ),
        "staging_dir": Param(
            None,
            type=["null", "string"],
            title="Staging directory",
            description="<staging>/<submit uuid> of a submit to continue.",
        ),
    }
