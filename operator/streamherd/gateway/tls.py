"""TLS options for redis-py, with the server's name always checked unless told not to, and the
client certificate kept off the file system.

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
from typing import Any

from streamherd.gateway.endpoint import TLSMaterial


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


def tls_options(tls: TLSMaterial, keys: ClientKeyFiles | None) -> dict[str, Any]:
    """redis-py connection options for ``tls`` (``keys``: its client certificate, opened)."""
    options: dict[str, Any] = {
        "ssl_cert_reqs": "required" if tls.verify else "none",
        # Explicit: redis-py 5.x would accept a certificate issued for any name.
        "ssl_check_hostname": tls.verify,
    }
    if tls.ca_pem:
        options["ssl_ca_data"] = tls.ca_pem.decode()
    if keys is not None:
        options["ssl_certfile"], options["ssl_keyfile"] = keys.cert, keys.key
    return options
