"""The operator SIGKILLed and restarted in the middle of its work: while scaling, during a
janitor pass, during a retention pass. A real `streamherd run` process each time, real
consumers run by the kubelet, a real redis-server; every check is by ids (entry ids,
dead-letter origin ids, each Deployment write the API server logged), never by counts alone.

What a restart must never do: reset a group (re-deliver what it already delivered), write a
dead-letter record twice, scale down (let alone to zero) before it has measured anything, or
leave its status wrong for longer than two polls."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import Harness

from streamherd.fields import ORIGIN_ID_FIELD

# 10-30 s each (operator restarts, consumer pods, a Redis restart): under make e2e, to keep
# make test within its 15 minutes.
pytestmark = pytest.mark.e2e_variants()


def kill_operator(h: Harness) -> None:
    """SIGKILL, no chance to clean up (no finalizer pass, no last status write)."""
    assert h.operator is not None and h.operator.process is not None
    h.operator.signal(signal.SIGKILL)
    h.operator.process.wait(10)


def produce(h: Harness, key: str, count: int, start: int = 0) -> list[str]:
    pipe = h.r.pipeline(transaction=False)
    for i in range(start, start + count):
        pipe.xadd(key, {"msg": f"m{i}"})
    return [str(entry_id) for entry_id in pipe.execute()]


def group_position(h: Harness, key: str, group: str) -> tuple[int, int]:
    """(last-delivered-id as a comparable pair, entries-read): both only ever grow unless
    the group is reset."""
    info = h.groups_in_redis(key)[group]
    ms, seq = info["last-delivered-id"].split("-")
    return int(ms) * 2**64 + int(seq), int(info["entries-read"] or 0)


def deployment_replicas_written(h: Harness, name: str, since_rv: int) -> list[int]:
    """Every spec.replicas the Deployment was given after ``since_rv``, in order (the API
    server's own log of changes: nothing in between is missed, unlike polling it)."""
    values = []
    for event in h.api.events_since(since_rv):
        if event.rtype_key[1] != "deployments" or event.new["metadata"]["name"] != name:
            continue
        before = (event.old or {}).get("spec", {}).get("replicas")
        after = event.new.get("spec", {}).get("replicas")
        if after != before:
            values.append(after)
    return values


def test_killed_while_scaling_up_it_restarts_without_scaling_down_or_resetting_the_group(
    harness: Harness, kubelet: Any
) -> None:
    h = harness
    poll = 2.0  # the default
    h.autoscaled_workers(1, env={"WORK_MS": "40", "BATCH": "5", "PROCESSED_LOG": "1"})
    # Far more than 4 replicas finish in this test (~100 entries/s): the backlog stays high.
    produce(h, "orders", 20_000)
    h.start()
    wait_until(
        lambda: h.status("ConsumerGroup", "workers").get("replicas", 0) > 1,
        30,
        message=lambda: f"never scaled up: {h.status('ConsumerGroup', 'workers')}",
    )
    kill_operator(h)  # right after a scale-up write: the scaling is under way
    killed_rv = h.api.resource_version
    at_kill = int(h.api.get("deployments.apps", h.namespace, "workers")["spec"]["replicas"])
    position_at_kill = group_position(h, "orders", "workers")

    h.start()
    started = time.monotonic()
    status = h.wait_status(
        "ConsumerGroup",
        "workers",
        lambda s: s.get("desiredReplicas") == 4 and s.get("replicas") == 4,
        timeout=30,
    )
    # Right within two polls of coming up (the whole test's state is measured at each poll).
    assert time.monotonic() - started <= 2 * poll + 2, "status right within two polls"
    assert status["lag"] > 0 and status["pending"] >= 0
    wait_until(lambda: len(kubelet.processes(h.namespace)) == 4, 30)
    # Some work after the restart, then every check.
    wait_until(lambda: group_position(h, "orders", "workers")[1] > position_at_kill[1] + 50, 30)
    written = deployment_replicas_written(h, "workers", killed_rv)
    assert all(n >= at_kill for n in written), f"scaled down after the restart: {written}"
    assert 0 not in written
    assert group_position(h, "orders", "workers") >= position_at_kill, "the group was reset"
    processed = [line.split()[3] for line in h.r.lrange("processed-log:workers", 0, -1)]
    duplicates = {entry for entry in processed if processed.count(entry) > 1}
    assert not duplicates, f"delivered twice (a group reset?): {sorted(duplicates)[:5]}"


def test_killed_during_a_janitor_pass_no_dead_letter_record_is_written_twice(
    harness: Harness,
) -> None:
    h = harness
    poison = produce(h, "orders", 1000)
    h.r.xgroup_create("orders", "audit", "0")
    h.r.xreadgroup("audit", "worker", {"orders": ">"})  # every entry delivered once, no ack
    h.stream("orders")
    h.group(
        "audit",
        startId="0",
        # One entry per script call: a pass is thousands of calls, so the kill lands inside it.
        recovery={"minIdle": "1s", "interval": "1s", "maxDeliveries": 1, "batchSize": 1},
    )
    time.sleep(1.1)  # the entries must age past minIdle (1 s) before the pass, by Redis's clock
    h.start()
    wait_until(
        lambda: 0 < h.r.xlen("orders:dlq") < len(poison),
        30,
        interval=0.005,
        message=lambda: f"no pass in progress seen: {h.r.xlen('orders:dlq')} dead-lettered",
    )
    kill_operator(h)
    at_kill = h.r.xlen("orders:dlq")
    assert 0 < at_kill < len(poison), "killed in the middle of the pass"

    h.start()
    wait_until(
        lambda: h.r.xpending("orders", "audit")["pending"] == 0,
        60,
        message=lambda: f"{h.r.xpending('orders', 'audit')['pending']} still pending",
    )
    origins = [fields[ORIGIN_ID_FIELD] for _, fields in h.r.xrange("orders:dlq")]
    assert len(origins) == len(set(origins)), "a dead-letter record written twice"
    assert origins == poison, "each poison entry dead-lettered once, in order"
    assert [entry for entry, _ in h.r.xrange("orders")] == poison, "no copy re-queued"
    # The status counts what this operator did since it started plus what the last one
    # wrote: never more than happened (a pass's count lost with the killed process is not
    # counted again).
    status = h.wait_status(
        "ConsumerGroup", "audit", lambda s: (s.get("deadLettered") or 0) >= len(poison) - at_kill
    )
    assert status["deadLettered"] <= len(poison)


def test_killed_during_a_retention_pass_nothing_unconsumed_is_trimmed_and_no_group_reset(
    harness: Harness,
) -> None:
    h = harness
    keys = [f"calls:{i:04d}" for i in range(1500)]
    pipe = h.r.pipeline(transaction=False)
    for key in keys:
        for n in range(30):
            pipe.xadd(key, {"n": n})
    pipe.execute()
    h.stream("calls", key=None, keyPattern="calls:*", retentionPolicyRef={"name": "short"})
    # "$": what exists now is not the group's work; everything later is.
    h.group("g", stream="calls", startId="$")
    h.start()
    wait_until(
        lambda: all("g" in h.groups_in_redis(k) for k in keys[:: len(keys) // 20] + keys[-1:]),
        60,
        message=lambda: f"{h.status('ConsumerGroup', 'g')}",
    )
    wait_until(lambda: all("g" in h.groups_in_redis(k) for k in keys), 60)
    # g reads and acknowledges all of it (its start, the resource's creation second, may
    # lie below some of these entries: it would rightly hold those back).
    pipe = h.r.pipeline(transaction=False)
    for key in keys:
        pipe.xreadgroup("g", "c1", {key: ">"}, count=100)
    read = pipe.execute()
    for reply in read:
        if reply:
            (key, entries), *_ = reply
            pipe.xack(key, "g", *[entry_id for entry_id, _ in entries])
    pipe.execute()
    for key in keys[::100]:
        assert (h.groups_in_redis(key)["g"]["pending"], h.groups_in_redis(key)["g"]["lag"]) == (
            0,
            0,
        )
    positions = {key: group_position(h, key, "g") for key in keys}
    # Never read by g: 8 entries above its floor, on streams trimmed to 5, stay whole.
    unconsumed = {key: produce(h, key, 8, start=100) for key in keys[:50]}

    def lengths() -> list[int]:
        pipe = h.r.pipeline(transaction=False)
        for key in keys:
            pipe.xlen(key)
        return list(pipe.execute())

    def in_pass() -> bool:
        """The pass goes through the keys in order: the first trimmed, the last not yet."""
        first, last = h.r.pipeline().xlen(keys[50]).xlen(keys[-1]).execute()
        return bool(first == 5 and last == 30)

    h.create("RetentionPolicy", "short", {"maxLength": 5, "approximate": False, "interval": "1s"})
    wait_until(
        in_pass,
        60,
        interval=0.001,
        message=lambda: f"no pass in progress seen: {sorted(set(lengths()))}",
    )
    kill_operator(h)
    assert {5, 30} <= set(lengths()[50:]), "killed in the middle of the pass"

    h.start()
    wanted = [8] * 50 + [5] * (len(keys) - 50)
    wait_until(
        lambda: lengths() == wanted,
        60,
        message=lambda: (
            f"lengths {sorted(set(lengths()))}; {h.status('RetentionPolicy', 'short')}"
            f"\n{h.logs()[-2000:]}"
        ),
    )
    for key, ids in unconsumed.items():
        kept = [entry for entry, _ in h.r.xrange(key)]
        assert kept == ids, f"{key}: an entry g never read was trimmed"
    after = {key: group_position(h, key, "g") for key in keys}
    assert after == positions, "a group moved (reset or re-created) by the restart"
    h.wait_ready("RetentionPolicy", "short", timeout=30)
