"""``PackageBuildOperator``: one package build as an Airflow task.

It runs butido's container protocol (:mod:`airflow_butido.jobs`) rather than ``docker run``:
the endpoint is chosen at run time from config.toml (a slot lease in the build database keeps
``maxjobs`` across all tasks and runs), inputs are copied in, the log streams line by line
into the task log, ``/outputs`` lands in the staging store, and the return value (XCom) is a
:class:`~airflow_butido.manifest.Manifest`: paths and hashes, never bytes.

The work itself is :class:`~airflow_butido.package_build.PackageBuild`'s, which ``butido
build`` runs without Airflow; this class adds what is Airflow's: its exceptions, log
masking, the package's asset event, and the ``DockerOperator`` attributes its UI and
``on_kill`` read.

Failures: a script failure (``BuildError``, bad recipe or config) raises
``AirflowFailException`` (no retries); an endpoint or Docker failure raises
``AirflowException`` so the task is retried, possibly on another endpoint.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import BaseOperator

from airflow_butido.errors import ButidoError, InfrastructureError
from airflow_butido.manifest import REUSED
from airflow_butido.operators.links import PACKAGE_TASK_LINKS
from airflow_butido.package_build import PackageBuild
from airflow_butido.plan import Plan

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_butido.container import BuildContainer

# DockerOperator's arguments for a plain `docker run`: this operator would ignore them.
_DOCKER_RUN_ARGUMENTS = frozenset(inspect.signature(DockerOperator.__init__).parameters) - {
    *inspect.signature(BaseOperator.__init__).parameters,
    "self",
    "kwargs",
    "image",
}
# The build's own settings (PackageBuild.configure's optional keywords).
_BUILD_SETTINGS = frozenset(
    name
    for name, parameter in inspect.signature(PackageBuild.configure).parameters.items()
    if parameter.default is not inspect.Parameter.empty and name != "from_parse_cache"
)


class PackageBuildOperator(PackageBuild, DockerOperator):
    """Build ``package_name package_version`` from the repository at ``repo_path``.

    A ``DockerOperator`` so that it reads and kills like one, but endpoints, images and
    containers come from config.toml: the arguments DockerOperator takes for a plain
    ``docker run`` (``command``, ``mounts``, ``docker_url``, ``tls_*``, ...) are refused with
    an error rather than silently ignored. No field is an Airflow template: package names
    and versions come from the package repository, and a recipe must never be able to pull
    Airflow variables or connections into a log.

    Besides BaseOperator's, it takes the build's optional settings (see
    :meth:`~airflow_butido.package_build.PackageBuild.configure`): ``submit_uuid``, ``env``,
    ``plan_task_id``, ``endpoint_names``, ``max_slot_wait``, ``database_url``,
    ``force_rebuild``.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8d8b0"
    operator_extra_links = PACKAGE_TASK_LINKS

    def __init__(
        self,
        *,
        repo_path: str | Path,
        package_name: str,
        package_version: str,
        image: str,
        **kwargs: Any,
    ) -> None:
        refused = sorted(set(kwargs) & _DOCKER_RUN_ARGUMENTS)
        if refused:
            raise ValueError(
                f"{type(self).__name__} does not use DockerOperator argument(s) "
                f"{', '.join(refused)}: endpoints, images and containers come from config.toml"
            )
        # submit_uuid, env, plan_task_id, endpoint_names, max_slot_wait, database_url,
        # force_rebuild: PackageBuild.configure's; the rest is BaseOperator's
        settings = {k: kwargs.pop(k) for k in _BUILD_SETTINGS if k in kwargs}
        super().__init__(image=image, mount_tmp_dir=False, **kwargs)
        self.configure(
            repo_path=repo_path,
            package_name=package_name,
            package_version=package_version,
            **settings,
        )

    # -- execute, in small steps ----------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:  # type: ignore[override]
        return self.build(context, self.read_plan(context))

    def build(self, context: Context, plan: Plan | None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        try:
            manifest = self.build_manifest(context, plan)
        except InfrastructureError as exc:
            raise AirflowException(f"infrastructure failure (will retry): {exc}") from None
        except ButidoError as exc:
            # The whole message (with the log tail) once; the exception only says what failed.
            self.log.error("%s", exc)
            raise AirflowFailException(str(exc).splitlines()[0]) from None
        self.announce(context, manifest)
        return manifest

    def mask_secret(self, value: str, name: str) -> None:
        from airflow.sdk.log import mask_secret

        mask_secret(value, name)

    def announce(self, context: Any, manifest: dict[str, Any]) -> None:
        """New artifacts update the task's assets (``outlets``), the manifest as the event's
        ``extra``; a reuse updates nothing, so DAGs scheduled on a package's asset run after
        real rebuilds only (Airflow emits events for the outlets the task holds when it ends).
        """
        if not self.outlets:
            return
        if manifest["outcome"] == REUSED or not manifest["artifacts"]:
            self.outlets = []
            return
        events = context.get("outlet_events")
        if events is None:
            return
        for outlet in self.outlets:
            events[outlet].extra = dict(manifest)

    def container_started(self, container: BuildContainer) -> None:
        """What DockerOperator would know of its container (its UI and ``on_kill``)."""
        self.container = {"Id": container.id}
        self.docker_url = container.endpoint_url or self.docker_url
        super().container_started(container)
