"""Airflow DAG file: one build DAG per image of the package repository in ``$BUTIDO_REPO``.

Drop this file into the deployment's dags folder. Settings (environment of the DAG processor,
scheduler and workers alike):

- ``BUTIDO_REPO``: the package repository (required);
- ``BUTIDO_CONFIG`` / ``BUTIDO_SETTINGS``: overlay files for config.toml / airflow-butido.toml;
  ``BUTIDO_*`` overrides of config keys (e.g. ``BUTIDO_STAGING``);
- ``BUTIDO_PARSE_CACHE``: the parse cache directory (``off`` disables it).

A broken repository makes this file fail to import: Airflow lists the recipe errors (file,
key, line) among its import errors instead of the DAGs silently vanishing.
"""

from __future__ import annotations

import os

from airflow_butido.dag_factory import create_dags

if "BUTIDO_REPO" not in os.environ:
    raise RuntimeError("set BUTIDO_REPO to the package repository this DAG file builds")

globals().update(create_dags(os.environ["BUTIDO_REPO"]))
