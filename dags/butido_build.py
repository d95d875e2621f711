"""Airflow DAG file: one build DAG per image of the package repository in ``$BUTIDO_REPO``.

Drop this file into the deployment's dags folder. Settings (environment of the DAG processor,
scheduler and workers alike):

- ``BUTIDO_REPO``: the package repository (required);
- ``BUTIDO_CONFIG`` / ``BUTIDO_SETTINGS``: overlay files for config.toml / airflow-butido.toml;
  ``BUTIDO_*`` overrides of config keys (e.g. ``BUTIDO_STAGING``);
- ``BUTIDO_PARSE_CACHE``: the parse cache directory (``off`` disables it).

A broken repository makes this file fail to import: Airflow's import error for it is the list
of recipe errors (file, key, line), and the DAGs are gone until the repository is fixed.
"""

from __future__ import annotations

import os

from airflow_butido.dag_factory import broken_repository, create_dags
from airflow_butido.errors import ButidoError

if "BUTIDO_REPO" not in os.environ:
    raise RuntimeError("set BUTIDO_REPO to the package repository this DAG file builds")

try:
    globals().update(create_dags(os.environ["BUTIDO_REPO"]))
except ButidoError as error:
    raise broken_repository(os.environ["BUTIDO_REPO"], error) from None
