"""A running job in a build database, for the hostile record tests."""

from __future__ import annotations

import uuid

from airflow_butido.db import records


def running_job(engine) -> str:
    """A submit and one job recorded as started (``running``); returns the job's UUID."""
    submit, job = str(uuid.uuid4()), str(uuid.uuid4())
    records.record_submit(
        engine, uuid=submit, package_name="p", package_version="1", image="i", repo_commit="c" * 40
    )
    records.record_job_start(
        engine,
        uuid=job,
        submit_uuid=submit,
        package_name="p",
        package_version="1",
        image="i",
        endpoint="local",
        container_id="f" * 64,
        script="#!/bin/bash\n",
    )
    return job
