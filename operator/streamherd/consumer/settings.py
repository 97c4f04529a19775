"""Where a consumer reads from and who it is: the contract's environment, or explicit values.

The operator gives every consumer container (``consumers.template``; ``e2e/consumer.py`` and
README "Autoscaling" list it) ``STREAMHERD_REDIS_URL``, ``STREAMHERD_REDIS_USERNAME``,
``STREAMHERD_REDIS_PASSWORD``, ``STREAMHERD_REDIS_CA_CERT`` (the CA's PEM text, from a Secret),
``STREAMHERD_REDIS_CLIENT_CERT``/``_KEY`` (mutual TLS, PEM), ``STREAMHERD_REDIS_TLS_INSECURE``,
with Sentinel a ``redis+sentinel://`` URL and ``STREAMHERD_REDIS_SENTINEL_USERNAME``/
``_PASSWORD``, ``STREAMHERD_STREAM`` or ``STREAMHERD_STREAM_PATTERN``, ``STREAMHERD_GROUP`` and
``STREAMHERD_CONSUMER`` (the pod's name, through the downward API), and
``STREAMHERD_REDIS_MODE`` (the RedisStream's ``spec.redis.mode``: ``Standalone``, the default,
``Cluster``, where the URL names any node of a Redis Cluster, or ``Sentinel``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from streamherd.connecting import (
    ClientKeyFiles,
    parse_sentinel_url,
    sentinel_options,
    tls_options,
)

_typed_sentinel: Callable[..., Sentinel] = Sentinel
"""``Sentinel``, called through a typed name: redis-py types its constructor from 8.2 on and
not before, so a ``type: ignore`` on the call is an error under one of them (mypy strict)."""

URL_ENV = "STREAMHERD_REDIS_URL"
USERNAME_ENV = "STREAMHERD_REDIS_USERNAME"
PASSWORD_ENV = "STREAMHERD_REDIS_PASSWORD"
CA_CERT_ENV = "STREAMHERD_REDIS_CA_CERT"
STREAM_ENV = "STREAMHERD_STREAM"
PATTERN_ENV = "STREAMHERD_STREAM_PATTERN"
GROUP_ENV = "STREAMHERD_GROUP"
CONSUMER_ENV = "STREAMHERD_CONSUMER"
MODE_ENV = "STREAMHERD_REDIS_MODE"
CLIENT_CERT_ENV = "STREAMHERD_REDIS_CLIENT_CERT"
CLIENT_KEY_ENV = "STREAMHERD_REDIS_CLIENT_KEY"
TLS_INSECURE_ENV = "STREAMHERD_REDIS_TLS_INSECURE"
TLS_ENV = "STREAMHERD_REDIS_TLS"
SENTINEL_USERNAME_ENV = "STREAMHERD_REDIS_SENTINEL_USERNAME"
SENTINEL_PASSWORD_ENV = "STREAMHERD_REDIS_SENTINEL_PASSWORD"

STANDALONE = "Standalone"
"""One Redis server (a primary, or one behind a Service): any keys in one command."""
CLUSTER = "Cluster"
"""Redis Cluster: the URL names any node; a command's keys must share a hash slot."""
SENTINEL = "Sentinel"
"""A primary the sentinels name: the URL is ``redis+sentinel://s1:26379,.../<master>/<db>``."""
MODES = (STANDALONE, CLUSTER, SENTINEL)

AnyRedis = aredis.Redis | RedisCluster
"""The clients ``connect`` makes, one per mode."""

TEXT: dict[str, Any] = {"decode_responses": True, "encoding_errors": "surrogateescape"}
"""How the SDK's connections decode replies: text, and bytes that are not UTF-8 (a binary
field name or value) as lone surrogates (Python's ``surrogateescape``, PEP 383) instead of a
``UnicodeDecodeError`` that fails the whole read, every time it is retried.
``value.encode("utf-8", "surrogateescape")`` gives back the exact bytes (``Entry.bytes``);
what is sent is encoded the same way, so such a value published again is the same bytes."""


