"""Least privilege, run: the operator, `streamherd janitor` and `streamherd dlq` under a
redis-server ACL user with exactly the rules README "Redis permissions" documents, on Redis
7.0 and 8.2 and Valkey 9.1. Every feature works and Redis denies nothing (ACL LOG stays empty)."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import SERVERS, RedisServer
from tests.harness import Harness
from tests.security.acl import documented_rules, user_directive
from tests.sentinel.test_failover import sleeping_deployment

PASSWORD = "acl-user-pw"
OPERATOR = ["connect", "polling", "groups", "delete", "autoscaling", "janitor", "durability"]
JANITOR = ["connect", "polling", "janitor"]
DLQ = ["connect", "dlq"]


def denials(server: RedisServer) -> list[tuple[str, str]]:
    admin = redis.Redis(port=server.port, decode_responses=True)
    try:
        return [(e["reason"], e["object"]) for e in admin.acl_log()]
    finally:
        admin.close()


def test_the_readme_documents_every_feature() -> None:
    assert set(documented_rules()) >= {*OPERATOR, *JANITOR, *DLQ, "pattern"}


# 8.2 in the suite, 7.0 and Valkey under make e2e (the same commands as on 8.2; the rules on
# 7.0 are run in the suite by the retention and discovery test below)
@pytest.mark.e2e_variants("7.0", "valkey-9.1")
@pytest.mark.parametrize("version", SERVERS)
def test_the_operator_runs_under_exactly_the_documented_acl(
    harness: Harness, kubelet: Any, redis_server_factory: Callable[..., RedisServer], version: str
) -> None:
    h = harness
    h.redis_server = redis_server_factory(
        version,
        extra=[
            ("user", user_directive("streamherd", PASSWORD, OPERATOR, ["orders", "orders:dlq"]))
        ],
    )
    h.create(
        "Secret", "redis", None, data={"password": base64.b64encode(PASSWORD.encode()).decode()}
    )
    h.api.create(sleeping_deployment("workers"))
    claimers = sleeping_deployment("claimers")
    claimers["spec"]["replicas"] = 1
    h.api.create(claimers)
    h.stream(
        "orders",
        redis={
            "url": h.redis_server.url,
            "username": "streamherd",
            "passwordSecretRef": {"name": "redis", "key": "password"},
        },
        deletionPolicy="Delete",
    )
    h.group(
        "workers",
        startId="0",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={"minReplicas": 0, "maxReplicas": 2, "targetPerReplica": 100},
        recovery={
            "minIdle": "1s",
            "interval": "1s",
            "maxDeliveries": 2,
            "removeIdleConsumersAfter": "1s",
        },
        deletionPolicy="Delete",
    )
    # A consumer name that never held anything and has no pod: removed once idle 1s.
    h.r.xgroup_create("orders", "workers", "0", mkstream=True)
    h.r.xgroup_createconsumer("orders", "workers", "idle-name")
    # Strategy Claim, to the live pod of its Deployment (no autoscaling: one pod).
    h.group(
        "claimers",
        startId="0",
        consumers={"deploymentRef": {"name": "claimers"}},
        recovery={"strategy": "Claim", "minIdle": "1s", "interval": "1s"},
    )
    h.start()
    h.wait_ready("ConsumerGroup", "workers")
    h.wait_ready("ConsumerGroup", "claimers")
    status = h.wait_status("RedisStream", "orders", lambda s: s.get("durability"))
    assert status["durability"].get("appendFsync") is not None, "CONFIG GET was allowed"
    for i in range(10):
        h.r.xadd("orders", {"n": str(i)})
    # Woken from zero by the blocking XREAD.
    wait_until(
        lambda: (
            (h.api.get("deployments.apps", "default", "workers") or {})["spec"]["replicas"] >= 1
        ),
        20,
        message=lambda: f"not woken\n{h.logs()[-3000:]}",
    )
    # A consumer takes 10, finishes 5 and dies: 5 re-queued, then (taken again and left)
    # dead-lettered at their second delivery.
    taken = h.r.xreadgroup("workers", "gone-pod", {"orders": ">"}, count=10)[0][1]
    for entry_id, _ in taken[:5]:
        h.r.xack("orders", "workers", entry_id)
    h.wait_status("ConsumerGroup", "workers", lambda s: (s.get("recovered") or 0) >= 5, 30)
    wait_until(lambda: h.r.xreadgroup("workers", "gone-pod", {"orders": ">"}, count=10), 10)
    h.wait_status("ConsumerGroup", "workers", lambda s: (s.get("deadLettered") or 0) >= 5, 30)
    assert h.r.xlen("orders:dlq") == 5
    # The idle name was removed (XGROUP DELCONSUMER).
    h.wait_status("ConsumerGroup", "workers", lambda s: (s.get("consumersRemoved") or 0) >= 1, 30)
    assert "idle-name" not in {c["name"] for c in h.r.xinfo_consumers("orders", "workers")}
    # A dead claimer's entries are claimed (XCLAIM) to the live pod.
    (pod,) = [
        p["metadata"]["name"]
        for p in h.api.list("pods", "default")
        if p["metadata"]["name"].startswith("claimers-")
    ]
    h.r.xreadgroup("claimers", "gone-claimer", {"orders": ">"}, count=10)
    h.wait_status("ConsumerGroup", "claimers", lambda s: (s.get("recovered") or 0) >= 10, 30)
    assert {row["consumer"] for row in h.r.xpending_range("orders", "claimers", "-", "+", 100)} == {
        pod
    }
    assert denials(h.redis_server) == []

    # deletionPolicy Delete: the group destroyed, then the stream deleted.
    h.delete("ConsumerGroup", "claimers")
    h.delete("ConsumerGroup", "workers")
    h.wait_gone("ConsumerGroup", "workers")
    assert "workers" not in h.groups_in_redis("orders")
    h.delete("RedisStream", "orders")
    h.wait_gone("RedisStream", "orders")
    assert h.r.exists("orders") == 0
    assert denials(h.redis_server) == [], "nothing the operator did was denied"
    assert "NOPERM" not in h.logs() and "PermissionDenied" not in h.logs()


# 8.2 in the suite, 7.0 and Valkey under make e2e: the same commands, and the operator's
# test above runs its janitor (mode Operator) under the ACL on all three
@pytest.mark.e2e_variants("7.0", "valkey-9.1")
@pytest.mark.parametrize("version", SERVERS)
def test_the_janitor_command_and_the_dlq_cli_run_under_exactly_the_documented_acl(
    cluster_objects: Any,
    kubeconfig: Path,
    run_as_operator: Callable[..., OperatorProcess],
    redis_server_factory: Callable[..., RedisServer],
    version: str,
) -> None:
    keys = ["conv:*"]
    server = redis_server_factory(
        version,
        extra=[
            ("user", user_directive("janitor", PASSWORD, [*JANITOR, "pattern"], keys)),
            ("user", user_directive("dlq", PASSWORD, [*DLQ], keys)),
        ],
    )
    admin = redis.Redis(port=server.port, decode_responses=True)
    calls = ("conv:1", "conv:2", "conv:3")
    for call in calls:
        admin.xgroup_create(call, "billing", "0", mkstream=True)
        for i in range(5):
            admin.xadd(call, {"n": str(i)})
        admin.xreadgroup("billing", "gone-worker", {call: ">"}, count=5)
        admin.xreadgroup("billing", "gone-worker", {call: "0"}, count=1)  # 2nd delivery of one
    admin.xgroup_createconsumer("conv:1", "billing", "idle-name")  # held nothing: removed
    secret = {"password": base64.b64encode(PASSWORD.encode()).decode()}
    cluster_objects.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis", "namespace": "default"},
            "data": secret,
        }
    )
    redis_spec = {
        "url": server.url,
        "username": "janitor",
        "passwordSecretRef": {"name": "redis", "key": "password"},
    }
    cluster_objects.create(
        {
            "apiVersion": "streamherd.io/v1alpha1",
            "kind": "RedisStream",
            "metadata": {"name": "calls", "namespace": "default"},
            "spec": {"redis": redis_spec, "keyPattern": "conv:*"},
        }
    )
    cluster_objects.create(
        {
            "apiVersion": "streamherd.io/v1alpha1",
            "kind": "ConsumerGroup",
            "metadata": {"name": "billing", "namespace": "default"},
            "spec": {
                "streamRef": {"name": "calls"},
                "recovery": {
                    "mode": "CronJob",
                    "minIdle": "1s",
                    "maxDeliveries": 2,
                    "removeIdleConsumersAfter": "1s",
                },
            },
        }
    )
    wait_until(
        lambda: all(
            row["time_since_delivered"] >= 1000
            for call in calls
            for row in admin.xpending_range(call, "billing", "-", "+", 10)
        ),
        10,
    )
    job = run_as_operator(["streamherd", "janitor", "--namespace", "default", "--group", "billing"])
    wait_until(lambda: not job.running, 60, message=lambda: job.logs())
    assert job.returncode == 0, job.logs()
    assert "recovered 12 (re-queued 12, claimed 0), dead-lettered 3" in job.logs(), job.logs()
    assert all(admin.xlen(f"{call}:dlq") == 1 for call in calls)
    assert "idle-name" not in {c["name"] for c in admin.xinfo_consumers("conv:1", "billing")}

    def dlq(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamherd",
                "dlq",
                *args,
                "--url",
                server.url,
                "--username",
                "dlq",
                "--pattern",
                "conv:*",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**_env(), "STREAMHERD_REDIS_PASSWORD": PASSWORD},
        )
        assert done.returncode == 0, done.stderr
        return done

    assert "conv:1:dlq: 1" in dlq("list").stdout
    assert "billing" in dlq("show").stdout
    assert "copied as" in dlq("replay", "--source", "conv:1").stdout
    claimed = dlq("replay", "--source", "conv:2", "--strategy", "Claim").stdout
    assert "claimed back into the group's pending entries" in claimed
    dlq("purge", "--all", "--yes")
    assert all(admin.xlen(f"{call}:dlq") == 0 for call in calls)
    assert denials(server) == [], "nothing the janitor or the dlq CLI did was denied"
    admin.close()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.mark.parametrize("version", SERVERS)
async def test_the_sdk_runs_under_exactly_the_documented_acl(
    redis_server_factory: Callable[..., RedisServer], version: str
) -> None:
    """A pattern consumer (start-up scan, registry, history, reads, acks) and a publisher
    announcing new streams, each as its own ACL user with the README's rules."""
    import asyncio

    from streamherd.consumer import Consumer, StreamClient

    server = redis_server_factory(
        version,
        extra=[
            (
                "user",
                user_directive(
                    "consumer", PASSWORD, ["sdk-consumer"], ["conv:*", "%R~streamherd:streams"]
                ),
            ),
            (
                "user",
                user_directive(
                    "publisher", PASSWORD, ["sdk-publisher"], ["conv:*", "%W~streamherd:streams"]
                ),
            ),
        ],
    )
    admin = redis.Redis(port=server.port, decode_responses=True)
    admin.xgroup_create("conv:1", "g", "0", mkstream=True)
    admin.xadd("conv:1", {"msg": "before"})
    publisher = StreamClient.from_url(
        server.url, username="publisher", password=PASSWORD, maxlen=10_000
    )
    client = StreamClient.from_url(
        server.url, group="g", consumer="pod-1", username="consumer", password=PASSWORD
    )
    seen: set[str] = set()
    want = {"before", "conv:2-first", "conv:2-second", "conv:3-first", "conv:3-second"}
    all_seen = asyncio.Event()

    async def handle(entry: Any) -> None:
        seen.add(entry.fields["msg"])
        if want <= seen:
            all_seen.set()

    consumer = Consumer(client, pattern="conv:*", handler=handle, history_interval=0.2)
    task = asyncio.create_task(consumer.run())
    try:
        for call in ("conv:2", "conv:3"):
            await publisher.publish(call, {"msg": f"{call}-first"})
            admin.xgroup_create(call, "g", "0")  # what the operator does for a new call
            await publisher.publish(call, {"msg": f"{call}-second"})
        await asyncio.wait_for(all_seen.wait(), 20)
        assert admin.xlen("streamherd:streams") == 2, "both new streams were announced"
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
        await client.close()
        await publisher.close()
    assert all(not admin.xpending(k, "g")["pending"] for k in ("conv:1", "conv:2", "conv:3"))
    assert denials(server) == [], "nothing the SDK did was denied"
    admin.close()


