"""What the operator's gateway and the consumer SDK share about reaching Redis (so it imports
nothing of ours): the ``redis+sentinel://`` URL form, and TLS options for redis-py with the
server's name always checked unless told not to and the client certificate kept off the file
system.

A Sentinel endpoint in one line: ``redis+sentinel://s1:26379,s2:26379/<master>/<db>``
(``rediss+sentinel://`` with TLS). It is the RedisStream's display form and the consumer's
``STREAMHERD_REDIS_URL`` in mode Sentinel; a plain client refuses the scheme rather than
connecting somewhere wrong. It carries no credential.

Hostname verification is set explicitly: redis-py 5.x defaults ``ssl_check_hostname`` to False
(any certificate from a trusted CA is accepted, whatever name it was issued for), 6.x to True.
streamherd never depends on that default.

Python's ``ssl`` module loads a certificate chain only from a path
(``SSLContext.load_cert_chain``), and redis-py loads it again for every new connection. So the
PEM has to stay readable at a path for the client's life. On Linux it lives in an anonymous
in-memory file (``memfd_create``) read through ``/proc/self/fd/N``: nothing is written to any
file system, so a read-only root file system (a CronJob's pod) needs no writable volume, and
the key never touches a disk. Elsewhere (no memfd) it is a private temporary directory
(0700, files 0600), removed on close.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def sentinel_url(
    addresses: Sequence[tuple[str, int]], master: str, database: int, *, tls: bool
) -> str:
    hosts = ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in addresses
    )
    return f"{'rediss' if tls else 'redis'}+sentinel://{hosts}/{master}/{database}"


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class SentinelURL:
    addresses: tuple[tuple[str, int], ...]
    master: str
    database: int
    tls: bool


def parse_sentinel_url(url: str) -> SentinelURL | None:
    """A ``redis+sentinel://`` (or ``rediss+sentinel://``) URL's parts; None for any other
    URL. Raises ValueError for a malformed one."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES:
        return None
    hosts, _, path = rest.rpartition("@")[2].partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(
            f"{scheme}:// URLs name hosts, the primary and a database: "
            f"{scheme}://s1:26379,s2:26379/mymaster/0"
        )
    return SentinelURL(
        addresses=tuple(parse_address(h) for h in hosts.split(",")),
        master=parts[0],
        database=int(parts[1]) if len(parts) == 2 else 0,
        tls=scheme == "rediss+sentinel",
    )


def sentinel_options(
    username: str | None,
    password: str | None,
    *,
    socket_options: Mapping[str, Any],
    ssl: Mapping[str, Any],
) -> dict[str, Any]:
    """redis-py connection options for the sentinels themselves: their own credentials, the
    data nodes' socket timeouts and TLS (``ssl``: ``{"ssl": True, ...}`` or empty), text
    replies, no CLIENT SETINFO (one command fewer for an ACL)."""
    return {
        "username": username,
        "password": password,
        "decode_responses": True,
        "driver_info": None,
        **socket_options,
        **ssl,
    }


class ClientKeyFiles:
    """The client certificate and key at paths ``ssl.load_cert_chain`` can read, for as long
    as this object is open."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self._fds: list[int] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.in_memory = _memfd_works()
        if self.in_memory:
            self.cert, self.key = (
                self._memory("tls.crt", cert_pem),
                self._memory("tls.key", key_pem),
            )
        else:
            self._dir = tempfile.TemporaryDirectory(prefix="streamherd-tls-")
            self.cert = self._file("tls.crt", cert_pem)
            self.key = self._file("tls.key", key_pem)

    def _memory(self, name: str, data: bytes) -> str:
        fd = os.memfd_create(f"streamherd-{name}", os.MFD_CLOEXEC)
        self._fds.append(fd)
        os.write(fd, data)
        return f"/proc/self/fd/{fd}"

    def _file(self, name: str, data: bytes) -> str:
        assert self._dir is not None
        path = os.path.join(self._dir.name, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path

    @property
    def directory(self) -> str | None:
        """The temporary directory holding the files (None when they are in memory)."""
        return self._dir.name if self._dir is not None else None

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def _memfd_works() -> bool:
    if not hasattr(os, "memfd_create"):
        return False
    try:
        fd = os.memfd_create("streamherd-probe", os.MFD_CLOEXEC)
    except OSError:
        return False
    try:
        return os.path.exists(f"/proc/self/fd/{fd}")  # /proc mounted (it is in a pod)
    finally:
        os.close(fd)


def tls_options(
    *, verify: bool, ca_pem: bytes | str | None = None, keys: ClientKeyFiles | None = None
) -> dict[str, Any]:
    """redis-py connection options for TLS: the certificate and the server's name checked
    unless ``verify`` is False; ``ca_pem`` the CA bundle (PEM; the system CAs when None);
    ``keys`` the client certificate, opened."""
    options: dict[str, Any] = {
        "ssl_cert_reqs": "required" if verify else "none",
        # Explicit: redis-py 5.x would accept a certificate issued for any name.
        "ssl_check_hostname": verify,
    }
    if ca_pem:
        options["ssl_ca_data"] = ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem
    if keys is not None:
        options["ssl_certfile"], options["ssl_keyfile"] = keys.cert, keys.key
    return options
