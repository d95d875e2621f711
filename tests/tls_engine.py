"""A second Docker engine on this machine, reachable only over TLS: the remote endpoint of
the tests.

The engine has its own data, exec and pid files, its own bridge and no iptables rules, so it
never touches the first engine (never ``--bridge=none``: on start it deletes ``docker0``).
It listens on ``tcp://127.0.0.1:<free port>`` with ``--tlsverify``; the CA, the server
certificate and the client certificate are made here with ``openssl``. The build image is
copied in with ``docker save | docker load``.

``tls_engine`` is a session fixture (registered through ``pytest_plugins`` in
tests/conftest.py). Outside CI a machine that cannot run a second engine (not root, no
``dockerd``) skips; under ``CI=true`` any failure to start it fails the test.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

START_TIMEOUT = 60.0


@dataclass
class TlsEngine:
    """A running second engine and the files a client needs to reach it."""

    root: Path
    port: int
    bridge: str
    process: subprocess.Popen[bytes] | None
    ca_cert: Path
    client_cert: Path
    client_key: Path
    server_cert: Path
    server_key: Path

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.root / "dockerd.log"

    def client(self, timeout: int = 60) -> Any:
        """A ``docker.DockerClient`` for this engine that ignores the CA variables of the
        environment (the tests' own view must not depend on the code under test)."""
        import docker
        from docker.tls import TLSConfig

        tls = TLSConfig(
            client_cert=(str(self.client_cert), str(self.client_key)),
            ca_cert=str(self.ca_cert),
            verify=True,
        )
        # A fixed API version: with "auto" the client asks the engine in its constructor,
        # before trust_env can be turned off.
        client = docker.DockerClient(
            base_url=f"https://127.0.0.1:{self.port}", tls=tls, timeout=timeout, version="1.41"
        )
        client.api.trust_env = False
        return client

    def endpoint_toml(self, name: str, maxjobs: int) -> tuple[str, str]:
        """The config.toml endpoint table and the airflow-butido.toml TLS table."""
        config = (
            f'\n[docker.endpoints.{name}]\nuri = "http://127.0.0.1:{self.port}"\n'
            f'endpoint_type = "http"\nmaxjobs = {maxjobs}\n'
        )
        settings = (
            f"\n[endpoints.{name}.tls]\n"
            f'ca_cert = "{self.ca_cert}"\n'
            f'client_cert = "{self.client_cert}"\n'
            f'client_key = "{self.client_key}"\n'
        )
        return config, settings

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the engine (SIGTERM, then SIGKILL); its containers stop with it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def make_certificates(where: Path, *, ca_name: str = "ca") -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate."""
    where.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = where / f"{ca_name}-key.pem", where / f"{ca_name}.pem"
    _run("openssl", "genrsa", "-out", str(ca_key), "2048")
    _run(
        "openssl", "req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", "2",
        "-subj", f"/CN=airflow-butido test {ca_name}", "-out", str(ca_cert),
    )  # fmt: skip
    files = {"ca_cert": ca_cert}
    for role, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        key, csr, cert = where / f"{role}-key.pem", where / f"{role}.csr", where / f"{role}.pem"
        extfile = where / f"{role}.ext"
        extfile.write_text(ext)
        _run("openssl", "genrsa", "-out", str(key), "2048")
        _run("openssl", "req", "-new", "-key", str(key), "-subj", f"/CN={role}", "-out", str(csr))
        _run(
            "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey",
            str(ca_key), "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(extfile),
            "-out", str(cert),
        )  # fmt: skip
        files[f"{role}_cert"], files[f"{role}_key"] = cert, key
    return files


def _bridge_up(name: str) -> None:
    """A bridge of its own for the engine's containers (a /24 in 10.200-250.x)."""
    subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    _run("ip", "link", "add", "name", name, "type", "bridge")
    try:
        _run("ip", "addr", "add", f"{subnet}.1/24", "dev", name)
        _run("ip", "link", "set", name, "up")
    except RuntimeError:
        _bridge_down(name)
        raise


def _bridge_down(name: str) -> None:
    subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)