# 8.2 in the suite, 7.0 under make e2e (the same cluster commands)
@pytest.mark.e2e_variants("7.0")
def test_the_operator_on_a_redis_cluster_runs_under_exactly_the_documented_acl(
    harness: Harness, kubelet: Any, redis_cluster: Any
) -> None:
    h = harness
    directive = user_directive(
        "streamherd", PASSWORD, [*OPERATOR, "cluster"], ["orders", "{orders}:dlq"]
    )
    nodes = [redis.Redis(port=n.port, decode_responses=True) for n in redis_cluster.nodes]
    for node in nodes:
        node.execute_command("ACL", "SETUSER", *directive.split())
        node.execute_command("ACL", "LOG", "RESET")
    h.create(
        "Secret", "redis", None, data={"password": base64.b64encode(PASSWORD.encode()).decode()}
    )
    h.api.create(sleeping_deployment("workers"))
    h.stream(
        "orders",
        redis={
            "url": redis_cluster.url,
            "mode": "Cluster",
            "username": "streamherd",
            "passwordSecretRef": {"name": "redis", "key": "password"},
        },
    )
    h.group(
        "workers",
        startId="0",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={"minReplicas": 0, "maxReplicas": 2, "targetPerReplica": 100},
        recovery={"minIdle": "1s", "interval": "1s", "maxDeliveries": 2},
    )
    h.start()
    try:
        h.wait_ready("ConsumerGroup", "workers")
        from redis.cluster import RedisCluster

        admin = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
        for i in range(10):
            admin.xadd("orders", {"n": str(i)})
        wait_until(
            lambda: (
                (h.api.get("deployments.apps", "default", "workers") or {})["spec"]["replicas"] >= 1
            ),
            20,
            message=lambda: f"not woken\n{h.logs()[-3000:]}",
        )
        taken = admin.xreadgroup("workers", "gone-pod", {"orders": ">"}, count=10)[0][1]
        for entry_id, _ in taken[:5]:
            admin.xack("orders", "workers", entry_id)
        h.wait_status("ConsumerGroup", "workers", lambda s: (s.get("recovered") or 0) >= 5, 30)
        wait_until(lambda: admin.xreadgroup("workers", "gone-pod", {"orders": ">"}, count=10), 10)
        h.wait_status("ConsumerGroup", "workers", lambda s: (s.get("deadLettered") or 0) >= 5, 30)
        assert admin.xlen("{orders}:dlq") == 5
        h.wait_status("RedisStream", "orders", lambda s: s.get("durability"))
        denied = [(e["reason"], e["object"]) for node in nodes for e in node.acl_log()]
        assert denied == [], "nothing the operator did on the cluster was denied"
        admin.close()
    finally:
        for node in nodes:
            node.execute_command("ACL", "DELUSER", "streamherd")
            node.close()


