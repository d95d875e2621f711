"""The package tasks' modules, imported once by the process that forks the task processes.

A LocalExecutor worker (forked from the scheduler) or a Celery worker forks a process per
task, and each of those imported the DAG file's and the package task's modules anew: the
Docker provider and SDK, the recipes, the build database, the job (0.1-0.3 s of CPU per
package task, most of it creating dataclasses and reading bytecode). Imported before the
fork, they are inherited instead. The plugin does it when it is loaded with
``[butido] preload_task_modules`` set, which needs plugins loaded when Airflow starts
(``[core] lazy_load_plugins = False``): set both on the scheduler, the DAG processor and
Celery workers. A changed airflow-butido then needs those processes restarted, as any
upgraded provider does.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# The settings that turn it on, for the processes that fork task processes.
PRELOAD_ENV = {
    "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
    "AIRFLOW__BUTIDO__PRELOAD_TASK_MODULES": "True",
}

# What the DAG file and a package, plan or report task import beyond Airflow itself.
TASK_MODULES = (
    "airflow_butido.dag_factory",
    "airflow_butido.parse_cache",
    "airflow_butido.operators.plan",
    "airflow_butido.operators.build",
    "airflow_butido.operators.report",
    "airflow_butido.operators.links",
    "airflow_butido.package_build",
    "airflow_butido.run_steps",
    "airflow_butido.jobs",
    "airflow_butido.container",
    "airflow_butido.endpoints",
    "airflow_butido.sources",
    "airflow_butido.stores",
    "airflow_butido.scripts.render",
    "airflow_butido.scripts.logproto",
    "airflow_butido.db.migrate",
    "airflow_butido.db.records",
    "airflow_butido.db.recorder",
    "airflow_butido.db.build_cache",
    "airflow_butido.db.leases",
    "airflow_butido.db.queries",
    "docker",
    "docker.errors",
)


def preload_task_modules() -> list[str]:
    """Import TASK_MODULES; returns those that failed (logged, never raised: a plugin
    that raises while loading is left out of Airflow altogether)."""
    failed = []
    for name in TASK_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:
            log.warning("airflow-butido: could not preload %s: %s", name, exc)
            failed.append(name)
    return failed
