"""Retention in the operator (`streamherd run`) through the local cluster and a real Redis:
the floor and the groups that hold it back, hardMaxLength, idle call streams, a missing
policy, and deletionPolicy Delete on a pattern."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import Harness

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane

FAST = {"interval": "1s"}


def produce(h: Harness, key: str, count: int) -> list[str]:
    pipe = h.r.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(key, {"n": i})
    return [str(entry_id) for entry_id in pipe.execute()]


def consume(h: Harness, key: str, group: str, *, read: int, acked: int) -> None:
    """The group is delivered ``read`` more entries and acknowledges the first ``acked``."""
    delivered = h.r.xreadgroup(group, "c1", {key: ">"}, count=read)
    ids = [entry_id for entry_id, _ in delivered[0][1]] if delivered else []
    if acked:
        h.r.xack(key, group, *ids[:acked])


def groups_exist(h: Harness, key: str, *names: str) -> bool:
    return set(names) <= set(h.groups_in_redis(key))


# Valkey's runs under make e2e: retain.lua runs on it in tests/retention/test_script.py
@pytest.mark.e2e_variants("valkey-9.1", "-control-plane")
def test_a_lagging_group_holds_retention_back_and_is_told_so(harness_any_redis: Harness) -> None:
    h = harness_any_redis
    ids = produce(h, "orders", 100)
    h.stream("orders", retentionPolicyRef={"name": "short"})
    h.group("fast", startId="0")
    h.group("slow", startId="0")
    h.start()
    wait_until(lambda: groups_exist(h, "orders", "fast", "slow"), 20)
    consume(h, "orders", "fast", read=100, acked=100)
    consume(h, "orders", "slow", read=30, acked=20)  # needs ids[20] on
    h.create("RetentionPolicy", "short", {"maxLength": 10, "approximate": False, **FAST})

    status = h.wait_status("RetentionPolicy", "short", lambda s: s.get("blockedGroups"), timeout=30)
    assert [entry for entry, _ in h.r.xrange("orders")] == ids[20:], "the floor, no further"
    (blocked,) = status["blockedGroups"]
    assert blocked["group"] == "slow" and blocked["redisStream"] == "orders"
    assert blocked["streams"] == 1 and blocked["reasons"] == ["MaxLength"]
    retention = h.condition("RetentionPolicy", "short", "Retention")
    assert (retention["status"], retention["reason"]) == ("False", "RetentionBlocked")
    assert "'slow'" in retention["message"]
    held = wait_until(
        lambda: (
            h.condition("ConsumerGroup", "slow", "Retention").get("reason") == "RetentionBlocked"
            and h.condition("ConsumerGroup", "slow", "Retention")
        ),
        20,
    )
    assert held["status"] == "False" and "retention policy 'short'" in held["message"]
    wait_until(
        lambda: h.condition("ConsumerGroup", "fast", "Retention").get("status") == "True", 20
    )
    wait_until(lambda: ("Warning", "RetentionBlocked") in {e[:2] for e in h.events("slow")}, 20)
    assert h.metric("streamherd_retention_blocked_streams", group="slow") == 1

    consume(h, "orders", "slow", read=100, acked=0)
    pending = [p["message_id"] for p in h.r.xpending_range("orders", "slow", "-", "+", 100)]
    h.r.xack("orders", "slow", *pending)
    wait_until(lambda: h.r.xlen("orders") == 10, 30, message=lambda: h.logs()[-3000:])
    assert [entry for entry, _ in h.r.xrange("orders")] == ids[-10:]
    h.wait_status("RetentionPolicy", "short", lambda s: not s.get("blockedGroups"), timeout=30)
    wait_until(
        lambda: h.condition("ConsumerGroup", "slow", "Retention").get("status") == "True", 20
    )
    status = h.status("RetentionPolicy", "short")
    assert status["trimmedEntries"] == 90 and status["streams"] == 1
    assert status["redisStreams"] == ["orders"]
    assert h.ready("RetentionPolicy", "short")["status"] == "True"


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_hard_max_length_drops_what_it_must_and_says_so_loudly(harness: Harness) -> None:
    h = harness
    produce(h, "orders", 100)
    h.stream("orders", retentionPolicyRef={"name": "capped"})
    h.group("fast", startId="0")
    h.group("slow", startId="0")
    h.start()
    wait_until(lambda: groups_exist(h, "orders", "fast", "slow"), 20)
    consume(h, "orders", "fast", read=100, acked=100)
    consume(h, "orders", "slow", read=30, acked=20)
    h.create(
        "RetentionPolicy",
        "capped",
        {"maxLength": 10, "hardMaxLength": 50, "approximate": False, **FAST},
    )
    dropped = wait_until(
        lambda: (
            h.condition("RetentionPolicy", "capped", "UnconsumedDropped").get("status") == "True"
            and h.condition("RetentionPolicy", "capped", "UnconsumedDropped")
        ),
        30,
    )
    assert dropped["reason"] == "HardMaxLength"
    status = h.status("RetentionPolicy", "capped")
    assert status["unconsumedDropped"] == 30, "ids 20..49: pending (20..29) and unread"
    assert h.r.xlen("orders") == 50
    assert "dropped 30 entries no group had consumed" in dropped["message"]
    wait_until(lambda: ("Warning", "HardMaxLength") in {e[:2] for e in h.events("capped")}, 20)
    assert h.metric("streamherd_retention_unconsumed_dropped_total", retentionpolicy="capped") == 30
    # The next passes drop nothing more: the condition says so.
    wait_until(
        lambda: (
            h.condition("RetentionPolicy", "capped", "UnconsumedDropped").get("status") == "False"
        ),
        20,
    )
    assert h.status("RetentionPolicy", "capped")["unconsumedDropped"] == 30


@contextmanager
def writing(h: Harness, key: str, every: float = 0.2) -> Iterator[None]:
    """A live call: an event every ``every`` seconds while the block runs."""
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            h.r.xadd(key, {"turn": "live"})
            stop.wait(every)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@pytest.mark.e2e_variants("control-plane")
def test_finished_call_streams_are_deleted_and_no_other(harness: Harness) -> None:
    h = harness
    h.stream("calls", key=None, keyPattern="conv:*", retentionPolicyRef={"name": "calls"})
    h.group("brain", stream="calls", startId="0")
    h.create("RetentionPolicy", "calls", {"deleteIdleStreamsAfter": "2s", **FAST})
    for call in ("conv:done", "conv:pending", "conv:unread"):
        produce(h, call, 5)
    h.r.xadd("conv:done:dlq", {"origin": "1-1"})
    h.start()
    wait_until(
        lambda: all(
            groups_exist(h, c, "brain") for c in ("conv:done", "conv:pending", "conv:unread")
        ),
        20,
    )
    consume(h, "conv:done", "brain", read=5, acked=5)
    consume(h, "conv:pending", "brain", read=5, acked=4)
    consume(h, "conv:unread", "brain", read=4, acked=4)
    with writing(h, "conv:live"):
        wait_until(lambda: groups_exist(h, "conv:live", "brain"), 20)
        wait_until(lambda: not h.r.exists("conv:done"), 30, message=lambda: h.logs()[-3000:])
        live_since = time.monotonic()
        # Several more passes (1s apart) must leave the others alone: this waits on purpose.
        wait_until(lambda: time.monotonic() - live_since > 4, 10)
        assert h.r.exists("conv:live") and h.r.exists("conv:pending") and h.r.exists("conv:unread")
        consume(h, "conv:live", "brain", read=1000, acked=1000)
    assert h.r.exists("conv:done:dlq"), "a dead-letter stream is never deleted as a call"
    status = h.wait_status("RetentionPolicy", "calls", lambda s: s.get("deletedStreams"))
    assert status["deletedStreams"] >= 1
    stream = h.wait_status("RedisStream", "calls", lambda s: s.get("matchedKeys") == 3, timeout=30)
    assert stream["managedGroups"] == ["brain"]
    # The live call ends: once brain has read it all, it goes too.
    wait_until(lambda: not h.r.exists("conv:live"), 30)
    assert h.metric("streamherd_retention_deleted_streams_total", retentionpolicy="calls") == 2


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_a_stream_naming_a_missing_policy_says_so(harness: Harness) -> None:
    h = harness
    h.stream("orders", retentionPolicyRef={"name": "nowhere"})
    h.start()
    missing = wait_until(
        lambda: (
            h.condition("RedisStream", "orders", "Retention").get("reason") == "PolicyNotFound"
            and h.condition("RedisStream", "orders", "Retention")
        ),
        20,
    )
    assert (
        missing["status"] == "False" and "RetentionPolicy 'nowhere' not found" in missing["message"]
    )
    assert h.ready("RedisStream", "orders")["status"] == "True", "the stream itself works"
    h.create("RetentionPolicy", "nowhere", {"maxLength": 5, **FAST})
    wait_until(
        lambda: h.condition("RedisStream", "orders", "Retention").get("status") == "True", 20
    )


def test_delete_on_a_pattern_removes_only_streams_carrying_our_groups(harness: Harness) -> None:
    h = harness
    h.stream("calls", key=None, keyPattern="conv:*", deletionPolicy="Delete")
    h.group("brain", stream="calls")
    for call in ("conv:1", "conv:2"):
        produce(h, call, 3)
    h.r.xadd("conv:1:dlq", {"origin": "x"})
    h.r.xadd("{conv:2}:dlq", {"origin": "y"})
    h.r.set("conv:meta", "not a stream")
    h.start()
    wait_until(
        lambda: groups_exist(h, "conv:1", "brain") and groups_exist(h, "conv:2", "brain"), 20
    )
    h.wait_status("RedisStream", "calls", lambda s: s.get("managedGroups") == ["brain"])
    h.delete("ConsumerGroup", "brain")  # Retain: its group stays on the streams
    h.wait_gone("ConsumerGroup", "brain")
    produce(h, "conv:3", 3)  # a matching stream nobody of ours ever touched
    h.r.xgroup_create("conv:3", "someone-else", "0")
    h.delete("RedisStream", "calls")
    h.wait_gone("RedisStream", "calls")
    assert sorted(h.r.keys("*")) == ["conv:1:dlq", "conv:3", "conv:meta", "{conv:2}:dlq"]
