"""Where a consumer reads from and who it is: the contract's environment, or explicit values.

The operator gives every consumer container (``consumers.template``; ``e2e/consumer.py`` and
README "Autoscaling" list it) ``STREAMHERD_REDIS_URL``, ``STREAMHERD_REDIS_USERNAME``,
``STREAMHERD_REDIS_PASSWORD``, ``STREAMHERD_REDIS_CA_CERT`` (the CA's PEM text, from a Secret),
``STREAMHERD_STREAM`` or ``STREAMHERD_STREAM_PATTERN``, ``STREAMHERD_GROUP`` and
``STREAMHERD_CONSUMER`` (the pod's name, through the downward API), and
``STREAMHERD_REDIS_MODE`` (the RedisStream's ``spec.redis.mode``: ``Standalone``, the default,
or ``Cluster``, where the URL names any node of a Redis Cluster).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster

URL_ENV = "STREAMHERD_REDIS_URL"
USERNAME_ENV = "STREAMHERD_REDIS_USERNAME"
PASSWORD_ENV = "STREAMHERD_REDIS_PASSWORD"
CA_CERT_ENV = "STREAMHERD_REDIS_CA_CERT"
STREAM_ENV = "STREAMHERD_STREAM"
PATTERN_ENV = "STREAMHERD_STREAM_PATTERN"
GROUP_ENV = "STREAMHERD_GROUP"
CONSUMER_ENV = "STREAMHERD_CONSUMER"
MODE_ENV = "STREAMHERD_REDIS_MODE"

STANDALONE = "Standalone"
"""One Redis server (a primary, or one behind a Service): any keys in one command."""
CLUSTER = "Cluster"
"""Redis Cluster: the URL names any node; a command's keys must share a hash slot."""
MODES = (STANDALONE, CLUSTER)

AnyRedis = aredis.Redis | RedisCluster
"""The clients ``connect`` makes, one per mode."""


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
    """``Standalone`` or ``Cluster`` (``mode`` of the RedisStream; any letter case)."""

    def __post_init__(self) -> None:
        known = {m.lower(): m for m in MODES}
        if (self.mode or "").lower() not in known:
            raise SettingsError(
                f"{MODE_ENV}={self.mode!r} is not a mode: use one of {', '.join(MODES)}"
            )
        object.__setattr__(self, "mode", known[self.mode.lower()])
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
        values: dict[str, Any] = {
            "redis_url": env.get(URL_ENV),
            "group": env.get(GROUP_ENV),
            "consumer": env.get(CONSUMER_ENV) or env.get("POD_NAME") or socket.gethostname(),
            "stream": env.get(STREAM_ENV) or None,
            "pattern": env.get(PATTERN_ENV) or None,
            "username": env.get(USERNAME_ENV) or None,
            "password": env.get(PASSWORD_ENV) or None,
            "ca_cert": env.get(CA_CERT_ENV) or None,
            "mode": env.get(MODE_ENV) or STANDALONE,
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
        """``redis://host:port/db``, without credentials: what logs may show."""
        parts = urlsplit(self.redis_url)
        host = parts.hostname or "localhost"
        return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path or '/0'}"

    @property
    def cluster(self) -> bool:
        return self.mode == CLUSTER

    def connect(self, **redis_options: Any) -> AnyRedis:
        """An asyncio client for these settings (text replies: fields are ``str``): a
        ``RedisCluster`` in mode Cluster (it learns the other nodes from the one named). Its
        connections carry the consumer's name (``CLIENT LIST`` shows which pod holds which)."""
        options: dict[str, Any] = {
            "decode_responses": True,
            "client_name": client_name(self.consumer),
            **redis_options,
        }
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if self.ca_cert and urlsplit(self.redis_url).scheme == "rediss":
            if "-----BEGIN" in self.ca_cert:
                options["ssl_ca_data"] = self.ca_cert
            else:
                options["ssl_ca_certs"] = self.ca_cert
        return connect(self.redis_url, self.mode, **options)


def client_name(consumer: str) -> str:
    """``CLIENT SETNAME`` takes no spaces or newlines: a pod's name has none."""
    return "".join(c if c.isprintable() and not c.isspace() else "-" for c in consumer)


def connect(url: str, mode: str = STANDALONE, **options: Any) -> AnyRedis:
    """``redis.asyncio.Redis`` or, for mode Cluster, ``RedisCluster`` from ``url``. A new
    mode (Sentinel, say) is one more branch here: the readers only ask whether the client is
    a cluster (``topology.is_cluster``)."""
    if mode.lower() == CLUSTER.lower():
        return RedisCluster.from_url(url, **options)
    if mode.lower() != STANDALONE.lower():
        raise SettingsError(f"{mode!r} is not a mode: use one of {', '.join(MODES)}")
    return aredis.Redis.from_url(url, **options)
