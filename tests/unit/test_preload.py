"""The plugin preloads the package tasks' modules in the process that loads it, when
asked: a real Airflow import in a fresh interpreter, with and without the settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from airflow_butido.preload import PRELOAD_ENV, TASK_MODULES

PROBE = """
import json, sys
import airflow
from airflow_butido.preload import TASK_MODULES
print(json.dumps([m for m in TASK_MODULES if m in sys.modules]))
"""


def loaded_by_import_airflow(settings: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in PRELOAD_ENV} | settings
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_with_the_settings_import_airflow_brings_every_task_module():
    assert loaded_by_import_airflow(PRELOAD_ENV) == list(TASK_MODULES)


def test_without_them_nothing_of_the_tasks_is_imported():
    assert loaded_by_import_airflow({}) == []
    # lazy plugins alone do not preload: the plugin is loaded, the modules are not
    lazy_off = {"AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False"}
    assert loaded_by_import_airflow(lazy_off) == []


def test_a_module_that_fails_is_named_and_the_rest_still_load(monkeypatch):
    from airflow_butido import preload

    monkeypatch.setattr(preload, "TASK_MODULES", ("airflow_butido.no_such_module", "json"))
    assert preload.preload_task_modules() == ["airflow_butido.no_such_module"]
