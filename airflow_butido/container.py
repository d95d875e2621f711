"""One build container on one Docker endpoint, through the Docker SDK's low-level API.

The lifecycle follows butido's (reference 4.1): copy ``/inputs``, ``/patches`` and
``/script`` (executable) in through the archive API before the start (so remote endpoints
work without bind mounts), run the script and stream its output line by line, then fetch
``/outputs`` as a tar stream. Unlike butido, which starts an idle shell and execs
``/bin/bash /script`` in it, the script is the container's own work: its command is a small
``/bin/sh`` runner (SCRIPT_RUNNER) that starts the interpreter the shebang line names and
watches the container's stdin, attached to this process, so the build is killed when the
process dies; its output and exit status are the container's. That spares the engine an
exec per job. Images without bash build with ``#!/bin/sh``; and the container always goes
away at the end: killed and removed, whatever happened.

Nothing here knows Airflow; memory stays bounded: tars are generated on the fly, the log is
streamed to a callback and spooled to a temporary file, never collected in a list.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import re
import struct
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

from airflow_butido.errors import BuildError, ButidoError, InfrastructureError
from airflow_butido.http_chunks import ChunkedBodyError, chunked_body
from airflow_butido.object_store import StorePath, file_size, is_local, reading

log = logging.getLogger(__name__)

LABEL_PREFIX = "io.butido."
MANAGED_LABEL = "io.butido.managed"
DATABASE_LABEL = "io.butido.database"
SCRIPT_PATH = "/script"
SCRIPT_COMMAND = (SCRIPT_PATH,)  # the kernel runs it through its shebang line
RUNNER_SHELL = "/bin/sh"  # every build image needs it: it runs SCRIPT_RUNNER
CANNOT_START = "airflow-butido: cannot start the script:"
# The container's command: ``/bin/sh -c SCRIPT_RUNNER butido-script [--script TEXT]
# COMMAND...``. With ``--script`` it first writes TEXT to /script (a script that is the only
# file of a job comes this way: no archive upload). It checks that the interpreter exists
# and is executable (saying so on stderr, with the exit status a shell gives), keeps the
# attached stdin (the lifeline) as fd 3 and gives the script /dev/null instead, starts the
# script, and kills it once the lifeline reaches end of file (this process died or let go):
# then the shell, PID 1, exits and the kernel ends whatever else runs in the container. Its
# exit status is the script's.
SCRIPT_RUNNER = f"""\
if [ "$1" = --script ]; then
  if ! printf '%s' "$2" >{SCRIPT_PATH}; then
    echo "{CANNOT_START} cannot write {SCRIPT_PATH}" >&2; exit 126
  fi
  chmod 755 {SCRIPT_PATH} 2>/dev/null; shift 2