# 7.0 with keyevent notifications in the suite, with keyspace ones under make e2e
@pytest.mark.e2e_variants("7.0-Kn")
@pytest.mark.parametrize(
    ("version", "flags"), [*((v, "Kn") for v in SERVERS), ("7.0", "En")], ids=lambda v: str(v)
)
def test_retention_and_discovery_run_under_exactly_the_documented_acl(
    harness: Harness, redis_server_factory: Callable[..., RedisServer], version: str, flags: str
) -> None:
    """Retention (a floor trim, a finished call deleted), discovery of a new call through the
    registry and keyspace notifications, and Delete on a pattern, under the documented rules
    with the registry's and the notifications' channel."""
    h = harness
    features = [*OPERATOR, "pattern", "retention", "discovery"]
    keys = ["orders", "orders:dlq", "conv:*", "%R~streamherd:streams"]
    # Kn: a pattern subscription per key pattern; En: the database's new-key events.
    mode = "keyspace" if flags == "Kn" else "keyevent"
    channels = "&__keyspace@0__:conv:*" if flags == "Kn" else "&__keyevent@0__:new"
    h.redis_server = redis_server_factory(
        version,
        extra=[
            ("notify-keyspace-events", flags),
            ("user", f"{user_directive('streamherd', PASSWORD, features, keys)} {channels}"),
        ],
    )
    h.create(
        "Secret", "redis", None, data={"password": base64.b64encode(PASSWORD.encode()).decode()}
    )
    redis_spec = {
        "url": h.redis_server.url,
        "username": "streamherd",
        "passwordSecretRef": {"name": "redis", "key": "password"},
    }
    for i in range(10):
        h.r.xadd("orders", {"n": str(i)})
        h.r.xadd("conv:1", {"n": str(i)})
    h.stream("orders", redis=redis_spec, retentionPolicyRef={"name": "short"})
    h.stream(
        "calls",
        key=None,
        keyPattern="conv:*",
        redis=redis_spec,
        retentionPolicyRef={"name": "calls"},
        deletionPolicy="Delete",
    )
    h.group("fast", startId="0")
    h.group("brain", stream="calls", startId="0")
    h.create("RetentionPolicy", "short", {"maxLength": 3, "approximate": False, "interval": "1s"})
    h.create("RetentionPolicy", "calls", {"deleteIdleStreamsAfter": "2s", "interval": "1s"})
    h.start()
    wait_until(
        lambda: "fast" in h.groups_in_redis("orders") and "brain" in h.groups_in_redis("conv:1"), 20
    )
    for key, group in (("orders", "fast"), ("conv:1", "brain")):
        ids = [e for e, _ in h.r.xreadgroup(group, "c1", {key: ">"}, count=100)[0][1]]
        h.r.xack(key, group, *ids)
    wait_until(lambda: h.r.xlen("orders") == 3, 30, message=lambda: h.logs()[-3000:])
    wait_until(lambda: not h.r.exists("conv:1"), 30, message=lambda: h.logs()[-3000:])
    # A new call, announced in the registry as the SDK's publish does: found and grouped.
    h.r.xadd("conv:2", {"n": "0"})
    h.r.xadd("streamherd:streams", {"key": "conv:2"})
    wait_until(lambda: "brain" in h.groups_in_redis("conv:2"), 20, message=lambda: h.logs()[-3000:])
    h.wait_status(
        "RedisStream", "calls", lambda s: f"notifications ({mode}" in (s.get("discovery") or "")
    )
    # deletionPolicy Delete on the pattern: conv:2 carries our group, so it goes.
    h.delete("ConsumerGroup", "brain")
    h.wait_gone("ConsumerGroup", "brain")
    h.delete("RedisStream", "calls")
    h.wait_gone("RedisStream", "calls")
    assert not h.r.exists("conv:2")
    assert denials(h.redis_server) == [], "nothing retention or discovery did was denied"
    assert "NOPERM" not in h.logs()
