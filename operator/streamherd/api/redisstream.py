"""RedisStream: a stream key (or a family of keys) on a Redis endpoint."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from streamherd.api.base import (
    ApiModel,
    LocalObjectReference,
    ObjectName,
    RedisKey,
    Rule,
    SecretKeyReference,
    Validated,
    exactly_one,
    immutable,
)
from streamherd.api.status import StatusModel

# A password inside the URL would end up in etcd, in `kubectl get -o yaml` and in logs.
_URL_PATTERN = r"^rediss?://[^\s]+$"
_URL_WITH_PASSWORD_CEL = r"^rediss?://[^/@]*:[^/@]*@"
# A pattern must start with a literal part (conv:*): "*" alone, or "*:x", could match every
# stream of the database, and Delete would then delete them.
_SPECIAL_FIRST = r"^[*?\[]"
_SPECIAL_FIRST_CEL = _SPECIAL_FIRST.replace("\\", "\\\\")


class RedisMode(StrEnum):
    STANDALONE = "Standalone"
    CLUSTER = "Cluster"
    SENTINEL = "Sentinel"


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    """Deleting the resource leaves Redis as it is."""
    DELETE = "Delete"
    """Deleting the resource deletes what it manages in Redis (the stream, or the group)."""


class ClientCertificateReference(ApiModel):
    """A Secret of type kubernetes.io/tls holding the client certificate and key."""

    name: ObjectName
    """Name of the Secret; its keys tls.crt and tls.key are used."""


class TLSConfig(ApiModel):
    """TLS to Redis. A rediss:// URL turns TLS on too."""

    enabled: bool = True
    """Connect with TLS."""
    ca_secret_ref: SecretKeyReference | None = None
    """CA bundle (PEM) to verify the server with; the system CAs when unset."""
    client_certificate_secret_ref: ClientCertificateReference | None = None
    """Client certificate and key for mutual TLS."""
    insecure_skip_verify: bool = False
    """Do not verify the server's certificate nor its name (condition TLSVerified=False, a Warning Event). For tests only."""


# host:port, the host a DNS name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"


class SentinelConfig(ApiModel):
    """Redis Sentinel: the sentinels to ask, and the name they know the primary by. The
    operator (and a consumer) asks them where the primary is and follows it on failover.
    TLS (spec.redis.tls) applies to the sentinels and the data nodes alike."""

    master_name: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\s/,@]+$")]
    """The name the sentinels monitor the primary under (sentinel monitor <name> ...)."""
    addresses: Annotated[
        list[Annotated[str, Field(max_length=262, pattern=_ADDRESS_PATTERN)]],
        Field(min_length=1, max_length=16),
    ]
    """Sentinels as host:port (26379 is Sentinel's usual port); any one that answers is enough, list them all."""
    database: Annotated[int, Field(ge=0, le=15)] = 0
    """Database number on the primary."""
    username: Annotated[str | None, Field(max_length=256)] = None
    """ACL user on the sentinels (sentinel's own users, not the data nodes')."""
    password_secret_ref: SecretKeyReference | None = None
    """A Secret key holding the sentinels' password (requirepass / an ACL user's, in sentinel.conf)."""


def _is_sentinel(m: RedisEndpoint) -> bool:
    return m.mode is RedisMode.SENTINEL


class RedisEndpoint(ApiModel):
    """How to reach Redis. Credentials only ever come from Secrets."""

    rules = (
        Rule(
            cel=(
                "has(self.mode) && self.mode == 'Sentinel'"
                " ? !has(self.url) && !has(self.urlSecretRef)"
                " : has(self.url) != has(self.urlSecretRef)"
            ),
            message=(
                "set exactly one of url or urlSecretRef (with mode Sentinel neither: "
                "the sentinels say where the primary is)"
            ),
            check=lambda m: (
                m.url is None and m.url_secret_ref is None
                if _is_sentinel(m)
                else (m.url is None) != (m.url_secret_ref is None)
            ),
        ),
        Rule(
            cel="(has(self.mode) && self.mode == 'Sentinel') == has(self.sentinel)",
            message="set sentinel exactly when mode is Sentinel",
            check=lambda m: _is_sentinel(m) == (m.sentinel is not None),
        ),
        Rule(
            cel=f"!has(self.url) || !self.url.matches('{_URL_WITH_PASSWORD_CEL}')",
            message="url must not contain a password: use passwordSecretRef, or urlSecretRef",
            check=lambda m: m.url is None or not _has_password(m.url),
        ),
    )

    url: Annotated[str | None, Field(max_length=1024, pattern=_URL_PATTERN)] = None
    """redis:// or rediss:// URL, optionally with a database number: redis://redis.db:6379/0 (not with mode Sentinel)."""
    url_secret_ref: SecretKeyReference | None = None
    """A Secret key holding the whole URL (it may include credentials)."""
    username: Annotated[str | None, Field(max_length=256)] = None
    """ACL user name (on the data nodes)."""
    password_secret_ref: SecretKeyReference | None = None
    """A Secret key holding the password (of the data nodes)."""
    tls: TLSConfig | None = None
    """TLS settings."""
    mode: RedisMode = RedisMode.STANDALONE
    """Standalone (including a primary behind a Service), Cluster, or Sentinel (set sentinel, not url)."""
    sentinel: SentinelConfig | None = None
    """The sentinels and the primary's name (mode Sentinel only)."""


