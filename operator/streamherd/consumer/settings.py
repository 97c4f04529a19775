"""Where a consumer reads from and who it is: the contract's environment, or explicit values.

The operator gives every consumer container (``consumers.template``; ``e2e/consumer.py`` and
README "Autoscaling" list it) ``STREAMHERD_REDIS_URL``, ``STREAMHERD_REDIS_USERNAME``,
``STREAMHERD_REDIS_PASSWORD``, ``STREAMHERD_REDIS_CA_CERT`` (the CA's PEM text, from a Secret),
``STREAMHERD_STREAM`` or ``STREAMHERD_STREAM_PATTERN``, ``STREAMHERD_GROUP`` and
``STREAMHERD_CONSUMER`` (the pod's name, through the downward API).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aredis

URL_ENV = "STREAMHERD_REDIS_URL"
USERNAME_ENV = "STREAMHERD_REDIS_USERNAME"
PASSWORD_ENV = "STREAMHERD_REDIS_PASSWORD"
CA_CERT_ENV = "STREAMHERD_REDIS_CA_CERT"
STREAM_ENV = "STREAMHERD_STREAM"
PATTERN_ENV = "STREAMHERD_STREAM_PATTERN"
GROUP_ENV = "STREAMHERD_GROUP"
CONSUMER_ENV = "STREAMHERD_CONSUMER"


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

    def __post_init__(self) -> None:
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

    def connect(self, **redis_options: Any) -> aredis.Redis:
        """An asyncio client for these settings (text replies: fields are ``str``)."""
        options: dict[str, Any] = {"decode_responses": True, **redis_options}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if self.ca_cert and urlsplit(self.redis_url).scheme == "rediss":
            if "-----BEGIN" in self.ca_cert:
                options["ssl_ca_data"] = self.ca_cert
            else:
                options["ssl_ca_certs"] = self.ca_cert
        return aredis.Redis.from_url(self.redis_url, **options)
