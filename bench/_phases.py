"""The phases of recorded jobs (``jobs.phase_seconds``), summed up for the benchmarks."""

from __future__ import annotations

import json
import statistics
from typing import Any


def phase_table(url: str, run_id: str | None = None) -> list[tuple[str, float, float, float]]:
    """(phase, mean, median, max) seconds over the jobs of the build database at ``url``
    that ran a container (all of them, or those of ``run_id``), in the order of the phases,
    then ``total`` (first to last phase); empty when there are none."""
    import sqlalchemy as sa

    from airflow_butido.jobs import PHASES

    query = (
        "SELECT phase_seconds FROM jobs WHERE phase_seconds IS NOT NULL AND container_hash <> ''"
    )
    params: dict[str, Any] = {}
    if run_id is not None:
        query += " AND run_id = :run"
        params["run"] = run_id
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = [json.loads(text) for (text,) in conn.execute(sa.text(query), params)]
    finally:
        engine.dispose()
    rows = []
    for phase in PHASES:
        values = [job.get(phase, 0.0) for job in found]
        if any(values):
            rows.append((phase, statistics.mean(values), statistics.median(values), max(values)))
    totals = [sum(job.values()) for job in found]
    if totals:
        rows.append(("total", statistics.mean(totals), statistics.median(totals), max(totals)))
    return rows
