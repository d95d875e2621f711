"""The container protocol on the real Docker engine: naming, labels, copy-in, exec, outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_butido.container import (
    CANNOT_START,
    SCRIPT_RUNNER,
    BuildContainer,
    ContainerSpec,
    InputFile,
    container_name,
    iter_lines,
    job_labels,
    tar_stream,
)
from airflow_butido.errors import InfrastructureError
from airflow_butido.stores import OutputsError, extract_outputs

pytestmark = pytest.mark.docker


@pytest.fixture
def api(docker_client):
    return docker_client.api


def make_container(api, image: str, **kw) -> BuildContainer:
    job = str(uuid.uuid4())
    spec = ContainerSpec(
        name=container_name("pkg", "1.0", job),
        image=image,
        environment=kw.pop("environment", (("FOO", "bar"),)),
        labels=job_labels("pkg", "1.0", job, "submit-1", "dag/run-1"),
        network_mode=kw.pop("network_mode", None),
    )
    return BuildContainer(api, spec)


def run(container: BuildContainer, script: str) -> tuple[list[str], int]:
    container.put_files([InputFile("/script", data=f"#!/bin/bash\n{script}".encode(), mode=0o755)])
    container.start()
    lines = list(container.script_lines())
    return lines, container.wait()


def start_sleeping(container: BuildContainer, sleep: str) -> Iterator[str]:
    """Start a script that says "started", then runs ``sleep``; its remaining lines."""
    script = f"#!/bin/sh\necho started; {sleep}".encode()
    container.put_files([InputFile("/script", data=script, mode=0o755)])
    container.start()
    lines = container.script_lines()
    assert next(lines) == "started"
    return lines


def test_container_name_replaces_characters_docker_refuses() -> None:
    assert container_name("gcc", "13.2+deb1", "u") == "butido-gcc-13.2_deb1-u"


def test_iter_lines_keeps_stdout_and_stderr_lines_apart() -> None:
    frames = [(1, b"out-par"), (2, b"err line\n"), (1, b"tial\nlast"), (2, b"err tail")]
    assert list(iter_lines(frames)) == ["err line", "out-partial", "last", "err tail"]


def test_fold_log_keeps_constant_memory_for_a_long_log() -> None:
    import tracemalloc

    from airflow_butido.container import fold_log

    count = 300_000
    lines = (f"build output line {i:07d} " + "x" * 60 for i in range(count))
    tracemalloc.start()
    try:
        outcome = fold_log(lines, exit_code=lambda: 0, tail_lines=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with outcome.log:
        assert outcome.line_count == count
        assert outcome.tail[-1].startswith(f"build output line {count - 1:07d}")
        assert len(outcome.tail) == 10
        assert sum(1 for _ in outcome.log) == count  # the whole log, spooled
    assert outcome.succeeded
    assert peak < 4 * 1024 * 1024  # ~26 MB of log text went through


def test_tar_stream_is_a_valid_archive_with_parent_directories(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    files = [
        InputFile("/inputs/big", source=src),
        InputFile("/patches/s/19.0/a.patch", data=b"p"),
        InputFile("/script", data=b"echo"),
    ]
    with tarfile.open(fileobj=io.BytesIO(b"".join(tar_stream(files)))) as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert sorted(names) == [
            "inputs",
            "inputs/big",
            "patches",
            "patches/s",
            "patches/s/19.0",
            "patches/s/19.0/a.patch",
            "script",
        ]
        assert names["patches/s"].isdir()
        assert names["script"].mode == 0o644
        assert tar.extractfile("inputs/big").read() == src.read_bytes()  # type: ignore[union-attr]


def test_lifecycle_name_labels_env_inputs_and_streamed_output(
    api, build_image: str, tmp_path: Path
) -> None:
    source = tmp_path / "src.source"
    source.write_bytes(b"1\n")
    with make_container(api, build_image) as container:
        cid = container.create()
        info = api.inspect_container(cid)
        assert info["Name"] == "/" + container.spec.name
        labels = info["Config"]["Labels"]
        assert labels["io.butido.managed"] == "true"
        assert labels["io.butido.package"] == "pkg"
        assert labels["io.butido.version"] == "1.0"
        assert labels["io.butido.submit"] == "submit-1"
        assert labels["io.butido.dag_run"] == "dag/run-1"
        assert info["Name"] == f"/butido-pkg-1.0-{labels['io.butido.job']}"
        assert info["Config"]["Cmd"] == ["/bin/sh", "-c", SCRIPT_RUNNER, "butido-script", "/script"]
        assert info["Config"]["OpenStdin"] is True
        assert info["Config"]["StdinOnce"] is True  # the runner kills the script when it closes
        assert info["HostConfig"]["LogConfig"]["Type"] == "none"  # read from the attachment
        container.put_files(
            [
                InputFile("/inputs/src.source", source=source),
                InputFile("/patches/s/19.0/s190.patch", data=b"patch\n"),
            ]
        )
        lines, code = run(
            container,
            "cat /inputs/src.source /patches/s/19.0/s190.patch; echo FOO=$FOO; "
            "echo to-stderr >&2; sleep 0.5; printf 'no newline'; exit 3",
        )
        # stdout and stderr are separate pipes: their relative order is not guaranteed
        assert [line for line in lines if line != "to-stderr"] == [
            "1",
            "patch",
            "FOO=bar",
            "no newline",
        ]
        assert "to-stderr" in lines
        assert code == 3
    assert api.containers(all=True, filters={"id": cid}) == []


def test_missing_outputs_is_none_not_an_error(api, build_image: str) -> None:
    with make_container(api, build_image) as container:
        container.create()
        run(container, "true")
        assert container.outputs() is None


def test_outputs_are_read_from_the_socket_in_large_blocks(
    api, build_image: str, tmp_path: Path, monkeypatch
) -> None:
    """The engine's chunked archive goes through http_chunks, not urllib3, and arrives whole."""
    import airflow_butido.container as container_module

    framed: list[int] = []
    chunked_body = container_module.chunked_body

    def counting(*args, **kwargs):
        for piece in chunked_body(*args, **kwargs):
            framed.append(len(piece))
            yield piece

    monkeypatch.setattr(container_module, "chunked_body", counting)
    with make_container(api, build_image) as container:
        container.create()
        lines, code = run(
            container,
            "mkdir -p /outputs/sub; head -c 3000000 /dev/urandom > /outputs/sub/a.bin; "
            "echo small > /outputs/b.txt; cd /outputs && sha256sum sub/a.bin b.txt",
        )
        assert code == 0
        expected = {name: digest for digest, name in (line.split() for line in lines)}
        artifacts = extract_outputs(container.outputs(), tmp_path)  # type: ignore[arg-type]
    assert {a.path: a.sha256 for a in artifacts} == expected
    assert sum(framed) > 3_000_000


