"""The pure core must stay importable without Airflow, Docker or SQLAlchemy."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN = ("airflow", "docker", "sqlalchemy")


@pytest.mark.parametrize(
    "modules",
    [
        "airflow_butido.recipes, airflow_butido.graph, airflow_butido.run_inputs",
        "airflow_butido.cli.repo_commands, airflow_butido.cli.source, airflow_butido.cli.lint",
        "airflow_butido.plan, airflow_butido.report, airflow_butido.manifest",
        "airflow_butido.build_key, airflow_butido.jobs",
        # what `butido build` runs, and the CI client
        "airflow_butido.package_build, airflow_butido.local_build, airflow_butido.cli.trigger",
    ],
)
def test_pure_modules_import_no_heavy_dependencies(modules: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {modules}"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = [
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert all(m.strip() in imported for m in modules.split(","))
    heavy = [m for m in imported if m.split(".")[0] in FORBIDDEN]
    assert heavy == []
