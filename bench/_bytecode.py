"""Compile the project's modules to bytecode before timing processes that import them.

An installed wheel ships its bytecode; an editable checkout gets it written on first import,
unless ``PYTHONDONTWRITEBYTECODE`` is set, as it is on some machines. Then every process
would compile about a hundred modules from source (about 0.2 s per task process), which
is not what a deployment pays.
"""

from __future__ import annotations

import compileall
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def compile_project() -> None:
    for part in ("airflow_butido", "dags"):
        compileall.compile_dir(PROJECT / part, quiet=1)
