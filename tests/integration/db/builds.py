"""Writing small but complete build histories for the database tests."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

from airflow_butido.build_key import BuildKeyInputs, build_key
from airflow_butido.db import records


@dataclass(frozen=True)
class Built:
    submit_uuid: str
    job_uuid: str
    key: str
    artifacts: tuple[records.ArtifactRecord, ...]


def inputs_for(script: str = "#!/bin/bash\necho a\n", **changes: object) -> BuildKeyInputs:
    values: dict[str, object] = {
        "script": script,
        "phases": ("build",),
        "image_digest": "sha256:" + "1" * 64,
        "environment": {"FLAVOR": "fast"},
        "source_hashes": {"src": "sha256:" + "2" * 64},
        "patch_hashes": {},
        "dependency_artifacts": (),
    }
    values.update(changes)
    return BuildKeyInputs(**values)  # type: ignore[arg-type]


def record_submit(engine, *, package=("a", "1"), submit_uuid=None, dag_id="d", run_id="r1"):
    submit_uuid = submit_uuid or str(uuid.uuid4())
    records.record_submit(
        engine,
        uuid=submit_uuid,
        package_name=package[0],
        package_version=package[1],
        image="debian:bookworm",
        repo_commit="c" * 40,
        repo_dirty=True,
        env={"FLAVOR": "fast"},
        dag_id=dag_id,
        run_id=run_id,
    )
    return submit_uuid


def record_build(
    engine,
    *,
    staging: Path | None = None,
    package=("a", "1"),
    inputs: BuildKeyInputs | None = None,
    contents: dict[str, bytes] | None = None,
    submit_uuid: str | None = None,
    state: str = "success",
    run_id: str = "r1",
) -> Built:
    """A submit (unless given) and one finished job with its artifact files."""
    submit_uuid = submit_uuid or record_submit(engine, package=package, run_id=run_id)
    inputs = inputs or inputs_for()
    key = build_key(inputs)
    job_uuid = str(uuid.uuid4())
    records.record_job_start(
        engine,
        uuid=job_uuid,
        submit_uuid=submit_uuid,
        package_name=package[0],
        package_version=package[1],
        image="debian:bookworm",
        endpoint="local",
        container_id="f" * 64,
        script=inputs.script,
        env=dict(inputs.environment),
        build_key=key,
        build_key_inputs=inputs,
        image_digest=inputs.image_digest,
        dag_id="d",
        run_id=run_id,
        try_number=1,
    )
    contents = contents if contents is not None else {f"{package[0]}-{package[1]}.pkg": b"pkg"}
    arts = []
    for path, data in contents.items():
        if staging is not None:
            file = staging / submit_uuid / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(data)
        arts.append(records.ArtifactRecord(path, hashlib.sha256(data).hexdigest(), len(data)))
    records.record_job_finish(
        engine,
        uuid=job_uuid,
        state=state,
        exit_status=0 if state == "success" else 1,
        log="building\n#BUTIDO:STATE:OK\n",
    )
    if state == "success":
        records.record_artifacts(engine, job_uuid, arts)
    return Built(submit_uuid, job_uuid, key, tuple(arts))
