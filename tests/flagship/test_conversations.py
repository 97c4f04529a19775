"""The flagship example end to end (manifests/examples/conversations.yaml): brain, compliance
and crm read every call stream conv:*, strategy Claim, consumers written with the SDK and run
by the kubelet. Calls come in; each group's busiest pod is SIGKILLed in turn; every call has
one poison event. Every event is processed by every group, checked by (stream, origin id):
at least once, and more than once only when a killed pod had processed it without
acknowledging it (at-least-once), never because the janitor handed out work twice; each
poison event is dead-lettered exactly once for each group, and for that group only.

On one Redis server (both strategies) and, as the example says (``mode: Cluster``), on a
3-primary Redis Cluster: the call streams spread over every node, the operator polling,
creating groups and recovering per node, the SDK consumers reading per hash slot.

And the seed article's plain loop (XREADGROUP >, process, XACK, a failure left pending),
unchanged, on a single-group stream under Requeue: a killed pod's stranded work is redone.
"""

from __future__ import annotations

import copy
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from e2e import consumer
from e2e.cluster.processes import wait_until
from e2e.cluster.redis import RedisCluster
from tests.harness import Harness

from streamherd.consumer import SyncStreamClient
from streamherd.fields import GROUP_FIELD, ORIGIN_ID_FIELD

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "conversations.yaml"
CALLS, EVENTS = 6, 25
GROUPS = {"brain": "brain", "compliance": "compliance", "crm": "crm-enricher"}
"""ConsumerGroup name -> Redis group name."""
KNOBS = {"WORK_MS": "30", "BATCH": "5", "MODE": "history", "PROCESSED_LOG": "1"}


@dataclass
class Redis:
    """Where the example's streams are: the harness's redis-server, or a Redis Cluster."""

    url: str
    mode: str
    """The RedisStream's spec.redis.mode."""
    r: Any
    """A blocking client for checks: redis.Redis or redis.RedisCluster."""
    dead_letters: str
    """The pattern of the call streams' default dead-letter keys."""


@pytest.fixture(params=["standalone", "cluster"])
def where(request: pytest.FixtureRequest, harness: Harness) -> Iterator[Redis]:
    if request.param == "standalone":
        yield Redis(harness.redis_server.url, "Standalone", harness.r, "conv:*:dlq")
        return
    cluster = RedisCluster(version="8.2").start()
    client = redis.RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        yield Redis(cluster.url, "Cluster", client, "{conv:*}:dlq")  # in each stream's slot
    finally:
        client.close()
        cluster.cleanup()


