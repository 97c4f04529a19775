"""Durability as real redis-servers report it: AOF on and off, each fsync policy, RDB only,
a real replica attached, min-replicas-to-write, and CONFIG (or INFO) denied to an ACL user.
Every case on Redis 7.0 and 8.2; the pure assessment is checked through the gateway's real
readings, then directly for what a server cannot be made to say here (a failing AOF write)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis
from e2e.cluster.processes import wait_until
from e2e.cluster.redis import VERSIONS, RedisServer
from tests.harness import Harness

from streamherd.api.status import ConditionStatus, Reason
from streamherd.decisions.durability import Assessment, assess
from streamherd.gateway import Endpoint, RedisGateway, durability
from streamherd.observations import ServerDurability

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane

Factory = Callable[..., RedisServer]


@pytest.fixture(params=VERSIONS, ids=[f"redis{v}" for v in VERSIONS])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def read(
    server: RedisServer, username: str | None = None, password: str | None = None
) -> tuple[list[ServerDurability], Assessment]:
    gateway = RedisGateway(Endpoint(url=server.url, username=username, password=password))
    try:
        servers = await gateway.durability()
    finally:
        await gateway.close()
    return servers, assess(servers)


def start(factory: Factory, version: str, *extra: tuple[str, str]) -> RedisServer:
    return factory(version, extra=list(extra))


def with_replica(factory: Factory, version: str, primary: RedisServer) -> RedisServer:
    primary.cli("config", "set", "repl-diskless-sync-delay", "0")  # sync now, not in 5 s
    replica = factory(version, extra=[("replicaof", f"{primary.host} {primary.port}")])
    wait_until(
        lambda: (
            "slave0:" in primary.cli("info", "replication")
            and "state=online" in primary.cli("info", "replication")
        ),
        30,
        message=lambda: f"replica never online: {primary.cli('info', 'replication')}",
    )
    return replica


async def test_no_aof_no_snapshots_is_no_persistence(
    redis_server_factory: Factory, version: str
) -> None:
    server = start(redis_server_factory, version)
    (reading,), a = await read(server)
    assert reading.aof_enabled is False and reading.save == "" and reading.connected_replicas == 0
    assert a.status is ConditionStatus.FALSE and a.reason is Reason.NO_PERSISTENCE
    assert "a restart loses every stream" in a.message and "no replica is online" in a.message
    assert a.fields == {
        "appendOnly": False,
        "appendFsync": "everysec",
        "snapshots": "",
        "connectedReplicas": 0,
        "minReplicasToWrite": 0,
        "role": "master",
    }
    assert a.durable is False


async def test_rdb_only_loses_what_came_after_the_last_snapshot(
    redis_server_factory: Factory, version: str
) -> None:
    server = start(redis_server_factory, version, ("save", "900 1 60 100"))
    _, a = await read(server)
    assert a.reason is Reason.SNAPSHOTS_ONLY
    assert "RDB snapshots only (save '900 1 60 100')" in a.message
    assert "up to 900 s of them" in a.message


@pytest.mark.parametrize(
    ("policy", "reason", "words"),
    [
        ("everysec", Reason.FSYNC_EVERY_SECOND, "loses up to about 1 s of acknowledged writes"),
        ("no", Reason.FSYNC_NEVER, "the OS decides when writes reach the disk"),
        ("always", Reason.NO_REPLICA, "every acknowledged write is on disk"),
    ],
)
async def test_aof_and_its_fsync_policy(
    redis_server_factory: Factory, version: str, policy: str, reason: Reason, words: str
) -> None:
    server = start(redis_server_factory, version, ("appendonly", "yes"), ("appendfsync", policy))
    (reading,), a = await read(server)
    assert reading.aof_enabled is True and reading.appendfsync == policy
    assert a.status is ConditionStatus.FALSE and a.reason is reason
    assert words in a.message
    assert a.fields["appendOnly"] is True and a.fields["appendFsync"] == policy


async def test_aof_always_with_a_real_replica_is_durable(
    redis_server_factory: Factory, version: str
) -> None:
    primary = start(
        redis_server_factory,
        version,
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("min-replicas-to-write", "1"),
        ("min-replicas-max-lag", "5"),
    )
    replica = with_replica(redis_server_factory, version, primary)
    (reading,), a = await read(primary)
    assert reading.connected_replicas == 1 and reading.min_replicas_to_write == 1
    assert a.status is ConditionStatus.TRUE and a.reason is Reason.FSYNC_ALWAYS_WITH_REPLICA
    assert "1 replica(s) online; replication is asynchronous" in a.message
    assert "min-replicas-to-write 1: Redis refuses writes when fewer replicas are within 5 s" in (
        a.message
    )
    assert a.durable is True
    # The replica reports itself as one (and has no replica of its own).
    (seen,), _ = await read(replica)
    assert seen.role == "slave"
    # A replica that goes away: no longer durable.
    replica.stop()
    wait_until(lambda: "connected_slaves:0" in primary.cli("info", "replication"), 30)
    _, after = await read(primary)
    assert after.reason is Reason.NO_REPLICA


async def test_everysec_with_a_replica_names_the_fsync_risk_only(
    redis_server_factory: Factory, version: str
) -> None:
    primary = start(redis_server_factory, version, ("appendonly", "yes"))
    with_replica(redis_server_factory, version, primary)
    _, a = await read(primary)
    assert a.reason is Reason.FSYNC_EVERY_SECOND
    assert "no replica is online" not in a.message
    assert "min-replicas-to-write is 0: writes go on with no replica online" in a.message


NO_CONFIG = ("user", "app on >pw ~* &* +@all -config")
NO_INFO = ("user", "app on >pw ~* &* +@all -info")


async def test_config_denied_leaves_the_fsync_policy_unknown(
    redis_server_factory: Factory, version: str
) -> None:
    server = start(
        redis_server_factory, version, ("appendonly", "yes"), ("appendfsync", "always"), NO_CONFIG
    )
    (reading,), a = await read(server, "app", "pw")
    assert reading.aof_enabled is True
    assert reading.appendfsync is None and reading.save is None
    assert reading.min_replicas_to_write is None
    assert "no permissions" in (reading.config_error or "")
    # A known risk still decides (no replica); the unknown policy is said, not guessed.
    assert a.reason is Reason.NO_REPLICA
    assert "its fsync policy is not known (CONFIG GET denied" in a.message
    assert a.fields["appendFsync"] is None


async def test_config_denied_with_a_replica_is_unknown_not_durable(
    redis_server_factory: Factory, version: str
) -> None:
    primary = start(
        redis_server_factory, version, ("appendonly", "yes"), ("appendfsync", "always"), NO_CONFIG
    )
    with_replica(redis_server_factory, version, primary)
    _, a = await read(primary, "app", "pw")
    assert a.status is ConditionStatus.UNKNOWN and a.reason is Reason.UNKNOWN
    assert a.durable is None
    assert "min-replicas-to-write is not known" in a.message


async def test_config_denied_and_aof_off_cannot_tell_snapshots(
    redis_server_factory: Factory, version: str
) -> None:
    server = start(redis_server_factory, version, NO_CONFIG)
    _, a = await read(server, "app", "pw")
    assert a.reason is Reason.NO_APPEND_ONLY_FILE
    assert "the RDB snapshot rules are not known" in a.message


async def test_info_denied_is_unknown(redis_server_factory: Factory, version: str) -> None:
    # A user without INFO cannot be served at all (the gateway reads INFO server to connect:
    # Ready=False PermissionDenied); what a failed INFO reply would give is Unknown.
    server = start(redis_server_factory, version, NO_INFO)
    client = redis.Redis(host=server.host, port=server.port, username="app", password="pw")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError) as denied:
            client.info("persistence")
    finally:
        client.close()
    reading = durability.parse("a:1", [denied.value, denied.value, denied.value])
    assert reading.info_error is not None and reading.aof_enabled is None
    a = assess([reading])
    assert a.status is ConditionStatus.UNKNOWN
    assert "INFO cannot be read (" in a.message and "no permissions to run the 'info'" in a.message


async def test_every_primary_of_a_cluster_is_read(cluster_gateway: Any) -> None:
    servers = await cluster_gateway.durability()
    assert len(servers) == 3
    assert len({s.node for s in servers}) == 3
    a = assess(servers)
    assert a.reason is Reason.NO_PERSISTENCE
    assert a.message.startswith("weakest of 3 primaries, ")
    assert a.fields["servers"] == 3


def server(node: str = "a:1", **settings: Any) -> ServerDurability:
    base: dict[str, Any] = {
        "aof_enabled": True,
        "appendfsync": "always",
        "save": "",
        "aof_write_ok": True,
        "snapshot_ok": True,
        "role": "master",
        "connected_replicas": 1,
        "min_replicas_to_write": 1,
        "min_replicas_max_lag": 10,
    }
    base.update(settings)
    return ServerDurability(node, **base)


@pytest.mark.parametrize(
    ("servers", "reason"),
    [
        ([server()], Reason.FSYNC_ALWAYS_WITH_REPLICA),
        ([server(aof_write_ok=False)], Reason.PERSISTENCE_FAILING),
        ([server(aof_enabled=False, save="60 1", snapshot_ok=False)], Reason.PERSISTENCE_FAILING),
        ([server(), server("b:2", appendfsync="everysec")], Reason.FSYNC_EVERY_SECOND),
        ([server("b:2", connected_replicas=0), server(aof_enabled=False)], Reason.NO_PERSISTENCE),
        ([server(), server("b:2", connected_replicas=None)], Reason.UNKNOWN),
        ([], Reason.UNKNOWN),
    ],
)
def test_the_worst_risk_decides(servers: Sequence[ServerDurability], reason: Reason) -> None:
    assert assess(servers).reason is reason


@pytest.mark.e2e_variants("control-plane")
def test_the_operator_reports_durability_on_the_redisstream(harness: Harness) -> None:
    h = harness
    h.stream("orders")
    h.start()
    status = h.wait_status(
        "RedisStream",
        "orders",
        lambda s: any(c["type"] == "Durable" for c in s.get("conditions") or []),
    )
    durable = next(c for c in status["conditions"] if c["type"] == "Durable")
    assert (durable["status"], durable["reason"]) == ("False", "NoPersistence")
    assert status["durability"]["appendOnly"] is False
    assert status["durability"]["connectedReplicas"] == 0
    endpoint = (
        f'streamherd_endpoint_durable{{endpoint="redis://127.0.0.1:{h.redis_server.port}/0"}} 0.0'
    )
    assert endpoint in h.metrics()
    # Read once a minute, not per poll. (Sleeping to show something does not happen: the
    # operator polls every 2 s, so 5 s would see two more readings if it read per poll.)
    before = h.r.info("commandstats")["cmdstat_info"]["calls"]
    time.sleep(5)
    after = h.r.info("commandstats")["cmdstat_info"]["calls"]
    assert after - before == 1  # our own INFO commandstats

    # Redis gone: not known (and no extra connection attempt for it); back: read again.
    def durable_reason() -> str | None:
        conditions = h.status("RedisStream", "orders").get("conditions") or []
        return next((c["reason"] for c in conditions if c["type"] == "Durable"), None)

    h.redis_server.stop()
    wait_until(lambda: durable_reason() == "Unknown", 30, message="never Unknown")
    h.redis_server.start()
    wait_until(lambda: durable_reason() == "NoPersistence", 30, message="never read again")
