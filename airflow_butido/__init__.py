"""airflow-butido: butido's package builds, orchestrated by Apache Airflow.

Importing the package is cheap on purpose: the DAG processor and the CLI import it
constantly, so heavy parts (Airflow, Docker, SQLAlchemy) load only when used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_dags"]


def __getattr__(name: str) -> Any:
    if name == "create_dags":
        from airflow_butido.dag_factory import create_dags

        return create_dags
    raise AttributeError(f"module 'airflow_butido' has no attribute {name!r}")