def example(h: Harness, strategy: str, where: Redis) -> list[dict[str, Any]]:
    """The example's RedisStream and ConsumerGroups, made runnable here: a local Redis, SDK
    consumers (e2e/consumer.py), one strategy, short recovery intervals, two replicas each."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] != "RetentionPolicy"]
    out: list[dict[str, Any]] = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = h.namespace
        spec = doc["spec"]
        spec.pop("retentionPolicyRef", None)
        if doc["kind"] == "RedisStream":
            spec["redis"] = {"url": where.url, "mode": where.mode}
        else:
            spec["recovery"] = {
                **spec.get("recovery", {}),
                "strategy": strategy,
                "minIdle": "5s",
                "interval": "1s",
                "maxDeliveries": 3,
            }
            spec["autoscaling"] = {"minReplicas": 2, "maxReplicas": 2}
            if "template" in spec["consumers"]:  # crm: a Deployment streamherd owns
                (container,) = spec["consumers"]["template"]["spec"]["containers"]
                container.update(
                    image=h.consumer_image,
                    command=["python", "-m", "e2e.consumer"],
                    env=[{"name": k, "value": v} for k, v in KNOBS.items()],
                )
        out.append(doc)
    return out


@pytest.mark.parametrize(
    ("strategy", "where"),
    [("Claim", "standalone"), ("Requeue", "standalone"), ("Claim", "cluster")],
    indirect=["where"],
)
# In the suite: Claim on a cluster; Requeue has the seed-loop test below, Claim on one server
# the flagship scenario (tests/flagship/test_scenarios.py).
@pytest.mark.e2e_variants("control-plane", "Requeue", "Claim-standalone")
def test_three_groups_on_every_call_survive_kills_and_poison(
    harness: Harness, kubelet: Any, strategy: str, where: Redis
) -> None:
    """Claim (the example's choice for SDK consumers): ids kept, nothing copied. Requeue:
    copies tagged with their group, which the other groups' SDK consumers acknowledge
    without processing them. On the cluster: Claim, the example's own setting."""
    h, r = harness, where.r
    for name, deployment in (("brain", "conversation-brain"), ("compliance", "compliance-scanner")):
        body = consumer.deployment(
            deployment,
            redis_url=h.pod_redis_url if where.mode == "Standalone" else where.url,
            mode=where.mode,
            group=GROUPS[name],
            pattern="conv:*",
            replicas=2,
            image=h.consumer_image,
            namespace=h.namespace,
            env=KNOBS,
        )
        h.api.create(body)
    for doc in example(h, strategy, where):
        h.api.create(doc)
    h.start()
    for name in GROUPS:
        h.wait_ready("ConsumerGroup", name, timeout=30)
    wait_until(lambda: len(kubelet.processes(h.namespace)) == 6, 30, message="six consumer pods")

    publisher = SyncStreamClient(where.url, mode=where.mode, maxlen=10_000)
    produced: dict[str, list[str]] = defaultdict(list)
    poison: dict[str, str] = {}
    killed: set[str] = set()
    try:
        for turn in range(EVENTS):
            for call in range(CALLS):
                key = f"conv:{call}"
                if turn == EVENTS // 2:
                    poison[key] = publisher.publish(key, {"msg": f"{key}/poison", "poison": "1"})
                produced[key].append(publisher.publish(key, {"msg": f"{key}/{turn}"}))
            if turn in (6, 12, 18):  # brain's busiest pod, then compliance's, then crm's
                name = list(GROUPS)[(turn - 6) // 6]
                killed.add(kill_busiest(h, r, kubelet, GROUPS[name]))
            time.sleep(0.05)
    finally:
        publisher.close()

    expected = {(key, i) for key, ids in produced.items() for i in ids}
    if where.mode == "Cluster":
        nodes = {r.get_node_from_key(key).name for key in produced}
        assert len(nodes) == 3, f"the calls are on every node: {nodes}"
    for group in GROUPS.values():
        wait_until(
            lambda group=group: finished(where, group, expected, poison),
            90,
            interval=0.5,
            message=lambda group=group: (
                f"{group}: processed {len(processed(r, group))}/{len(expected)}, "
                f"dead-lettered {dead_letters(where, group)}\n{h.logs()[-3000:]}"
            ),
        )
    for group in GROUPS.values():
        log = processed(r, group)
        assert {(key, origin) for key, origin, _, _ in log} == expected, f"{group}: nothing lost"
        times = Counter((key, origin) for key, origin, _, _ in log)
        for (key, origin), n in times.items():
            if n > 1:  # at-least-once: only work a killed pod had not acknowledged
                by = [who for k, o, who, _ in log if (k, o) == (key, origin)]
                assert set(by[:-1]) <= killed, f"{group}: {key} {origin} processed by {by}"
        if strategy == "Claim":
            assert all(entry == origin for _, origin, _, entry in log), "ids kept: no copies"
        assert dead_letters(where, group) == sorted(poison.items()), f"{group}: poison once each"
    for name in GROUPS:  # the operator's word on isolation, given before any copy is made
        isolated = condition(h, name, "RecoveryIsolated")
        if strategy == "Claim":
            assert isolated["status"] == "True", isolated
        else:  # SDK consumers ignore other groups' copies; a plain loop would not: a warning
            assert (isolated["status"], isolated["reason"]) == ("False", "SharedStream")
            assert all(g in isolated["message"] for g in GROUPS.values() if g != GROUPS[name])
    if strategy == "Claim":
        for key, ids in produced.items():
            assert r.xlen(key) == len(ids) + 1, f"{key}: nothing copied into the shared stream"
    assert len(killed) == 3


@pytest.mark.e2e_variants("control-plane")
@pytest.mark.parametrize("where", ["cluster"], indirect=True)
def test_brain_wakes_from_zero_on_a_cluster_of_many_calls(
    harness: Harness, kubelet: Any, where: Redis
) -> None:
    """brain at zero over 400 quiet calls on every node of the cluster (over 100 hash slots
    per node): while it sleeps the operator's wake-up read opens no connections (it used to
    block one per slot, failing with MaxConnectionsError past 100 per node and retrying every
    second: hundreds of connections a second); the first new event wakes it and a pod reads
    it."""
    h, r = harness, where.r
    pipe = r.pipeline()
    for call in range(400):
        pipe.xadd(f"conv:{call}", {"msg": "hello"})
    pipe.execute()
    h.api.create(
        consumer.deployment(
            "conversation-brain",
            redis_url=where.url,
            mode=where.mode,
            group="brain",
            pattern="conv:*",
            image=h.consumer_image,
            namespace=h.namespace,
            env={"WORK_MS": "1"},
        )
    )
    h.stream(
        "conversations", key=None, keyPattern="conv:*", redis={"url": where.url, "mode": where.mode}
    )
    h.group(
        "brain",
        stream="conversations",
        startId="0",
        consumers={"deploymentRef": {"name": "conversation-brain"}},
        autoscaling={
            "minReplicas": 0,
            "maxReplicas": 2,
            # Polls of its own every 5 s (per-group schedules): its sleep is shown by the
            # connection count below, not by a long interval.
            "pollInterval": "5s",
            "idleBeforeZero": "2s",
        },
    )
    h.start()
    h.wait_ready("ConsumerGroup", "brain", timeout=30)
    # It wakes for the 400 hellos, reads them, and goes back to sleep.
    wait_until(
        lambda: (
            r.scard("processed:brain") == 1
            and h.status("ConsumerGroup", "brain").get("backlog") == 0
        ),
        60,
    )
    wait_until(
        lambda: (
            h.status("ConsumerGroup", "brain").get("replicas") == 0
            and not kubelet.processes(h.namespace)
        ),
        60,
        message="never back to zero",
    )
    before = connections_received(r)
    time.sleep(3)  # brain asleep: showing what does not happen (no connection churn)
    opened = {n: c - before[n] for n, c in connections_received(r).items()}
    assert max(opened.values()) <= 2, f"connections opened per node while asleep: {opened}"
    r.xadd("conv:399", {"msg": "the caller speaks"})
    wait_until(lambda: kubelet.processes(h.namespace), 20, message="not woken")
    wait_until(lambda: r.sismember("processed:brain", "the caller speaks"), 30)
    # Woken for the hellos, then for the caller (Events are queued: wait for the second).
    wait_until(
        lambda: len([e for e in h.events("brain") if e[1] == "WokeUp"]) >= 2,
        15,
        message=lambda: f"not woken twice: {h.events('brain')}",
    )
    woken = [reason for _, reason, _ in h.events("brain") if reason == "WokeUp"]
    assert len(woken) == 2, "woken for the hellos, then for the caller"


def connections_received(r: Any) -> dict[str, int]:
    return {
        node.name: int(r.info("stats", target_nodes=node)["total_connections_received"])
        for node in r.get_primaries()
    }


def kill_busiest(h: Harness, r: Any, kubelet: Any, group: str) -> str:
    """SIGKILL the running pod of ``group`` holding the most pending entries (mid-batch), and
    delete it: the ReplicaSet replaces it under a new name."""

    def busiest() -> str | None:
        running = kubelet.processes(h.namespace)
        held: Counter[str] = Counter()
        for key in r.scan_iter(match="conv:*", _type="stream"):
            try:
                summary = r.xpending(key, group)
            except Exception:
                continue
            for c in summary.get("consumers") or []:
                if c["name"] in running:
                    held[c["name"]] += int(c["pending"])
        return held.most_common(1)[0][0] if held else None

    victim = wait_until(busiest, 20, interval=0.01, message=f"no {group} pod holds work")
    kubelet.kill(victim, h.namespace)
    h.api.delete("pods", h.namespace, victim, gracePeriodSeconds=0)
    return victim


def condition(h: Harness, name: str, kind: str) -> dict[str, Any]:
    conditions = h.status("ConsumerGroup", name).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def processed(r: Any, group: str) -> list[tuple[str, str, str, str]]:
    """(stream, origin id, consumer, entry id) per processing, in order."""
    rows = r.lrange(f"processed-log:{group}", 0, -1)
    return [tuple(row.split(" ")) for row in rows]  # type: ignore[misc]


def dead_letters(where: Redis, group: str) -> list[tuple[str, str]]:
    """(stream, origin id) of the dead-letter records for ``group``."""
    out = []
    for key in where.r.scan_iter(match=where.dead_letters, _type="stream"):
        for _, record in where.r.xrange(key):
            if record.get(GROUP_FIELD) == group:
                out.append((record["streamherd-stream"], record[ORIGIN_ID_FIELD]))
    return sorted(out)


def finished(
    where: Redis, group: str, expected: set[tuple[str, str]], poison: dict[str, str]
) -> bool:
    """Everything processed or dead-lettered, and nothing left pending (copies for other
    groups acknowledged, duplicates of killed pods' work acknowledged)."""
    done = {(key, origin) for key, origin, _, _ in processed(where.r, group)}
    if not done >= expected or len(dead_letters(where, group)) < len(poison):
        return False
    return all(where.r.xpending(key, group)["pending"] == 0 for key in poison)


@pytest.mark.e2e_variants("control-plane")
def test_the_seed_plain_loop_gets_its_stranded_work_back_under_requeue(
    harness: Harness, kubelet: Any
) -> None:
    h = harness
    h.consumer_deployment("workers", 2, "fulfilment", WORK_MS="30", BATCH="10", MODE="plain")
    h.stream("orders")
    h.group(
        "fulfilment",
        startId="0",
        consumers={"deploymentRef": {"name": "workers"}},
        recovery={"strategy": "Requeue", "minIdle": "2s", "interval": "1s", "maxDeliveries": 2},
    )
    h.start()
    h.wait_ready("ConsumerGroup", "fulfilment", timeout=30)
    wait_until(lambda: len(kubelet.processes(h.namespace)) == 2, 30)
    pipe = h.r.pipeline(transaction=False)
    for i in range(200):
        pipe.xadd("orders", {"msg": f"m{i}"})
    pipe.xadd("orders", {"msg": "bad", "poison": "1"})
    *_, bad = pipe.execute()

    def busy() -> str | None:
        running = kubelet.processes(h.namespace)
        held = {c["name"]: c["pending"] for c in h.r.xinfo_consumers("orders", "fulfilment")}
        return next((p for p, n in held.items() if n >= 5 and p in running), None)

    victim = wait_until(busy, 20, interval=0.01, message="no pod held a batch")
    kubelet.kill(victim, h.namespace)
    h.api.delete("pods", h.namespace, victim, gracePeriodSeconds=0)
    expected = {f"m{i}" for i in range(200)}
    wait_until(
        lambda: h.r.smembers("processed:fulfilment") >= expected and h.r.xlen("orders:dlq") >= 1,
        60,
        interval=0.2,
        message=lambda: (
            f"processed {len(h.r.smembers('processed:fulfilment'))}/200, "
            f"dlq {h.r.xlen('orders:dlq')}\n{h.logs()[-3000:]}"
        ),
    )
    ((_, record),) = h.r.xrange("orders:dlq")
    assert record[ORIGIN_ID_FIELD] == bad and record["msg"] == "bad"
    assert record[GROUP_FIELD] == "fulfilment"
    assert not h.r.smembers("processed:fulfilment") - expected
