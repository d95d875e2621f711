"""Reuse decided by the plan, before any package task starts.

The plan computes the build key of every package of the run in dependency order and looks
them up in the build database in batches (one per dependency level). A package whose key
matches an earlier successful build with intact artifacts (present, of the recorded size) is
reused up front: its task never starts, and its manifest, naming the earlier artifacts, is
part of the plan so that dependents that do build receive them as usual. So is every package
whose inputs are then all known. A no-change nightly run decides "nothing to do" in one
evaluation instead of one task process per package.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from pathlib import Path

from sqlalchemy.engine import Engine

from airflow_butido.build_key import BuildKeyInputs, git_environment, key_inputs
from airflow_butido.db import reuse
from airflow_butido.db.adopted import adopt_butido_jobs, has_butido_jobs
from airflow_butido.db.records import ReusedJob, record_reused_jobs
from airflow_butido.errors import ButidoError
from airflow_butido.manifest import REUSED, ArtifactRef, Manifest, ReusedFrom
from airflow_butido.object_store import store_root
from airflow_butido.plan import Key, Plan, label_key
from airflow_butido.recipes.repository import Repository
from airflow_butido.scripts.render import render_script
from airflow_butido.stores import release_dirs, release_store_holding


def reuse_up_front(
    engine: Engine,
    repo: Repository,
    plan: Plan,
    *,
    image_digest: str,
    dag_id: str | None = None,
    run_id: str | None = None,
) -> Plan:
    """The plan with ``reused`` filled in, and those reused jobs recorded in the submit."""
    if plan.force_rebuild:
        return plan
    config = repo.config
    root = Path(repo.root)
    keys = {task_id: label_key(label) for task_id, label in plan.labels.items()}
    tasks = {key: task_id for task_id, key in keys.items()}
    git_env = git_environment(config, root)
    scripts: dict[Key, str] = {}

    transitive = {keys[t]: [keys[d] for d in found] for t, found in plan.all_dependencies().items()}

    def dependencies(key: Key) -> Collection[Key]:
        return transitive[key]

    def inputs_of(key: Key, hashes: list[str]) -> BuildKeyInputs | None:
        if tasks[key] in plan.failures:
            return None
        try:
            package = repo.packages[key]
            script = render_script(package, config, shebang=plan.shebang)
            inputs = key_inputs(
                package, config, root, image_digest=image_digest, env=plan.env,
                dependency_sha256=hashes, script=script, git_env=git_env,
            )  # fmt: skip
        except ButidoError:
            return None  # the package task reports it when it runs
        scripts[key] = inputs.script
        return inputs

    staging = store_root(config, "staging")
    stores = release_dirs(store_root(config, "releases_root"), config.release_stores)
    exists = reuse.store_checker(staging, stores, verify=False)
    order = [keys[t] for t in plan.packages]

    def adopt(wanted: Mapping[Key, BuildKeyInputs]) -> Mapping[Key, reuse.ReuseCandidate]:
        return adopt_butido_jobs(engine, plan.image, wanted, staging, stores)

    adopting = adopt if has_butido_jobs(engine) else None
    decisions = reuse.decide_reuse(engine, order, dependencies, inputs_of, exists, adopt=adopting)

    reused: dict[str, Manifest] = {}
    records: list[ReusedJob] = []
    for key in order:
        decision = decisions[key]
        if decision.candidate is None or decision.inputs is None:
            continue
        task_id, found = tasks[key], decision.candidate
        reason = found.reason or (
            f"build key {found.build_key[:12]} equals that of job {found.job_uuid} "
            f"(submit {found.submit_uuid}); its {len(found.artifacts)} artifact(s) are intact"
        )
        artifacts = tuple(
            ArtifactRef(
                a.path,
                a.sha256,
                a.size or 0,
                found.submit_uuid,
                found.job_uuid,
                release_store_holding(staging, stores, found.submit_uuid, a.path),
            )  # fmt: skip
            for a in found.artifacts
        )
        job_uuid = str(uuid.uuid4())
        reused[task_id] = Manifest(
            package=key[0],
            version=key[1],
            image=plan.image,
            submit_uuid=plan.submit_uuid,
            job_uuid=job_uuid,
            outcome=REUSED,
            artifacts=artifacts,
            # No inputs: with a plan, a dependent takes the artifacts of each transitive
            # dependency from the plan itself, and listing them here would make the plan
            # grow with the square of the packages (1,000: a quarter million entries).
            inputs=(),
            build_key=found.build_key,
            reused_from=ReusedFrom(found.job_uuid, found.submit_uuid, reason),
        )
        records.append(
            ReusedJob(
                job_uuid,
                plan.submit_uuid,
                key[0],
                key[1],
                plan.image,
                found.job_uuid,
                reason,
                scripts[key],
                dict(decision.inputs.environment),
                found.build_key,
                decision.inputs,
                image_digest,
                dag_id,
                run_id,
                1,
            )  # fmt: skip
        )
    if records:
        record_reused_jobs(engine, records)
    return plan.with_reused(reused)