def test_a_connection_cut_in_the_middle_of_the_outputs_is_the_endpoints_fault(
    api, build_image: str, tmp_path: Path
) -> None:
    """A TCP relay to the engine closes after 1 MB of the archive: an InfrastructureError
    naming the fetch, and nothing is left in the store."""
    import docker

    relay = CuttingRelay(api._custom_adapter.socket_path)  # the engine's unix socket
    with make_container(api, build_image) as container:
        container.create()
        _, code = run(container, "mkdir /outputs; head -c 4000000 /dev/urandom > /outputs/a.bin")
        assert code == 0
        cut = docker.APIClient(base_url=f"tcp://127.0.0.1:{relay.port}", version=api._version)
        relay.cut_after = 1_000_000
        through = BuildContainer(cut, container.spec)
        through.id = container.id
        stream = through.outputs()
        assert stream is not None
        with pytest.raises(
            InfrastructureError, match=f"fetching /outputs from {container.spec.name}"
        ):
            extract_outputs(stream, tmp_path / "staging")
        cut.close()
    relay.close()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


class CuttingRelay:
    """TCP to the engine's unix socket, closing each connection after ``cut_after`` bytes
    of the engine's answer."""

    def __init__(self, path: str) -> None:
        import socket
        import threading

        self.path = path
        self.cut_after = 1 << 62
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(self.path)
            threading.Thread(target=self._pipe, args=(client, engine, None), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(engine, client, self.cut_after), daemon=True
            ).start()

    @staticmethod
    def _pipe(source, sink, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    sink.sendall(data[: limit - sent])
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(2)
            end.close()

    def close(self) -> None:
        self.listener.close()


def test_network_mode_comes_from_the_endpoint(api, build_image: str) -> None:
    with make_container(api, build_image, network_mode="none") as container:
        cid = container.create()
        assert api.inspect_container(cid)["HostConfig"]["NetworkMode"] == "none"


def test_outputs_with_a_symlink_to_etc_passwd_are_refused(
    api, build_image: str, tmp_path: Path
) -> None:
    dest = tmp_path / "staging" / "submit"
    with make_container(api, build_image) as container:
        container.create()
        _, code = run(
            container,
            "mkdir /outputs; echo ok > /outputs/a.pkg; ln -s /etc/passwd /outputs/passwd",
        )
        assert code == 0
        with pytest.raises(OutputsError, match="symbolic link to '/etc/passwd'"):
            extract_outputs(container.outputs(), dest)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []


def test_outputs_with_a_dotdot_entry_are_refused(tmp_path: Path) -> None:
    # Docker itself never emits `..`; a hostile endpoint could, so feed the tar directly.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("outputs/ok", b"x"), ("outputs/../../escaped", b"evil")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "staging" / "submit"
    with pytest.raises(OutputsError, match="'..' in path"):
        extract_outputs(iter([buf.getvalue()]), dest)
    assert not (tmp_path / "escaped").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_remove_during_exec_ends_the_stream_and_removes_the_container(
    api, build_image: str
) -> None:
    container = make_container(api, build_image)
    cid = container.create()
    lines = start_sleeping(container, "sleep 300")
    container.remove()
    assert list(lines) == []
    with pytest.raises(InfrastructureError, match="removed while the script ran"):
        container.wait()
    assert api.containers(all=True, filters={"id": cid}) == []


def test_create_with_unknown_image_is_an_infrastructure_error(api) -> None:
    container = make_container(api, "airflow-butido/does-not-exist:0")
    with pytest.raises(InfrastructureError, match="creating container"):
        container.create()


def test_copy_failures_are_infrastructure_errors(api, build_image: str, tmp_path: Path) -> None:
    gone = make_container(api, build_image)
    gone.create()
    other_id = gone.id
    gone.remove()
    gone.id = other_id  # the container vanished on the endpoint before the copy
    with pytest.raises(InfrastructureError, match="copying inputs"):
        gone.put_files([InputFile("/script", data=b"echo")])
    with make_container(api, build_image) as container:
        container.create()
        missing = tmp_path / "vanished.source"  # deleted between planning and copying
        with pytest.raises(InfrastructureError, match="copying inputs"):
            container.put_files([InputFile("/inputs/src.source", source=missing)])


def test_exec_output_arriving_with_the_response_headers_is_kept(
    build_image: str, http_endpoint: str
) -> None:
    """Over TCP the first frames of an exec's output often come in the same read as the
    response's headers; the bare socket under the SDK's reader never sees those bytes."""
    import docker

    from airflow_butido.container import start_exec

    api = docker.APIClient(base_url=http_endpoint)
    try:
        with make_container(api, build_image) as container:
            container.create()
            script = InputFile("/script", data=b"#!/bin/sh\nexec sleep 60\n", mode=0o755)
            container.put_files([script])
            container.start()
            outputs = []
            for _ in range(150):
                exec_id = api.exec_create(container.id, ["echo", "first"])["Id"]
                outputs.append(list(iter_lines(start_exec(api, exec_id))))
                assert api.exec_inspect(exec_id)["ExitCode"] == 0
            assert outputs == [["first"]] * 150
    finally:
        api.close()


def test_the_attached_log_is_whole_over_tcp(build_image: str, http_endpoint: str) -> None:
    """The script's output comes through the connection attached before the start,
    read through the reader that parsed its headers: every line, from the first."""
    import docker

    api = docker.APIClient(base_url=http_endpoint)
    try:
        for i in range(8):
            with make_container(api, build_image) as container:
                container.create()
                lines, code = run(container, f"echo first {i}; seq 1 2000; exit {i % 3}")
                assert lines == [f"first {i}", *map(str, range(1, 2001))]
                assert code == i % 3
    finally:
        api.close()


def test_the_script_reads_end_of_file_and_its_interpreter_is_checked(api, build_image: str) -> None:
    """The script's stdin is /dev/null, not the lifeline; a missing or non-executable
    interpreter is said so, with a shell's exit status."""
    with make_container(api, build_image) as container:
        container.create()
        lines, code = run(container, "read -r line; echo read=$?")
        assert (lines, code) == (["read=1"], 0)
    for interpreter, status, why in (
        ("/bin/nope", 127, "not found"),
        ("/etc", 126, "not executable"),
    ):
        spec = dataclasses.replace(
            make_container(api, build_image).spec, command=(interpreter, "/script")
        )
        with BuildContainer(api, spec) as container:
            container.create()
            lines, code = run(container, "echo never")
            assert lines == [f"{CANNOT_START} {interpreter}: {why}"]
            assert code == status


def test_a_script_given_in_the_command_is_written_to_script_byte_for_byte(
    api, build_image: str
) -> None:
    """No archive upload: the runner writes /script from its argument, exactly, executable."""
    body = "printf 'q\\'s %s\\n' \"$HOME\" `x` $(y) ü \\\\ \\n -- --script\n\n\n"
    script = f"#!/bin/sh\nstat -c %a /script; sha256sum /script\nexit 3\n: {body}"
    spec = dataclasses.replace(
        make_container(api, build_image).spec, command=("/bin/sh", "/script"), script=script
    )
    with BuildContainer(api, spec) as container:
        container.create()
        container.start()
        lines = list(container.script_lines())
        assert container.wait() == 3
    digest = hashlib.sha256(script.encode()).hexdigest()
    assert lines == ["755", f"{digest}  /script"]


def test_closing_the_attachment_kills_the_build_and_stops_the_container(
    api, build_image: str
) -> None:
    """What a dead task process does: its connection closes, the script and everything it
    started are killed, and the container stops."""
    with make_container(api, build_image) as container:
        cid = container.create()
        start_sleeping(container, "sleep 300 & wait")
        assert container._attached is not None
        container._attached.close()
        info = api.wait(cid, timeout=20)
        assert info["StatusCode"] == 137  # the script was killed
        assert api.inspect_container(cid)["State"]["Running"] is False


def test_read_frames_passes_data_on_as_it_arrives() -> None:
    from airflow_butido.container import read_frames

    def frame(stream: int, data: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    class Trickle(io.RawIOBase):
        """A raw stream that gives at most 3 bytes per read, as a slow socket may."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            n = min(3, len(buffer), len(self.data))
            buffer[:n], self.data = self.data[:n], self.data[n:]
            return n

    wire = frame(1, b"hello\n") + frame(2, b"oops\n") + frame(1, b"")
    got = list(read_frames(io.BufferedReader(Trickle(wire + frame(1, b"cut")[:5]))))
    assert b"".join(d for s, d in got if s == 1) == b"hello\n"
    assert b"".join(d for s, d in got if s == 2) == b"oops\n"
    assert all(len(d) <= 3 for _, d in got)  # passed on piece by piece, not held back
    truncated = list(read_frames(io.BufferedReader(Trickle(frame(1, b"abcdef")[:11]))))
    assert b"".join(d for _, d in truncated) == b"abc"
