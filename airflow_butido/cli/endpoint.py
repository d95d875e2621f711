"""``butido endpoint [NAME] ping|stats|containers …|container ID …|images …``.

NAME (optional, before the sub-command) restricts the command to one configured endpoint.
Container commands see butido's containers (those with the ``io.butido.managed`` label)
unless ``--all`` is given; ``prune`` only ever removes butido's exited containers.
Commands that change containers ask for confirmation on a terminal; ``--non-interactive``
answers yes, and without a terminal it is required.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_butido.cli.common import confirm, time_filters
from airflow_butido.cli.output import add_format_flags, print_table
from airflow_butido.errors import ButidoError

if TYPE_CHECKING:
    from airflow_butido.recipes.config import Config, EndpointConfig

COMMANDS = ("ping", "stats", "containers", "container", "images")
STOP_TIMEOUT = 10  # seconds Docker waits after SIGTERM before it kills


def _config(args: argparse.Namespace) -> Config:
    from airflow_butido.recipes.config import load_config

    return load_config(args.repo)


def _endpoints(args: argparse.Namespace, config: Config | None = None) -> list[EndpointConfig]:
    config = config or _config(args)
    if args.endpoint is not None:
        return [config.endpoint(args.endpoint)]
    if not config.endpoints:
        raise ButidoError("no endpoint configured (docker.endpoints in config.toml)")
    return list(config.endpoints)


@dataclass
class _Connected:
    endpoint: EndpointConfig
    api: Any  # docker.APIClient


def _connected(
    args: argparse.Namespace, config: Config | None = None
) -> Iterator[_Connected | None]:
    """Each selected endpoint with a client (closed after its turn); None for one that does
    not answer, after its error went to stderr."""
    from airflow_butido.endpoints import connect
    from airflow_butido.errors import InfrastructureError

    for endpoint in _endpoints(args, config):
        try:
            api = connect(endpoint, timeout=endpoint.timeout)
        except InfrastructureError as exc:
            print(f"{endpoint.name}: {exc}", file=sys.stderr)
            yield None
            continue
        try:
            yield _Connected(endpoint, api)
        finally:
            api.close()


Row = tuple[Any, ...]


def rows_per_endpoint(
    args: argparse.Namespace, config: Config, rows_of: Callable[[_Connected], Iterable[Row]]
) -> tuple[list[Row], int]:
    """The rows ``rows_of`` gives for each selected endpoint, and how many endpoints failed
    (their errors go to stderr; the others' rows are still printed)."""
    import docker
    import requests

    rows: list[Row] = []
    failed = 0
    for conn in _connected(args, config):
        if conn is None:
            failed += 1
            continue
        try:
            rows.extend(rows_of(conn))
        except (docker.errors.DockerException, requests.RequestException) as exc:
            print(f"{conn.endpoint.name}: {exc}", file=sys.stderr)
            failed += 1
    return rows, failed


# -- ping, stats ---------------------------------------------------------------------------


def cmd_ping(args: argparse.Namespace) -> int:
    from airflow_butido.endpoints import ping
    from airflow_butido.errors import InfrastructureError

    failed = 0
    for conn in _connected(args):
        if conn is None:
            failed += 1
            continue
        for i in range(args.count):
            try:
                rtt = ping(conn.endpoint, conn.api)
                print(f"{conn.endpoint.name}: pong in {rtt * 1000:.1f} ms")
            except InfrastructureError as exc:
                failed += 1
                print(f"{conn.endpoint.name}: {exc}", file=sys.stderr)
            if i + 1 < args.count:
                time.sleep(args.sleep)
    return 1 if failed else 0


def cmd_stats(args: argparse.Namespace) -> int:
    def stats(conn: _Connected) -> list[Row]:
        info = conn.api.info()
        return [
            (
                conn.endpoint.name,
                info.get("Name", ""),
                info.get("Containers", ""),
                info.get("ContainersRunning", ""),
                info.get("Images", ""),
                info.get("ServerVersion", ""),
                info.get("KernelVersion", ""),
                _size(info.get("MemTotal")),
                info.get("NCPU", ""),
                info.get("OperatingSystem", ""),
                info.get("SystemTime", ""),
            )
        ]

    rows, failed = rows_per_endpoint(args, _config(args), stats)
    headers = (
        "endpoint",
        "name",
        "containers",
        "running",
        "images",
        "docker",
        "kernel",
        "memory",
        "cores",
        "os",
        "system time",
    )
    print_table(headers, rows, as_csv=args.csv, as_json=args.json)
    return 1 if failed else 0


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return ""
    return f"{value / (1 << 30):.1f} GiB"


# -- containers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerFilter:
    """Which containers a command sees: butido's (or ``everything``), stopped ones too,
    of one image, created before / after a point in time."""

    stopped: bool = False
    everything: bool = False
    image: str | None = None
    older_than: datetime | None = None
    newer_than: datetime | None = None

    def matches(self, container: dict[str, Any]) -> bool:
        created = datetime.fromtimestamp(int(container.get("Created") or 0), UTC)
        if self.older_than is not None and not created < self.older_than:
            return False
        if self.newer_than is not None and not created > self.newer_than:
            return False
        return self.image is None or container.get("Image") == self.image

    def containers(self, api: Any) -> list[dict[str, Any]]:
        from airflow_butido.container import MANAGED_LABEL

        filters = {} if self.everything else {"label": [f"{MANAGED_LABEL}=true"]}
        return [c for c in api.containers(all=self.stopped, filters=filters) if self.matches(c)]


def _filter(args: argparse.Namespace, config: Config, *, stopped: bool) -> ContainerFilter:
    image = getattr(args, "image", None)
    older_than, newer_than = time_filters(args)
    return ContainerFilter(
        stopped=stopped,
        everything=getattr(args, "all", False),
        image=config.resolve_image(image) if image else None,
        older_than=older_than,
        newer_than=newer_than,
    )


def _created(container: dict[str, Any]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(container.get("Created", 0)))


def cmd_containers_list(args: argparse.Namespace) -> int:
    config = _config(args)
    selection = _filter(args, config, stopped=args.list_stopped)

    def listed(conn: _Connected) -> Iterator[Row]:
        for c in selection.containers(conn.api):
            labels = c.get("Labels") or {}
            yield (
                conn.endpoint.name,
                c["Id"][:12],
                ",".join(n.lstrip("/") for n in c.get("Names") or ()),
                labels.get("io.butido.package", ""),
                labels.get("io.butido.version", ""),
                labels.get("io.butido.job", ""),
                labels.get("io.butido.submit", ""),
                c.get("Image", ""),
                c.get("ImageID", "").removeprefix("sha256:")[:12],
                _created(c),
                c.get("Status", ""),
            )

    rows, unreachable = rows_per_endpoint(args, config, listed)
    headers = (
        "endpoint",
        "container",
        "name",
        "package",
        "version",
        "job",
        "submit",
        "image",
        "image id",
        "created",
        "status",
    )
    print_table(headers, rows, as_csv=args.csv, as_json=args.json)
    # The rows of the endpoints that answered are printed; the exit status says the
    # list is incomplete.
    return 1 if unreachable else 0


def _act_on_containers(
    args: argparse.Namespace,
    selection: ContainerFilter,
    *,
    keep: Callable[[dict[str, Any]], bool],
    verb: str,
    act: Callable[[Any, str], None],
) -> int:
    """Find the containers on every endpoint, ask once, then ``act(api, id)`` on each."""
    import docker
    import requests

    config = _config(args)
    clients = []
    plan: list[tuple[_Connected, list[dict[str, Any]]]] = []
    failed = 0
    try:
        for endpoint in _endpoints(args, config):
            conn = _connect(endpoint)
            if conn is None:
                failed += 1
                continue
            clients.append(conn.api)
            plan.append((conn, [c for c in selection.containers(conn.api) if keep(c)]))
        total = sum(len(found) for _, found in plan)
        if not total:
            print(f"no containers to {verb}")
            return 1 if failed else 0
        names = "".join(
            f"\n  {conn.endpoint.name}: {c['Id'][:12]} {_created(c)} {c.get('Image', '')}"
            for conn, found in plan
            for c in found
        )
        print(f"containers to {verb}:{names}", file=sys.stderr)
        if not confirm(
            f"{verb.capitalize()} {total} containers?", non_interactive=args.non_interactive
        ):
            print(f"nothing to {verb}: not confirmed")
            return 1
        done = 0
        for conn, found in plan:
            for c in found:
                try:
                    act(conn.api, c["Id"])
                except docker.errors.NotFound:
                    continue  # gone meanwhile
                except (docker.errors.DockerException, requests.RequestException) as exc:
                    if "already in progress" in str(exc):
                        continue  # its own job is removing it
                    failed += 1
                    print(f"{conn.endpoint.name}: {c['Id'][:12]}: {exc}", file=sys.stderr)
                    continue
                done += 1
                print(f"{conn.endpoint.name}: {verb} {c['Id'][:12]}")
        print(f"{verb}: {done} of {total} containers")
        return 1 if failed else 0
    finally:
        for api in clients:
            api.close()


def _connect(endpoint: EndpointConfig) -> _Connected | None:
    from airflow_butido.endpoints import connect
    from airflow_butido.errors import InfrastructureError

    try:
        return _Connected(endpoint, connect(endpoint, timeout=endpoint.timeout))
    except InfrastructureError as exc:
        print(f"{endpoint.name}: skipped: {exc}", file=sys.stderr)
        return None


def cmd_containers_prune(args: argparse.Namespace) -> int:
    args.all = False  # prune never touches containers butido did not make
    selection = _filter(args, _config(args), stopped=True)
    return _act_on_containers(
        args,
        selection,
        keep=lambda c: c.get("State") in ("exited", "dead"),
        verb="remove",
        act=lambda api, cid: api.remove_container(cid, v=True),
    )


def cmd_containers_stop(args: argparse.Namespace) -> int:
    selection = _filter(args, _config(args), stopped=False)
    return _act_on_containers(
        args,
        selection,
        keep=lambda c: c.get("State") == "running",
        verb="stop",
        act=lambda api, cid: api.stop(cid, timeout=args.timeout),
    )


def cmd_containers_top(args: argparse.Namespace) -> int:
    """``top`` of every running container: one row per process, the columns ``ps`` names."""
    import docker
    import requests

    config = _config(args)
    selection = _filter(args, config, stopped=False)
    titles: list[str] = []
    rows: list[dict[str, str]] = []
    failed = 0
    shown = 0
    for conn in _connected(args, config):
        if conn is None:
            failed += 1
            continue
        for c in selection.containers(conn.api):
            if args.limit is not None and shown >= args.limit:
                break
            try:
                top = conn.api.top(c["Id"])
            except docker.errors.NotFound:
                continue
            except (docker.errors.DockerException, requests.RequestException) as exc:
                failed += 1
                print(f"{conn.endpoint.name}: {c['Id'][:12]}: {exc}", file=sys.stderr)
                continue
            shown += 1
            titles.extend(t for t in top.get("Titles") or () if t not in titles)
            for process in top.get("Processes") or ():
                row = {"endpoint": conn.endpoint.name, "container": c["Id"][:12]}
                row.update(zip(top.get("Titles") or (), process, strict=False))
                rows.append(row)
    headers = ("endpoint", "container", *titles)
    print_table(
        headers, [[r.get(h, "") for h in headers] for r in rows], as_csv=args.csv, as_json=args.json
    )
    return 1 if failed else 0


# -- one container -------------------------------------------------------------------------


def find_container(args: argparse.Namespace) -> tuple[_Connected, dict[str, Any]]:
    """The one endpoint holding container ``args.container_id`` (an id, id prefix or name)
    and the container's inspect data; an error when none or several hold it."""
    import docker
    import requests

    found: list[tuple[_Connected, dict[str, Any]]] = []
    try:
        for endpoint in _endpoints(args):
            conn = _connect(endpoint)
            if conn is None:
                continue
            try:
                found.append((conn, conn.api.inspect_container(args.container_id)))
            except docker.errors.NotFound:
                conn.api.close()
            except (docker.errors.DockerException, requests.RequestException) as exc:
                print(f"{endpoint.name}: skipped: {exc}", file=sys.stderr)
                conn.api.close()
    except BaseException:
        for conn, _ in found:
            conn.api.close()
        raise
    if len(found) == 1:
        return found[0]
    for conn, _ in found:
        conn.api.close()
    if not found:
        raise ButidoError(f"no container {args.container_id!r} on any endpoint answering")
    where = ", ".join(conn.endpoint.name for conn, _ in found)
    raise ButidoError(
        f"container {args.container_id!r} is on several endpoints ({where}): "
        "name the endpoint (butido endpoint NAME container ID ...)"
    )


def _one_container(
    action: Callable[[argparse.Namespace, _Connected, dict[str, Any]], int],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import docker
        import requests

        conn, info = find_container(args)
        try:
            return action(args, conn, info)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise ButidoError(f"{conn.endpoint.name}: {info['Id'][:12]}: {exc}") from exc
        finally:
            conn.api.close()

    return run


def _describe(conn: _Connected, info: dict[str, Any]) -> str:
    name = str(info.get("Name", "")).lstrip("/")
    return f"container {info['Id'][:12]} ({name}) on {conn.endpoint.name}"


def _confirmed(args: argparse.Namespace, question: str) -> bool:
    if confirm(question, non_interactive=args.non_interactive):
        return True
    print("not confirmed: nothing done")
    return False


def container_top(args: argparse.Namespace, conn: _Connected, info: dict[str, Any]) -> int:
    top = conn.api.top(info["Id"])
    print_table(
        tuple(top.get("Titles") or ()),
        top.get("Processes") or (),
        as_csv=args.csv,
        as_json=args.json,
    )
    return 0


def container_kill(args: argparse.Namespace, conn: _Connected, info: dict[str, Any]) -> int:
    signal = args.signal or "SIGKILL"
    if not _confirmed(args, f"Send {signal} to {_describe(conn, info)}?"):
        return 1
    conn.api.kill(info["Id"], signal=signal)
    print(f"sent {signal} to {_describe(conn, info)}")
    return 0


def container_delete(args: argparse.Namespace, conn: _Connected, info: dict[str, Any]) -> int:
    if not _confirmed(args, f"Delete {_describe(conn, info)}?"):
        return 1
    conn.api.remove_container(info["Id"], v=True, force=args.force)
    print(f"deleted {_describe(conn, info)}")
    return 0


def container_start(args: argparse.Namespace, conn: _Connected, info: dict[str, Any]) -> int:
    if not _confirmed(args, f"Start {_describe(conn, info)}?"):
        return 1
    conn.api.start(info["Id"])
    print(f"started {_describe(conn, info)}")
    return 0


def container_stop(args: argparse.Namespace, conn: _Connected, info: dict[str, Any]) -> int:
    if not _confirmed(args, f"Stop {_describe(conn, info)}?"):
        return 1
    conn.api.stop(info["Id"], timeout=args.timeout)
    print(f"stopped {_describe(conn, info)}")
    return 0


def container_exec(args: argparse.Namespace, conn: _Connected, info: dict[str, Any]) -> int:
    """Run a command in the container; its stdout and stderr go to ours, its exit status
    is ours."""
    command = list(args.exec_command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ButidoError("container exec: no command given")
    if not _confirmed(args, f"Run {' '.join(command)!r} in {_describe(conn, info)}?"):
        return 1
    from airflow_butido.container import STDERR, start_exec

    exec_id = conn.api.exec_create(info["Id"], command, stdout=True, stderr=True, tty=False)["Id"]
    for stream, data in start_exec(conn.api, exec_id):
        target = sys.stderr if stream == STDERR else sys.stdout
        target.buffer.write(data)
        target.flush()
    code = conn.api.exec_inspect(exec_id).get("ExitCode")
    return int(code) if code is not None else 1


def container_inspect(args: argparse.Namespace, conn: _Connected, info: dict[str, Any]) -> int:
    print(json.dumps({"endpoint": conn.endpoint.name, **info}, indent=2, sort_keys=True))
    return 0


# -- images --------------------------------------------------------------------------------


def cmd_images_list(args: argparse.Namespace) -> int:
    def images(conn: _Connected) -> Iterator[Row]:
        for image in conn.api.images():
            tags = [t for t in image.get("RepoTags") or () if t != "<none>:<none>"]
            yield (
                conn.endpoint.name,
                _created(image),
                ", ".join(tags) or image["Id"],
                image["Id"].removeprefix("sha256:")[:12],
                _size(image.get("Size")),
            )

    rows, failed = rows_per_endpoint(args, _config(args), images)
    headers = ("endpoint", "created", "tags", "image id", "size")
    print_table(headers, rows, as_csv=args.csv, as_json=args.json)
    return 1 if failed else 0


def cmd_images_verify_present(args: argparse.Namespace) -> int:
    """Every image of docker.images on every endpoint: found or missing (exit 1 if any is
    missing or an endpoint does not answer)."""
    from airflow_butido.endpoints import image_present

    config = _config(args)

    def presence(conn: _Connected) -> Iterator[Row]:
        for image in config.docker.images:
            present = image_present(conn.api, image.name)
            yield (conn.endpoint.name, image.name, "found" if present else "missing")

    rows, failed = rows_per_endpoint(args, config, presence)
    print_table(("endpoint", "image", "present"), rows, as_csv=args.csv, as_json=args.json)
    return 1 if failed or any(row[2] == "missing" for row in rows) else 0


# -- parser --------------------------------------------------------------------------------


def _add_time_filters(p: argparse.ArgumentParser, *, image: bool = True) -> None:
    p.add_argument(
        "--older-than", metavar="WHEN", help="created before WHEN: 2h, 3weeks or 2024-03-01"
    )
    p.add_argument(
        "--newer-than", metavar="WHEN", help="created after WHEN: 2h, 3weeks or 2024-03-01"
    )
    if image:
        p.add_argument("-I", "--image", metavar="IMAGE", help="only containers of IMAGE")


def _add_non_interactive(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--non-interactive",
        "-y",
        "--yes",
        dest="non_interactive",
        action="store_true",
        help="do not ask for confirmation",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="butido endpoint [NAME]")
    sub = parser.add_subparsers(dest="endpoint_command", metavar="COMMAND", required=True)
    p = sub.add_parser("ping", help="ping the endpoints (GET /_ping)")
    p.add_argument("-n", "--count", type=int, default=1, help="pings per endpoint (default 1)")
    p.add_argument("--sleep", type=float, default=1.0, help="seconds between pings")
    p.set_defaults(func=cmd_ping)
    p = sub.add_parser("stats", help="docker info of the endpoints")
    add_format_flags(p)
    p.set_defaults(func=cmd_stats)

    containers = sub.add_parser("containers", help="butido's containers on the endpoints")
    csub = containers.add_subparsers(dest="containers_command", metavar="COMMAND", required=True)
    p = csub.add_parser("list", help="list butido's containers (running ones by default)")
    p.add_argument("--list-stopped", action="store_true", help="include exited containers")
    p.add_argument("--all", action="store_true", help="include containers not made by butido")
    _add_time_filters(p)
    add_format_flags(p)
    p.set_defaults(func=cmd_containers_list)
    p = csub.add_parser("prune", help="remove butido's exited containers")
    _add_time_filters(p)
    _add_non_interactive(p)
    p.set_defaults(func=cmd_containers_prune)
    p = csub.add_parser("stop", help="stop butido's running containers")
    p.add_argument("--all", action="store_true", help="include containers not made by butido")
    p.add_argument(
        "-t",
        "--timeout",
        type=int,
        default=STOP_TIMEOUT,
        metavar="SECS",
        help=f"seconds before the container is killed (default {STOP_TIMEOUT})",
    )
    _add_time_filters(p)
    _add_non_interactive(p)
    p.set_defaults(func=cmd_containers_stop)
    p = csub.add_parser("top", help="processes of butido's running containers")
    p.add_argument("--all", action="store_true", help="include containers not made by butido")
    p.add_argument("--limit", type=int, metavar="N", help="at most N containers")
    _add_time_filters(p)
    add_format_flags(p)
    p.set_defaults(func=cmd_containers_top)

    one = sub.add_parser("container", help="one container: top, kill, delete, start, ...")
    one.add_argument("container_id", metavar="ID", help="container id, id prefix or name")
    osub = one.add_subparsers(dest="container_command", metavar="COMMAND", required=True)
    p = osub.add_parser("top", help="its processes")
    add_format_flags(p)
    p.set_defaults(func=_one_container(container_top))
    p = osub.add_parser("kill", help="send a signal (default SIGKILL)")
    p.add_argument("signal", nargs="?", help="signal name or number")
    _add_non_interactive(p)
    p.set_defaults(func=_one_container(container_kill))
    p = osub.add_parser("delete", help="remove it")
    p.add_argument("-f", "--force", action="store_true", help="remove it even when running")
    _add_non_interactive(p)
    p.set_defaults(func=_one_container(container_delete))
    p = osub.add_parser("start", help="start it")
    _add_non_interactive(p)
    p.set_defaults(func=_one_container(container_start))
    p = osub.add_parser("stop", help="stop it")
    p.add_argument(
        "-t", "--timeout", type=int, default=STOP_TIMEOUT, metavar="SECS", help="before the kill"
    )
    _add_non_interactive(p)
    p.set_defaults(func=_one_container(container_stop))
    p = osub.add_parser("exec", help="run a command in it")
    _add_non_interactive(p)
    p.add_argument("exec_command", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=_one_container(container_exec))
    p = osub.add_parser("inspect", help="its Docker inspect data as JSON")
    p.set_defaults(func=_one_container(container_inspect))

    images = sub.add_parser("images", help="images on the endpoints")
    isub = images.add_subparsers(dest="images_command", metavar="COMMAND", required=True)
    p = isub.add_parser("list", help="every image on the endpoints")
    add_format_flags(p)
    p.set_defaults(func=cmd_images_list)
    p = isub.add_parser("verify-present", help="is every configured image on every endpoint?")
    add_format_flags(p)
    p.set_defaults(func=cmd_images_verify_present)
    return parser


def cmd_endpoint(args: argparse.Namespace) -> int:
    if args.help:
        _parser().print_help()
        return 0
    words: Sequence[str] = list(args.words)
    endpoint = None
    if words and words[0] not in COMMANDS and not words[0].startswith("-"):
        endpoint, words = words[0], words[1:]
    sub = _parser().parse_args(words)
    sub.repo = args.repo
    sub.endpoint = endpoint
    return int(sub.func(sub) or 0)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "endpoint",
        help="Docker endpoints: ping, stats, containers, container ID, images",
        description=(
            "butido endpoint [NAME] ping [-n N] | stats | containers list|prune|stop|top "
            "| container ID top|kill|delete|start|stop|exec|inspect "
            "| images list|verify-present"
        ),
        add_help=False,
    )
    p.add_argument("-h", "--help", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_endpoint)
