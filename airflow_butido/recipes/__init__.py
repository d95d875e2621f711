"""Reading butido package repositories: config.toml, pkg.toml layers, packages.

Pure Python on purpose (stdlib only): the DAG processor and the CLI import this
constantly, so it must never pull in Airflow, Docker or SQLAlchemy.
"""

from __future__ import annotations

from airflow_butido.recipes.config import Config, load_config
from airflow_butido.recipes.dependency import Condition, Dependency
from airflow_butido.recipes.errors import RecipeError, RecipeErrors
from airflow_butido.recipes.package import Package, Phase, Source
from airflow_butido.recipes.repository import Repository, load_repository
from airflow_butido.recipes.versions import VersionConstraint

__all__ = [
    "Condition",
    "Config",
    "Dependency",
    "Package",
    "Phase",
    "RecipeError",
    "RecipeErrors",
    "Repository",
    "Source",
    "VersionConstraint",
    "load_config",
    "load_repository",
]