fi
if [ ! -e "$1" ]; then echo "{CANNOT_START} $1: not found" >&2; exit 127; fi
if [ -d "$1" ] || [ ! -x "$1" ]; then echo "{CANNOT_START} $1: not executable" >&2; exit 126; fi
exec 3<&0 </dev/null
"$@" 3<&- &
script=$!
{{ while read -r line <&3; do :; done; kill -KILL "$script"; }} >/dev/null 2>&1 &
wait "$script"
"""
# The longest script given in the container's command rather than copied in: well below
# Linux's 128 KiB for one argument.
INLINE_SCRIPT_MAX = 64 << 10
CHUNK_SIZE = 1 << 20
STDOUT, STDERR = 1, 2  # stream numbers of the engine's multiplexed output frames
MAX_LINE_BYTES = 64 << 10  # a longer log line is cut after this many bytes
LINE_CUT_MARKER = "[airflow-butido: line cut, dropped"
LOG_SPOOL_BYTES = 1 << 20  # the full log stays in memory up to this size, then on disk
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
_NOT_FOUND = re.compile(r"no such file or directory", re.IGNORECASE)
_UPGRADE = {"Connection": "Upgrade", "Upgrade": "tcp"}  # the engine takes the connection over


@dataclass(frozen=True)
class InputFile:
    """A file to place in the container: from the host (``source``) or small ``data``."""

    container_path: str  # absolute, e.g. /inputs/src.source
    source: StorePath | None = None  # a local file or an object of a store
    data: bytes | None = None
    mode: int = 0o644

    def __post_init__(self) -> None:
        path = PurePosixPath(self.container_path)
        if not path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
            raise ValueError(f"bad container path {self.container_path!r}")
        if (self.source is None) == (self.data is None):
            raise ValueError("exactly one of source and data must be given")


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    environment: tuple[tuple[str, str], ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    network_mode: str | None = None
    command: tuple[str, ...] = SCRIPT_COMMAND  # what runs /script (see script_command)
    script: str | None = None  # written to /script by the runner (see inline_script)


def container_name(package_name: str, package_version: str, job_uuid: str) -> str:
    """``butido-<name>-<version>-<job uuid>``, with characters Docker refuses replaced."""
    return _NAME_UNSAFE.sub("_", f"butido-{package_name}-{package_version}-{job_uuid}")


def job_labels(
    package_name: str,
    package_version: str,
    job_uuid: str,
    submit_uuid: str,
    dag_run: str | None = None,
    database: str | None = None,
) -> dict[str, str]:
    """The labels of a build container; ``database`` names the build database whose
    slots the job holds (see remove_dead_containers)."""
    labels = {
        MANAGED_LABEL: "true",
        "io.butido.package": package_name,
        "io.butido.version": package_version,
        "io.butido.job": str(job_uuid),
        "io.butido.submit": str(submit_uuid),
    }
    if dag_run:
        labels["io.butido.dag_run"] = dag_run
    if database:
        labels[DATABASE_LABEL] = database
    return labels


def inline_script(files: Sequence[InputFile]) -> tuple[str | None, list[InputFile]]:
    """The script to give in the container's command, and the files left to copy in.

    Copying files in is an archive upload, which costs the engine a mount and an untar
    process; when the script is all a job copies in (no sources, patches or dependency
    artifacts), it travels in the command instead, if it is short enough for one argument
    and has no NUL byte (an argument cannot hold one).
    """
    if len(files) != 1 or files[0].container_path != SCRIPT_PATH or files[0].data is None:
        return None, list(files)
    data = files[0].data
    if len(data) > INLINE_SCRIPT_MAX or b"\0" in data:
        return None, list(files)
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        return None, list(files)


# -- tar archives for the copy-in ---------------------------------------------------------


def tar_stream(files: Sequence[InputFile]) -> Iterator[bytes]:
    """A POSIX tar of ``files`` (paths relative to ``/``), generated chunk by chunk.

    Parent directories get their own entries (mode 0755); file contents are read in
    chunks as the consumer asks, so the archive never exists as a whole.
    """
    dirs: set[str] = set()
    now = int(time.time())
    for item in files:
        parts = PurePosixPath(item.container_path).parts[1:]
        for i in range(1, len(parts)):
            name = "/".join(parts[:i])
            if name not in dirs:
                dirs.add(name)
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                info.mtime = now
                yield info.tobuf(format=tarfile.PAX_FORMAT)
        info = tarfile.TarInfo("/".join(parts))
        info.mode = item.mode
        info.mtime = now
        if item.data is not None:
            info.size = len(item.data)
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            yield item.data
        else:
            assert item.source is not None
            with reading(item.source) as fh:
                info.size = _file_size(fh) if is_local(item.source) else file_size(item.source)
                yield info.tobuf(format=tarfile.PAX_FORMAT)
                remaining = info.size
                while remaining:
                    chunk = fh.read(min(CHUNK_SIZE, remaining))
                    if not chunk:
                        raise InfrastructureError(f"{item.source} shrank while being copied")
                    remaining -= len(chunk)
                    yield chunk
        padding = -info.size % tarfile.BLOCKSIZE
        if padding:
            yield b"\0" * padding
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _file_size(fh: IO[bytes]) -> int:
    return os.fstat(fh.fileno()).st_size


# -- the log ------------------------------------------------------------------------------


def start_exec(api: Any, exec_id: str) -> HijackedStream:
    """Start the created exec ``exec_id``; its output as ``(stream, bytes)`` frames, with no
    read timeout.

    The frames are read through the buffered reader that parsed the response's headers: the
    first frames often arrive with them (over TCP almost always when the engine is busy), and
    the bare socket beneath it, which the Docker SDK reads its exec output from, never sees
    those bytes (docker-py issue 3332: the first lines of a build log went missing).
    """
    response = api._post_json(
        api._url("/exec/{0}/start", exec_id),
        headers=_UPGRADE,
        data={"Tty": False, "Detach": False},
        stream=True,
    )
    return HijackedStream(api, response)


def attach(api: Any, container_id: str) -> HijackedStream:
    """Attach to the container's stdin, stdout and stderr (before it starts, so no output
    is missed); its output as ``(stream, bytes)`` frames. The connection is also the
    container's stdin: closing it is what SCRIPT_RUNNER takes as the signal to kill the
    script."""
    response = api._post(
        api._url("/containers/{0}/attach", container_id),
        headers=_UPGRADE,
        params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1},
        stream=True,
    )
    return HijackedStream(api, response)


class HijackedStream:
    """The frames of a connection the engine took over (exec start, attach), read with no
    read timeout through the buffered reader that parsed the response's headers. ``close``
    closes the connection, read or not; reading to the end closes it too."""

    def __init__(self, api: Any, response: Any) -> None:
        api._raise_for_status(response)
        self._response = response
        self._closed = False
        self._sock = api._get_raw_response_socket(response)
        for s in (self._sock, getattr(self._sock, "_sock", None)):
            if s is not None and hasattr(s, "settimeout"):
                s.settimeout(None)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        try:
            yield from read_frames(self._response.raw._fp.fp)
        except ValueError:  # "read of closed file": closed meanwhile, which ends it
            if not self._closed:
                raise
        finally:
            self.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._response.close()
        with contextlib.suppress(Exception):
            self._sock.close()


def read_frames(reader: io.BufferedIOBase) -> Iterator[tuple[int, bytes]]:
    """The ``(stream, bytes)`` frames of the engine's multiplexed stream, until it ends.

    Each frame is an 8-byte header (stream number, three zero bytes, big-endian length)
    and its data. Data is passed on as it arrives (a live log), at most CHUNK_SIZE at a time.
    """
    while True:
        header = reader.read(8)
        if len(header) < 8:
            return  # the end (a header cut short ends the stream too)
        stream, length = struct.unpack(">BxxxL", header)
        while length > 0:
            data = reader.read1(min(length, CHUNK_SIZE))
            if not data:
                return
            length -= len(data)
            yield stream, data


def iter_lines(frames: Iterable[tuple[int, bytes]]) -> Iterator[str]:
    """Split multiplexed ``(stream, bytes)`` frames into text lines on ``\\n``.

    stdout and stderr keep separate buffers, so a partial line on one is never glued to
    output of the other. A line longer than MAX_LINE_BYTES keeps its first
    MAX_LINE_BYTES, followed by a marker saying how much was cut; the rest is counted,
    never held, so memory stays bounded whatever the script prints.
    """
    buffers: dict[int, bytearray] = {}
    cut: dict[int, int] = {}  # stream -> bytes dropped from its current long line
    for stream, chunk in frames:
        buffer = buffers.setdefault(stream, bytearray())
        start = 0
        while stream in cut:  # dropping the rest of a long line
            end = chunk.find(b"\n", start)
            if end < 0:
                cut[stream] += len(chunk) - start
                start = len(chunk)
                break
            yield _decode(buffer) + _cut_marker(cut.pop(stream) + end - start)
            buffer.clear()
            start = end + 1
        buffer += chunk[start:]
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if end - start > MAX_LINE_BYTES:
                yield _decode(buffer[start : start + MAX_LINE_BYTES]) + _cut_marker(
                    end - start - MAX_LINE_BYTES
                )
            else:
                yield _decode(buffer[start:end])
            start = end + 1
        del buffer[:start]
        if len(buffer) > MAX_LINE_BYTES:
            cut[stream] = len(buffer) - MAX_LINE_BYTES
            del buffer[MAX_LINE_BYTES:]
    for stream, buffer in buffers.items():
        if stream in cut:
            yield _decode(buffer) + _cut_marker(cut[stream])
        elif buffer:
            yield _decode(buffer)


def _cut_marker(dropped: int) -> str:
    return f" {LINE_CUT_MARKER} {dropped} bytes]"


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").replace("\0", "")


@dataclass
class ScriptOutcome:
    """What one script run produced. ``log`` is a text file positioned at its start."""

    exit_code: int
    succeeded: bool
    error_message: str | None
    failed_phase: str | None
    last_phase: str | None
    saw_state: bool
    tail: tuple[str, ...]
    log: IO[str]
    line_count: int

    def log_text(self) -> str:
        """The whole log as one string (for the database); reads the spooled file."""
        self.log.seek(0)
        text = self.log.read()
        self.log.seek(0)
        return text


def script_command(script: str) -> tuple[str, ...] | None:
    """What the kernel runs for ``/script`` holding ``script``: the interpreter its ``#!``
    line names, the rest of the line as one argument (when there is a rest), ``/script``.
    None when the first line is no shebang line."""
    first = script.split("\n", 1)[0]
    if not first.startswith("#!"):
        return None
    words = first[2:].strip(" \t").split(None, 1)
    if not words:
        return None
    return (*(w.strip(" \t") for w in words), SCRIPT_PATH)


def start_failure(outcome: ScriptOutcome) -> str | None:
    """Why the script did not start at all, from SCRIPT_RUNNER's line in place of its
    output: ``no interpreter`` (the shebang names a file the image lacks) or ``not
    executable`` (one that cannot be run); None when it ran."""
    if outcome.saw_state or outcome.exit_code not in (126, 127) or outcome.line_count > 3:
        return None
    for line in outcome.tail:
        if not line.startswith(CANNOT_START):
            continue
        if line.endswith(": not found"):
            return "no interpreter"
        if line.endswith(": not executable"):
            return "not executable"
    return None


def fold_log(
    lines: Iterable[str],
    *,
    exit_code: Callable[[], int],
    tail_lines: int,
    on_line: Callable[[str, Any], None] | None = None,
    redact: Callable[[str], str] | None = None,
) -> ScriptOutcome:
    """Parse every line with butido's log protocol, spool it, and decide the outcome.

    ``on_line(line, item)`` sees each raw line with its parsed protocol item as it arrives;
    ``redact`` hides secret values in a line before anything sees or stores it.
    """
    from airflow_butido.scripts import logproto

    outcome = logproto.BuildOutcome()
    tail: collections.deque[str] = collections.deque(maxlen=max(tail_lines, 0))
    spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (handed to the caller)
        max_size=LOG_SPOOL_BYTES, mode="w+", encoding="utf-8", newline="\n"
    )
    count = 0
    saw_state = False
    for line in lines:
        if redact is not None:
            line = redact(line)
        item = logproto.parse_line(line)
        outcome.feed(item)
        if isinstance(item, logproto.State):
            saw_state = True
        if count:
            spool.write("\n")
        spool.write(line)
        count += 1
        tail.append(logproto.readable(item))
        if on_line is not None:
            on_line(line, item)
    code = exit_code()
    spool.seek(0)
    return ScriptOutcome(
        exit_code=code,
        succeeded=outcome.succeeded(code),
        error_message=outcome.error_message,
        failed_phase=outcome.failed_phase,
        last_phase=outcome.last_phase,
        saw_state=saw_state,
        tail=tuple(tail),
        log=spool,
        line_count=count,
    )


# -- the container ------------------------------------------------------------------------


class ArchiveStream:
    """The chunks of an archive download from the engine, closable from the reader's side.

    Closing drops the connection, so the engine stops sending at once. Transport errors in
    the middle of the stream are the endpoint's, not the job's: InfrastructureError.
    """

    def __init__(self, response: Any, what: str) -> None:
        self._response = response
        self._what = what

    def __iter__(self) -> Iterator[bytes]:
        import requests

        try:
            socket = self._unread_chunked_body()
            if socket is None:
                raw = self._response.raw
                while chunk := raw.read1(CHUNK_SIZE):
                    yield chunk
            else:
                yield from chunked_body(*socket)
        except (requests.RequestException, OSError, ChunkedBodyError) as exc:
            raise InfrastructureError(f"{self._what}: {exc}") from exc
        except Exception as exc:  # urllib3's protocol errors
            if type(exc).__module__.startswith("urllib3"):
                raise InfrastructureError(f"{self._what}: {exc}") from exc
            raise

    def _unread_chunked_body(self) -> tuple[Callable[[memoryview], int | None], bytes] | None:
        """The socket's ``readinto`` and the bytes its buffer holds past the headers, when
        the body is chunked, not encoded and not read yet (what the engine sends), so that
        http_chunks reads it in large blocks; else None, and urllib3 reads it."""
        message = getattr(self._response.raw, "_fp", None)  # http.client's response
        reader = getattr(message, "fp", None)  # the buffered reader over the socket
        encoding = self._response.headers.get("Content-Encoding", "identity")
        if not (
            getattr(message, "chunked", False)
            and getattr(message, "chunk_left", 0) is None
            and isinstance(reader, io.BufferedReader)
            and encoding in ("", "identity")
        ):
            return None
        return reader.raw.readinto, reader.read1(len(reader.peek()))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._response.close()


class BuildContainer:
    """A build container on one endpoint. Use as a context manager: exit removes it."""

    def __init__(
        self,
        api: Any,
        spec: ContainerSpec,
        *,
        endpoint_name: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.api = api  # docker.APIClient
        self.spec = spec
        self.endpoint_name = endpoint_name
        self.endpoint_url = endpoint_url
        self.id: str | None = None
        self._attached: HijackedStream | None = None  # its output, and its stdin: the lifeline

    def __enter__(self) -> BuildContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def create(self) -> str:
        import docker.errors
        from docker.types import LogConfig

        host_config = self.api.create_host_config(
            network_mode=self.spec.network_mode,
            # the output is read from the attached stream; the engine need not log it too
            log_config=LogConfig(type=LogConfig.types.NONE),
        )
        try:
            created = self.api.create_container(
                image=self.spec.image,
                command=[
                    RUNNER_SHELL,
                    "-c",
                    SCRIPT_RUNNER,
                    "butido-script",
                    *self._inline(),
                    *self.spec.command,
                ],  # fmt: skip
                name=self.spec.name,
                environment=[f"{k}={v}" for k, v in self.spec.environment],
                labels=dict(self.spec.labels),
                stdin_open=True,  # with attached stdin: StdinOnce, see start()
                tty=False,
                host_config=host_config,
            )
        except docker.errors.DockerException as exc:
            raise InfrastructureError(f"creating container {self.spec.name}: {exc}") from exc
        self.id = created["Id"]
        return self.id

    def _inline(self) -> tuple[str, ...]:
        return () if self.spec.script is None else ("--script", self.spec.script)

    def put_files(self, files: Sequence[InputFile]) -> None:
        """Copy files in with one streamed archive upload (works before start)."""
        import docker.errors

        if not files:
            return
        try:
            self.api.put_archive(self._id(), "/", tar_stream(files))
        except docker.errors.DockerException as exc:
            raise InfrastructureError(f"copying inputs into {self.spec.name}: {exc}") from exc
        except OSError as exc:
            raise InfrastructureError(f"copying inputs into {self.spec.name}: {exc}") from exc

    def start(self) -> None:
        """Attach to the container, then start it: the script runs.

        The container is created with ``StdinOnce``: when the attached connection closes,
        because the task process died (even by SIGKILL), the runner reads end-of-file on its
        stdin and kills the script, and the container stops with everything running in it
        instead of building on unwatched. An image without ``/bin/sh`` is a BuildError:
        another endpoint would fail the same way.
        """
        import docker.errors

        try:
            self._attached = attach(self.api, self._id())
            self.api.start(self._id())
        except docker.errors.DockerException as exc:
            if _NOT_FOUND.search(str(exc)) and RUNNER_SHELL in str(exc):
                raise BuildError(
                    f"image {self.spec.image} has no {RUNNER_SHELL}, which runs the script "
                    f"in every build container; build in an image that has it"
                ) from exc
            raise InfrastructureError(f"starting container {self.spec.name}: {exc}") from exc
        except OSError as exc:  # requests' exceptions are OSErrors
            raise InfrastructureError(f"starting container {self.spec.name}: {exc}") from exc

    def script_lines(self) -> Iterator[str]:
        """The started script's merged stdout/stderr as lines, until the container stops.

        The stream has no read timeout: a build may be silent for a long time.
        """
        attached = self._attached
        if attached is None:
            raise RuntimeError("container not started")

        def frames() -> Iterator[tuple[int, bytes]]:
            try:
                yield from attached
            except OSError as exc:
                raise InfrastructureError(
                    f"reading the output of {self.spec.name} failed: {exc}"
                ) from exc

        return iter_lines(frames())

    def wait(self, *, settle_seconds: float = 10.0) -> int:
        """The exit status of the script, once its output has ended (the container stops
        with it; a container still running then means the connection was lost)."""
        import docker.errors
        import requests

        if self.id is None:
            raise InfrastructureError(
                f"container {self.spec.name} was removed while the script ran"
            )
        try:
            info = self.api.wait(self.id, timeout=settle_seconds)
        except requests.exceptions.ReadTimeout as exc:
            raise InfrastructureError(
                f"script in {self.spec.name} still running after its output ended"
            ) from exc
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise InfrastructureError(f"container {self.spec.name} went away: {exc}") from exc
        code = info.get("StatusCode")
        error = info.get("Error")  # absent, null or {"Message": ""} when there is none
        message = error.get("Message") if isinstance(error, dict) else error
        if code is None or message:
            raise InfrastructureError(
                f"no exit status for the script in {self.spec.name}: {message}"
            )
        return int(code)

    def run_script(
        self,
        *,
        tail_lines: int,
        on_line: Callable[[str, Any], None] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> ScriptOutcome:
        """Read the started script's log to its end and fold it (see fold_log)."""
        return fold_log(
            self.script_lines(),
            exit_code=self.wait,
            tail_lines=tail_lines,
            on_line=on_line,
            redact=redact,
        )

    def outputs(self, path: str = "/outputs") -> ArchiveStream | None:
        """The tar stream of ``path``, or None when it does not exist.

        The stream must be closed (``extract_outputs`` does): the engine blocks writing an
        unread archive, and holds the container while it does.
        """
        import docker.errors

        what = f"fetching {path} from {self.spec.name}"
        try:
            response = self.api._get(
                self.api._url("/containers/{0}/archive", self._id()),
                params={"path": path},
                stream=True,
                headers={"Accept-Encoding": "identity"},
            )
            self.api._raise_for_status(response)
            # the engine may pause between files: no read timeout, as the SDK does
            self.api._disable_socket_timeout(self.api._get_raw_response_socket(response))
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise InfrastructureError(f"{what}: {exc}") from exc
        except OSError as exc:  # requests' exceptions are OSErrors
            raise InfrastructureError(f"{what}: {exc}") from exc
        return ArchiveStream(response, what)

    def remove(self) -> None:
        """Kill and remove the container; a container already gone is fine."""
        import docker.errors
        import requests

        if self.id is None:
            return
        try:
            self.api.remove_container(self.id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                log.warning("removing container %s failed: %s", self.spec.name, exc)
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            # the endpoint went away or timed out; the job's own failure says so
            log.warning("removing container %s failed: %s", self.spec.name, exc)
        self.id = None
        attached, self._attached = self._attached, None
        if attached is not None:
            attached.close()

    def _id(self) -> str:
        if self.id is None:
            raise RuntimeError("container not created")
        return self.id


# -- image digests ------------------------------------------------------------------------


def endpoint_image_digest(api: Any, image: str) -> str:
    """The image ID (``sha256:...``) of ``image`` on an endpoint (a docker APIClient)."""
    return str(api.inspect_image(image)["Id"])


def local_image_digest(image: str) -> str:
    """The image ID (``sha256:...``) of ``image`` on the local Docker engine."""
    import docker

    try:
        client = docker.from_env()
        try:
            return str(client.images.get(image).id)
        finally:
            client.close()
    except Exception as exc:  # engine unreachable or image absent
        raise ButidoError(f"cannot read the digest of image {image!r}: {exc}") from exc


def remove_dead_containers(api: Any, database: str, live_jobs: set[str]) -> list[str]:
    """Remove this project's containers of jobs recorded in ``database`` that are not
    running (created, exited, dead) and whose job holds no live slot there: what a killed
    build left behind. Returns their names. Containers of other build databases sharing
    the engine are never touched: their live jobs are unknown here.

    A killed job's container stops by itself (its idle bash reads end-of-file), but stays;
    one killed while its inputs were copied in was never started at all.
    """
    import docker.errors

    removed: list[str] = []
    found = api.containers(
        all=True,
        filters={
            "label": [f"{MANAGED_LABEL}=true", f"{DATABASE_LABEL}={database}"],
            "status": ["created", "exited", "dead"],
        },
    )
    for info in found:
        job = (info.get("Labels") or {}).get("io.butido.job")
        if not job or job in live_jobs:
            continue
        try:
            api.remove_container(info["Id"], force=True, v=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                log.warning("removing container %s failed: %s", info.get("Names"), exc)
            continue
        removed.append(str((info.get("Names") or [info["Id"]])[0]).lstrip("/"))
    return removed
