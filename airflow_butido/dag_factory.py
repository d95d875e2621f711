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
    from airflow_butido.recipes.repository import Repository

_UNSET: Any = object()

RUN_CONF_DOC = """\
Builds packages of `{repo}` in `{image}`.

Run conf (trigger form or REST `conf`):

```json
{{"packages": ["NAME", "NAME VERSION"], "env": {{"K": "V"}}, "force_rebuild": false}}
```

An empty `packages` list builds {default}. The `plan` task decides up front: package tasks
outside the requested packages and their dependencies, and packages whose earlier build can be
reused, are skipped without starting; a package that cannot build (a missing source, a denied
image, an environment name not allowed) fails at once and only its dependents are not built.
The `report` task waits for every package task, lists what was built, reused, failed and not
built, and fails the run when a package failed.
"""


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
            loaded.graphs.get(image.name),
            task_ids,
            only_task=context.task_id if context.dag_id == dag_id else None,
            schedule=schedule,
            default_packages=tuple(default_packages),
            tags=list(dict.fromkeys(all_tags)),
            dag_kwargs=dag_kwargs,
        )
    return dags


def _build_dag(
    dag_id: str,
    root: Path,
    repo: Repository,
    image: str,
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

    from airflow_butido.operators.plan import PlannedBuildOperator, PlanOperator
    from airflow_butido.operators.report import ReportOperator

    kwargs = dict(dag_kwargs)
    kwargs.setdefault("catchup", False)
    kwargs.setdefault(
        "doc_md",
        RUN_CONF_DOC.format(
            repo=root,
            image=image,
            default=(
                ", ".join(f"`{p}`" for p in default_packages)
                if default_packages
                else "every package the image may build"
            ),
        ),
    )
    # Params are set once the tasks exist: every operator deep-copies the DAG's params when
    # it is created (O(packages) each, with the package list offered in the form), and
    # Airflow merges the DAG's params into each task's at run time anyway.
    dag = DAG(dag_id, schedule=schedule, tags=tags, **kwargs)
    common: dict[str, Any] = {"repo_path": str(root), "image": image, "dag": dag}
    tasks: dict[str, Any] = {}
    if only_task in (None, PLAN_TASK_ID):
        tasks[PLAN_TASK_ID] = PlanOperator(
            task_id=PLAN_TASK_ID, default_packages=default_packages, **common
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
        tasks[task_id] = PlannedBuildOperator(
            task_id=task_id,
            package_name=key[0],
            package_version=key[1],
            trigger_rule="none_failed",
            retries=settings.retries,
            retry_delay=retry_delay,
            **pool,
            **common,
        )
    dag.params = ParamsDict(_params(repo))
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


def _params(repo: Repository) -> dict[str, Any]:
    from airflow.sdk import Param

    labels = [f"{name} {version}" for name, version in repo.packages]
    names = sorted({name for name, _ in repo.packages})
    return {
        "packages": Param(
            [],
            type="array",
            items={"type": "string"},
            examples=[*names, *labels],
            title="Packages",
            description='"NAME" or "NAME VERSION" per entry; empty builds the default set.',
        ),
        "env": Param(
            {},
            type="object",
            title="Environment",
            description="Variables for every build container (and env conditions).",
        ),
        "force_rebuild": Param(
            False,
            type="boolean",
            title="Force rebuild",
            description="Build even when a reusable artifact exists.",
        ),
    }
