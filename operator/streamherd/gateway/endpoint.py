"""A Redis endpoint with its credentials resolved: everything needed to connect, nothing else.

Built without I/O from a RedisStream's ``spec.redis`` and the Secret values the caller has
read. It never prints a credential: ``display`` is host, port and database only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from streamherd.api.redisstream import RedisEndpoint, RedisMode
from streamherd.connecting import parse_address, parse_sentinel_url, sentinel_url


class SecretMissing(LookupError):
    """A referenced Secret or key does not exist (yet)."""

    def __init__(self, secret: str, key: str | None = None) -> None:
        self.secret, self.key = secret, key
        what = f"key {key!r} in Secret {secret!r}" if key else f"Secret {secret!r}"
        super().__init__(f"{what} not found")


SecretReader = Callable[[str, str], bytes]
"""(secret name, key) -> value; raises SecretMissing."""


@dataclass(frozen=True)
class TLSMaterial:
    ca_pem: bytes | None = None
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    verify: bool = True


@dataclass(frozen=True)
class SentinelMaterial:
    """Where the sentinels are and what they call the primary (mode Sentinel)."""

    master: str
    addresses: tuple[tuple[str, int], ...]
    database: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    """The sentinels' own password (the data nodes' is ``Endpoint.password``)."""

    def url(self, tls: bool) -> str:
        """The endpoint's one-line form (``connecting.sentinel_url``), in ``display`` and in
        the consumer's STREAMHERD_REDIS_URL. It carries no credential."""
        return sentinel_url(self.addresses, self.master, self.database, tls=tls)


def sentinel_from_url(url: str, *, password: str | None = None) -> SentinelMaterial | None:
    """A ``redis+sentinel://h1:26379,h2:26379/<master>[/<db>]`` URL (``rediss+`` with TLS) as
    SentinelMaterial; None for any other URL. Raises ValueError for a malformed one."""
    parsed = parse_sentinel_url(url)
    if parsed is None:
        return None
    return SentinelMaterial(
        master=parsed.master,
        addresses=parsed.addresses,
        database=parsed.database,
        password=password,
    )


@dataclass(frozen=True)
class Endpoint:
    url: str = field(repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TLSMaterial | None = None
    cluster: bool = False
    sentinel: SentinelMaterial | None = None
    """Set for mode Sentinel: ``url`` is then ``sentinel.url(...)``, not a server's."""

    @property
    def display(self) -> str:
        """host:port/db, safe for logs, events and conditions (with Sentinel: the sentinels,
        the primary's name and the database)."""
        if self.sentinel is not None:
            return self.sentinel.url(self.tls is not None)
        parts = urlsplit(self.url)
        host = parts.hostname or "?"
        port = parts.port or 6379
        db = parts.path.strip("/") or "0"
        return f"{parts.scheme}://{host}:{port}/{db}"

    @property
    def identity(self) -> str:
        """Equal for endpoints that can share one client (credentials included, hashed)."""
        digest = hashlib.sha256()
        for part in (
            self.url,
            self.username or "",
            self.password or "",
            repr(self.cluster),
            *(_tls_parts(self.tls)),
            *(_sentinel_parts(self.sentinel)),
        ):
            digest.update(part.encode() if isinstance(part, str) else part)
            digest.update(b"\0")
        return digest.hexdigest()


def _tls_parts(tls: TLSMaterial | None) -> list[bytes | str]:
    if tls is None:
        return ["no-tls"]
    return [
        tls.ca_pem or b"",
        tls.client_cert_pem or b"",
        tls.client_key_pem or b"",
        repr(tls.verify),
    ]


def _sentinel_parts(sentinel: SentinelMaterial | None) -> list[str]:
    if sentinel is None:
        return ["no-sentinel"]
    return [sentinel.url(False), sentinel.username or "", sentinel.password or ""]


def resolve_endpoint(spec: RedisEndpoint, read_secret: SecretReader) -> Endpoint:
    """The endpoint described by ``spec``; Secret values come from ``read_secret``."""
    sentinel = None
    if spec.sentinel is not None:
        config = spec.sentinel
        sentinel_password = None
        if config.password_secret_ref is not None:
            ref = config.password_secret_ref
            sentinel_password = read_secret(ref.name, ref.key).decode().rstrip("\n")
        sentinel = SentinelMaterial(
            master=config.master_name,
            addresses=tuple(parse_address(a) for a in config.addresses),
            database=config.database,
            username=config.username,
            password=sentinel_password,
        )
        url = sentinel.url(spec.tls is not None and spec.tls.enabled)
    elif spec.url_secret_ref is not None:
        url = read_secret(spec.url_secret_ref.name, spec.url_secret_ref.key).decode().strip()
    else:
        assert spec.url is not None  # the model's exactly-one rule
        url = spec.url
    password = None
    if spec.password_secret_ref is not None:
        ref = spec.password_secret_ref
        password = read_secret(ref.name, ref.key).decode().rstrip("\n")
    tls = None
    if (spec.tls is not None and spec.tls.enabled) or url.startswith("rediss://"):
        tls_spec = spec.tls
        ca = cert = key = None
        if tls_spec is not None and tls_spec.ca_secret_ref is not None:
            ca = read_secret(tls_spec.ca_secret_ref.name, tls_spec.ca_secret_ref.key)
        if tls_spec is not None and tls_spec.client_certificate_secret_ref is not None:
            name = tls_spec.client_certificate_secret_ref.name
            cert, key = read_secret(name, "tls.crt"), read_secret(name, "tls.key")
        verify = not (tls_spec is not None and tls_spec.insecure_skip_verify)
        tls = TLSMaterial(ca_pem=ca, client_cert_pem=cert, client_key_pem=key, verify=verify)
        if url.startswith("redis://"):
            url = "rediss://" + url.removeprefix("redis://")
    return Endpoint(
        url=url,
        username=spec.username,
        password=password,
        tls=tls,
        cluster=spec.mode is RedisMode.CLUSTER,
        sentinel=sentinel,
    )


def referenced_secrets(spec: RedisEndpoint) -> set[str]:
    """Names of the Secrets ``spec`` reads: fetch these, then resolve_endpoint."""
    refs = [spec.url_secret_ref, spec.password_secret_ref]
    if spec.sentinel is not None:
        refs.append(spec.sentinel.password_secret_ref)
    names = {ref.name for ref in refs if ref is not None}
    if spec.tls is not None:
        if spec.tls.ca_secret_ref is not None:
            names.add(spec.tls.ca_secret_ref.name)
        if spec.tls.client_certificate_secret_ref is not None:
            names.add(spec.tls.client_certificate_secret_ref.name)
    return names