def start_engine(root: Path) -> TlsEngine:
    """Make certificates and a bridge under ``root`` and start the engine; RuntimeError when
    it does not come up."""
    certs = make_certificates(root / "certs")
    bridge = f"btd{uuid.uuid4().hex[:8]}"
    _bridge_up(bridge)
    engine = TlsEngine(
        root,
        _free_port(),
        bridge,
        None,
        certs["ca_cert"],
        certs["client_cert"],
        certs["client_key"],
        certs["server_cert"],
        certs["server_key"],
    )
    try:
        launch(engine)
    except (RuntimeError, OSError):
        stop_engine(engine)
        raise
    return engine


def launch(engine: TlsEngine) -> None:
    """Start (or start again) the engine's ``dockerd`` and wait until it answers."""
    root = engine.root
    with (root / "dockerd.log").open("ab") as log:
        engine.process = subprocess.Popen(
            [
                "dockerd",
                f"--data-root={root / 'data'}",
                f"--exec-root={root / 'exec'}",
                f"--pidfile={root / 'dockerd.pid'}",
                f"--bridge={engine.bridge}",
                "--iptables=false",
                "--ip-masq=false",
                "--tlsverify",
                f"--tlscacert={engine.ca_cert}",
                f"--tlscert={engine.server_cert}",
                f"--tlskey={engine.server_key}",
                f"-H=tcp://127.0.0.1:{engine.port}",
                "--shutdown-timeout=5",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest does not reach it first
        )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if not engine.running():
            tail = engine.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the second Docker engine exited on start:\n{tail}")
        try:
            client = engine.client(timeout=5)
            try:
                client.ping()
            finally:
                client.close()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                engine.stop()
                raise RuntimeError(f"the second Docker engine did not answer: {exc}") from exc
            time.sleep(0.3)


def load_image(engine: TlsEngine, image: str) -> None:
    """``docker save IMAGE | docker load`` from the first engine into ``engine``."""
    env = {
        **os.environ,
        "DOCKER_HOST": engine.uri,
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(_cert_dir(engine)),
    }
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    try:
        done = subprocess.run(
            ["docker", "load"], stdin=save.stdout, env=env, capture_output=True, text=True
        )
    finally:
        if save.stdout is not None:
            save.stdout.close()
        save.wait()
    if save.returncode != 0 or done.returncode != 0:
        raise RuntimeError(f"docker save | docker load of {image} failed: {done.stderr}")


def _cert_dir(engine: TlsEngine) -> Path:
    """The file names the docker CLI expects in DOCKER_CERT_PATH."""
    where = engine.root / "cli-certs"
    if not where.is_dir():
        where.mkdir()
        shutil.copy(engine.ca_cert, where / "ca.pem")
        shutil.copy(engine.client_cert, where / "cert.pem")
        shutil.copy(engine.client_key, where / "key.pem")
    return where


def stop_engine(engine: TlsEngine) -> None:
    """Stop the engine, delete its bridge and its directories."""
    engine.stop()
    _bridge_down(engine.bridge)
    # Containers' overlay mounts go away with the engine; whatever remains mounted under
    # the root (a crashed engine) is unmounted before the directories are removed.
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    for line in reversed(mounts):
        target = line.split()[1]
        if target.startswith(str(engine.root) + "/"):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    shutil.rmtree(engine.root, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_engine(build_image: str) -> Iterator[TlsEngine]:
    """A second Docker engine over TLS holding the build image; removed after the session."""
    tools = ("dockerd", "docker", "ip", "openssl")
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in tools):
        unavailable("a second Docker engine needs root, dockerd, docker, ip and openssl")
    root = Path(tempfile.mkdtemp(prefix="butido-engine-", dir="/tmp"))
    try:
        engine = start_engine(root)
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"the second Docker engine did not start: {exc}")
        raise AssertionError("unreachable") from exc
    try:
        load_image(engine, build_image)
    except RuntimeError as exc:
        stop_engine(engine)
        unavailable(str(exc))
    try:
        yield engine
    finally:
        with contextlib.suppress(Exception):
            stop_engine(engine)
