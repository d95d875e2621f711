"""Writing small but complete build histories for the database tests."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

from airflow_butido.build_key import BuildKeyInputs, build_key, key_inputs
from airflow_butido.db import records
from airflow_butido.graph import resolve
from airflow_butido.recipes.config import load_config
from airflow_butido.recipes.repository import load_repository


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


DIGEST = "sha256:" + "d" * 64
IMAGE = "debian:bullseye"


def record_graph(
    engine, root: Path, name: str, version: str, env: dict[str, str] | None = None
) -> tuple[str, dict]:
    """Record a successful build of every package of the graph, keyed as a build
    would key it now (with ``env`` as -E), with artifact files in the staging store."""
    env = env or {}
    config = load_config(root)
    repo = load_repository(root, config=config)
    graph = resolve(repo, [repo.get(name, version)], image=IMAGE, env=env)
    submit = record_submit(engine, package=(name, version))
    produced: dict = {}
    for key in graph.build_order():
        deps = [produced[d] for d in sorted(graph.transitive_dependencies(key))]
        package = graph.packages[key]
        inputs = key_inputs(
            package, config, root, image_digest=DIGEST, env=tuple(sorted(env.items())),
            dependency_sha256=deps,
        )  # fmt: skip
        data = f"{key[0]}-{key[1]} built".encode()
        path = f"{key[0]}-{key[1]}.pkg"
        (config.staging / submit / path).parent.mkdir(parents=True, exist_ok=True)
        (config.staging / submit / path).write_bytes(data)
        job = str(uuid.uuid4())
        records.record_job_start(
            engine, uuid=job, submit_uuid=submit, package_name=key[0], package_version=key[1],
            image=IMAGE, endpoint="testhostname", container_id="c", script=inputs.script,
            build_key=build_key(inputs), build_key_inputs=inputs, image_digest=DIGEST,
        )  # fmt: skip
        records.record_job_finish(engine, uuid=job, state="success", exit_status=0, log="ok")
        sha = hashlib.sha256(data).hexdigest()
        records.record_artifacts(engine, job, [records.ArtifactRecord(path, sha, len(data))])
        produced[key] = sha
    return submit, produced