def _has_password(url: str) -> bool:
    return re.match(_URL_WITH_PASSWORD_CEL, url) is not None


class RedisStreamSpec(ApiModel):
    """Desired state of a RedisStream."""

    rules = (
        exactly_one("key", "keyPattern", "set exactly one of key or keyPattern"),
        # Identity: the groups live on these keys on this endpoint. Changing them would orphan
        # the groups (and make Delete act on what the resource never managed).
        immutable("key", "key is immutable: create a new RedisStream instead"),
        immutable("keyPattern", "keyPattern is immutable: create a new RedisStream instead"),
        immutable("redis.url", "redis.url is immutable: create a new RedisStream instead"),
        immutable(
            "redis.urlSecretRef",
            "redis.urlSecretRef is immutable (change the Secret's value to rotate credentials)",
        ),
        immutable("redis.mode", "redis.mode is immutable: create a new RedisStream instead"),
        # With Sentinel the primary's name and the database are where the groups live; the
        # sentinels' addresses and credentials may change (sentinels get replaced).
        Rule(
            cel=(
                "!has(self.redis.sentinel) || !has(oldSelf.redis.sentinel)"
                " || (self.redis.sentinel.masterName == oldSelf.redis.sentinel.masterName"
                " && self.redis.sentinel.database == oldSelf.redis.sentinel.database)"
            ),
            message=(
                "redis.sentinel.masterName and database are immutable: create a new "
                "RedisStream instead (addresses and credentials may change)"
            ),
        ),
    )

    redis: RedisEndpoint
    """The Redis endpoint holding the stream. Where it is (url, urlSecretRef, mode; with Sentinel the master's name and database) is immutable; credentials, TLS settings and the sentinels' addresses may change."""
    key: RedisKey | None = None
    """The stream's key (immutable)."""
    key_pattern: Annotated[
        RedisKey | None,
        Validated(
            Rule(
                cel=f"!self.matches('{_SPECIAL_FIRST_CEL}')",
                message=(
                    "keyPattern must start with a literal prefix, such as conv:*: "
                    "a pattern starting with *, ? or [ could match every stream in Redis"
                ),
                check=lambda value: value is None or re.match(_SPECIAL_FIRST, value) is None,
            )
        ),
    ] = None
    """A glob (SCAN MATCH syntax) for a family of streams, such as conv:* for one stream per call. It must start with a literal prefix; immutable."""
    create_if_missing: bool = True
    """Create the stream (MKSTREAM) when a consumer group is created on a missing key."""
    retention_policy_ref: LocalObjectReference | None = None
    """A RetentionPolicy in the same namespace that bounds this stream's history."""
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    """What deleting this resource does to the stream in Redis."""


class DurabilityStatus(ApiModel):
    """Persistence and replication as Redis reports them (null: not readable)."""

    append_only: bool | None = None
    """The append-only file (AOF) is on."""
    append_fsync: Annotated[str | None, Field(max_length=16)] = None
    """AOF fsync policy: always, everysec or no."""
    snapshots: Annotated[str | None, Field(max_length=256)] = None
    """RDB snapshot rules ("3600 1 300 100"); empty when snapshots are off."""
    connected_replicas: Annotated[int | None, Field(ge=0)] = None
    """Replicas online."""
    min_replicas_to_write: Annotated[int | None, Field(ge=0)] = None
    """Redis refuses writes with fewer replicas than this within min-replicas-max-lag."""
    role: Annotated[str | None, Field(max_length=16)] = None
    """master, or slave for a replica."""
    servers: Annotated[int | None, Field(ge=1)] = None
    """Primaries read (Redis Cluster)."""


class RedisStreamStatus(StatusModel):
    """Observed state of a RedisStream."""

    length: Annotated[int | None, Field(ge=0)] = None
    """Entries in the stream (summed over matched keys for a pattern)."""
    first_entry_id: Annotated[str | None, Field(max_length=64)] = None
    """Oldest entry id (single key only)."""
    last_entry_id: Annotated[str | None, Field(max_length=64)] = None
    """Last generated entry id (single key only)."""
    groups: Annotated[int | None, Field(ge=0)] = None
    """Consumer groups on the stream (for a pattern, the most on any matched key)."""
    matched_keys: Annotated[int | None, Field(ge=0)] = None
    """Stream keys matching keyPattern."""
    discovery: Annotated[str | None, Field(max_length=256)] = None
    """How new keys of keyPattern are found: registry (written by the SDK's publish), notifications (when the server's notify-keyspace-events allows), scan (always, the slow reconcile)."""
    managed_groups: Annotated[list[str], Field(max_length=256)] = []
    """Groups that ConsumerGroups keep on these streams: deletionPolicy Delete deletes only keys that carry one of them."""
    last_polled: datetime | None = None
    """When Redis was last read."""
    durability: DurabilityStatus | None = None
    """What the endpoint keeps on a crash (see the Durable condition)."""