def require_text(redis: AnyRedis) -> None:
    """A client that reads entries must decode as ``TEXT``: one that does not decode hands
    out bytes the SDK cannot match, and one that decodes strictly fails a whole read on one
    binary entry (and on every retry: its consumer is stuck). Raises ValueError."""
    encoder = redis.get_encoder()
    if not encoder.decode_responses or encoder.encoding_errors != TEXT["encoding_errors"]:
        raise ValueError(
            "the SDK reads entries with a client that decodes text with "
            'decode_responses=True, encoding_errors="surrogateescape" (what '
            "StreamClient.from_url and Settings.connect make): a binary entry would fail "
            "every read of a strict client"
        )


class SettingsError(ValueError):
    """The environment (or the arguments) do not say what to read: a message saying what to set."""


@dataclass(frozen=True)
class Settings:
    """One consumer's connection, stream(s), group and name. Credentials never appear in its
    ``repr`` (nor does the URL, which may carry them): use ``endpoint`` in logs."""

    redis_url: str = field(repr=False)
    group: str
    consumer: str
    stream: str | None = None
    """One stream key, or"""
    pattern: str | None = None
    """a glob over stream keys (one stream per call): every matching stream is read."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_cert: str | None = field(default=None, repr=False)
    """The CA certificate for ``rediss://``: PEM text (what the operator injects), or a path."""
    mode: str = STANDALONE
    """``Standalone``, ``Cluster`` or ``Sentinel`` (``mode`` of the RedisStream; any letter
    case). A ``redis+sentinel://`` URL is Sentinel whatever it says."""
    client_cert: str | None = field(default=None, repr=False)
    """Mutual TLS: the client certificate, PEM text (what the operator injects) or a path."""
    client_key: str | None = field(default=None, repr=False)
    """Its private key, PEM text or a path (kept in memory, never written to disk)."""
    tls_insecure: bool = False
    """Do not verify the server's certificate nor its name (insecureSkipVerify)."""
    sentinel_username: str | None = None
    """With a ``redis+sentinel://`` URL: the sentinels' own ACL user and password."""
    sentinel_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        known = {m.lower(): m for m in MODES}
        if (self.mode or "").lower() not in known:
            raise SettingsError(
                f"{MODE_ENV}={self.mode!r} is not a mode: use one of {', '.join(MODES)}"
            )
        object.__setattr__(self, "mode", known[self.mode.lower()])
        if self.redis_url and parse_sentinel_url(self.redis_url) is not None:
            object.__setattr__(self, "mode", SENTINEL)
        elif self.mode == SENTINEL:
            raise SettingsError(f"{MODE_ENV} is Sentinel: {URL_ENV} must be redis+sentinel://")
        if (self.stream is None) == (self.pattern is None):
            raise SettingsError(
                f"set exactly one of {STREAM_ENV} (a key) and {PATTERN_ENV} (a pattern)"
            )
        if not self.group:
            raise SettingsError(f"{GROUP_ENV} is empty: name the consumer group")
        if not self.consumer:
            raise SettingsError(f"{CONSUMER_ENV} is empty: name the consumer (its pod's name)")
        if not self.redis_url:
            raise SettingsError(f"{URL_ENV} is empty: redis://host:port/db")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The contract's environment; ``overrides`` replace single values. The consumer's
        name falls back to ``POD_NAME``, then the host name (a pod's host name is its name)."""
        env = os.environ if environ is None else environ
        url = env.get(URL_ENV)
        if url and (env.get(TLS_ENV) or "").lower() == "true" and url.startswith("redis://"):
            url = "rediss://" + url.removeprefix("redis://")  # TLS on, as the operator connects
        values: dict[str, Any] = {
            "redis_url": url,
            "group": env.get(GROUP_ENV),
            "consumer": env.get(CONSUMER_ENV) or env.get("POD_NAME") or socket.gethostname(),
            "stream": env.get(STREAM_ENV) or None,
            "pattern": env.get(PATTERN_ENV) or None,
            "username": env.get(USERNAME_ENV) or None,
            "password": env.get(PASSWORD_ENV) or None,
            "ca_cert": env.get(CA_CERT_ENV) or None,
            "mode": env.get(MODE_ENV) or STANDALONE,
            "client_cert": env.get(CLIENT_CERT_ENV) or None,
            "client_key": env.get(CLIENT_KEY_ENV) or None,
            "tls_insecure": (env.get(TLS_INSECURE_ENV) or "").lower() == "true",
            "sentinel_username": env.get(SENTINEL_USERNAME_ENV) or None,
            "sentinel_password": env.get(SENTINEL_PASSWORD_ENV) or None,
        }
        if "stream" in overrides or "pattern" in overrides:
            values["stream"] = values["pattern"] = None
        values.update(overrides)
        if not values["redis_url"]:
            raise SettingsError(f"{URL_ENV} is not set: redis://host:port/db of the streams")
        if not values["group"]:
            raise SettingsError(f"{GROUP_ENV} is not set: the consumer group to read as")
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def endpoint(self) -> str:
        """``redis://host:port/db``, without credentials: what logs may show (with Sentinel:
        the sentinels, the primary's name and the database)."""
        if parse_sentinel_url(self.redis_url) is not None:
            scheme, _, rest = self.redis_url.partition("://")
            return f"{scheme}://{rest.rpartition('@')[2]}"
        parts = urlsplit(self.redis_url)
        host = parts.hostname or "localhost"
        return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path or '/0'}"

    @property
    def cluster(self) -> bool:
        return self.mode == CLUSTER

    def connect(self, **redis_options: Any) -> AnyRedis:
        """An asyncio client for these settings (text replies, ``TEXT``: fields are ``str``): a
        ``RedisCluster`` in mode Cluster (it learns the other nodes from the one named); with
        Sentinel a client of the primary the sentinels name, which reconnects to the new
        primary after a failover. Its connections carry the consumer's name (``CLIENT LIST``
        shows which pod holds which) and send no ``CLIENT SETINFO`` (one command fewer for the
        ACL, README "Redis permissions")."""
        options: dict[str, Any] = {
            **TEXT,
            "client_name": client_name(self.consumer),
            "driver_info": None,
            **redis_options,
        }
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        sentinel = parse_sentinel_url(self.redis_url)
        keys = None
        tls = sentinel.tls if sentinel else urlsplit(self.redis_url).scheme == "rediss"
        if tls:
            keys = self._client_keys()
            options.update(self._tls_options(keys))
        client: AnyRedis
        if sentinel is None:
            client = connect(self.redis_url, self.mode, **options)
        else:
            ssl = {"ssl": True, **self._tls_options(keys)} if tls else {}
            sockets = {k: v for k, v in options.items() if k.startswith("socket_")}
            own = sentinel_options(
                self.sentinel_username, self.sentinel_password, socket_options=sockets, ssl=ssl
            )
            sentinels = _typed_sentinel(list(sentinel.addresses), sentinel_kwargs=own)
            client = sentinels.master_for(
                sentinel.master, db=sentinel.database, **{**options, **ssl}
            )
        client.streamherd_client_keys = keys  # type: ignore[union-attr] # lives as long
        return client

    def _tls_options(self, keys: ClientKeyFiles | None) -> dict[str, Any]:
        options = tls_options(verify=not self.tls_insecure, keys=keys)
        if self.ca_cert and "-----BEGIN" in self.ca_cert:
            options["ssl_ca_data"] = self.ca_cert
        elif self.ca_cert:
            options["ssl_ca_certs"] = self.ca_cert
        if keys is None and self.client_cert and self.client_key:  # paths
            options["ssl_certfile"], options["ssl_keyfile"] = self.client_cert, self.client_key
        return options

    def _client_keys(self) -> ClientKeyFiles | None:
        """A PEM client certificate and key at readable paths (in memory); None for paths."""
        if not (self.client_cert and self.client_key) or "-----BEGIN" not in self.client_key:
            return None
        return ClientKeyFiles(self.client_cert.encode(), self.client_key.encode())


def client_name(consumer: str) -> str:
    """``CLIENT SETNAME`` takes no spaces or newlines: a pod's name has none."""
    return "".join(c if c.isprintable() and not c.isspace() else "-" for c in consumer)


def connect(url: str, mode: str = STANDALONE, **options: Any) -> AnyRedis:
    """``redis.asyncio.Redis`` or, for mode Cluster, ``RedisCluster`` from ``url`` (Sentinel
    goes through ``Settings.connect``: its URL names the sentinels). The readers only ask
    whether the client is a cluster (``topology.is_cluster``)."""
    if mode.lower() == CLUSTER.lower():
        return RedisCluster.from_url(url, **options)
    if mode.lower() != STANDALONE.lower():
        raise SettingsError(f"{mode!r} is not a mode: use one of {', '.join(MODES)}")
    return aredis.Redis.from_url(url, **options)
