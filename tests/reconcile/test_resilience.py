"""Annotations, Secrets, Redis outages, conflicts: the operator keeps going and says why."""

from __future__ import annotations

import base64
import time

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import Harness

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_paused_takes_no_action_until_resumed(harness: Harness) -> None:
    h = harness
    h.stream("orders")
    h.group("fulfilment", metadata={"annotations": {"streamherd.io/paused": "true"}})
    h.start()
    h.wait_ready("ConsumerGroup", "fulfilment", "False", "Paused")
    paused = [
        c for c in h.status("ConsumerGroup", "fulfilment")["conditions"] if c["type"] == "Paused"
    ]
    assert paused and paused[0]["status"] == "True"
    time.sleep(1)
    assert h.r.exists("orders") == 0, "paused: nothing was created in Redis"

    h.patch(
        "ConsumerGroup", "fulfilment", {"metadata": {"annotations": {"streamherd.io/paused": None}}}
    )
    h.wait_ready("ConsumerGroup", "fulfilment")
    assert "fulfilment" in h.groups_in_redis("orders")
    conditions = h.status("ConsumerGroup", "fulfilment")["conditions"]
    assert [c["type"] for c in conditions] == [
        "Ready",
        "DeadLettering",
        "Healthy",
        "RecoveryIsolated",
    ], "the Paused condition is gone"


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_unmanaged_resource_is_deleted_without_touching_redis(harness: Harness) -> None:
    h = harness
    h.stream("orders", deletionPolicy="Delete")
    h.group("fulfilment", deletionPolicy="Delete")
    h.start()
    h.wait_ready("ConsumerGroup", "fulfilment")
    for kind, name in (("ConsumerGroup", "fulfilment"), ("RedisStream", "orders")):
        h.patch(kind, name, {"metadata": {"annotations": {"streamherd.io/managed": "false"}}})
    h.delete("ConsumerGroup", "fulfilment")
    h.delete("RedisStream", "orders")
    h.wait_gone("ConsumerGroup", "fulfilment")
    h.wait_gone("RedisStream", "orders")
    assert "fulfilment" in h.groups_in_redis("orders"), "managed=false: Redis left as it was"


@pytest.mark.e2e_variants("control-plane")
def test_missing_secret_is_reported_then_picked_up_when_created(
    harness: Harness, redis_server_factory
) -> None:  # type: ignore[no-untyped-def]
    h = harness
    h.redis_server = redis_server_factory("7.0", extra=[("requirepass", "s3cr3t-pw")])
    h.stream(
        "orders",
        redis={
            "url": h.redis_server.url,
            "passwordSecretRef": {"name": "redis-auth", "key": "password"},
        },
    )
    h.group("fulfilment")
    h.start()
    ready = h.wait_ready("RedisStream", "orders", "False", "SecretNotFound")
    assert "redis-auth" in ready["message"]
    h.wait_ready("ConsumerGroup", "fulfilment", "False", "StreamNotReady")

    h.create("Secret", "redis-auth", None, data={"password": base64.b64encode(b"wrong").decode()})
    h.wait_ready("RedisStream", "orders", "False", "AuthenticationFailed")
    h.api.patch(
        "secrets",
        h.namespace,
        "redis-auth",
        {"data": {"password": base64.b64encode(b"s3cr3t-pw").decode()}},
    )
    h.wait_ready("RedisStream", "orders")
    h.wait_ready("ConsumerGroup", "fulfilment")
    assert "s3cr3t-pw" not in h.logs(), "credentials never reach the logs"
    assert all("s3cr3t-pw" not in message for _, _, message in h.events("orders"))


@pytest.mark.e2e_variants("control-plane")
def test_redis_outage_flips_conditions_and_recovers(harness: Harness) -> None:
    h = harness
    h.stream("orders")
    h.group("fulfilment", startId="0")
    h.start()
    h.wait_ready("ConsumerGroup", "fulfilment")
    h.redis_server.stop()
    status = h.wait_status(
        "ConsumerGroup",
        "fulfilment",
        lambda s: any(c["reason"] == "RedisUnavailable" for c in s.get("conditions", [])),
    )
    assert status["lagDisplay"] == "unknown" and status.get("pending") is None, "unknown, not zero"
    h.wait_ready("RedisStream", "orders", "False", "RedisUnavailable")
    assert h.healthy() and h.operator is not None and h.operator.running

    h.redis_server.start()  # comes back empty (no persistence): the group is made again
    h.wait_ready("ConsumerGroup", "fulfilment", timeout=30)
    wait_until(lambda: "fulfilment" in h.groups_in_redis("orders"), 10)
    h.wait_event("fulfilment", "RedisUnavailable")
    wait_until(
        lambda: [e[1] for e in h.events("fulfilment")].count("GroupCreated") >= 2,
        15,
        message=lambda: f"the group not said created again: {h.events('fulfilment')}",
    )


def test_two_resources_for_one_group_the_first_recorded_manages(harness: Harness) -> None:
    """Ownership is recorded in Redis beside the group (tests/reconcile/test_ownership.py has
    the ways two resources can meet): the first claimant manages, the other waits, names
    it, and takes over when it is deleted."""
    h = harness
    h.stream("orders")
    h.group("first", groupName="shared")
    h.start()
    h.wait_ready("ConsumerGroup", "first")
    h.group("second", groupName="shared")
    loser = h.wait_ready("ConsumerGroup", "second", "False", "GroupOwnedElsewhere")
    assert f"managed by {h.namespace}/first" in loser["message"]

    h.delete("ConsumerGroup", "first")
    h.wait_ready("ConsumerGroup", "second", timeout=30)  # the survivor takes over


def test_a_bad_resource_does_not_stop_the_others(harness: Harness) -> None:
    h = harness
    h.stream("broken", key="x", redis={"url": "redis://127.0.0.1:1"})
    h.group("orphan", stream="broken")
    h.group("lost", stream="no-such-stream")
    h.stream("orders")
    h.group("fulfilment")
    h.start()
    h.wait_ready("ConsumerGroup", "fulfilment")
    h.wait_ready("RedisStream", "broken", "False", "RedisUnavailable")
    lost = h.wait_ready("ConsumerGroup", "lost", "False", "StreamNotReady", timeout=40)
    assert "'no-such-stream' not found" in lost["message"]
    assert h.operator is not None and h.operator.running


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_metrics_show_the_documented_series(harness: Harness) -> None:
    h = harness
    h.stream("orders")
    h.group("fulfilment", startId="0")
    h.stream("legacy", key="legacy")  # ids chosen by the producer: not times
    h.group("importer", stream="legacy", startId="0")
    h.r.xadd("legacy", {"n": 1}, id="5-1")
    h.start()
    for i in range(4):
        h.r.xadd("orders", {"n": i})
    first = h.r.xrange("orders", count=1)[0][0]
    status = h.wait_status(
        "ConsumerGroup", "fulfilment", lambda s: s.get("lag") == 4 and s.get("lagSeconds")
    )
    seconds, micros = h.r.time()
    age = seconds + micros / 1e6 - int(first.split("-")[0]) / 1000
    assert 0 < status["lagSeconds"] <= age and status["lagSecondsExactness"] == "Exact"
    legacy = h.wait_status("ConsumerGroup", "importer", lambda s: s.get("lag") == 1)
    assert legacy.get("lagSeconds") is None and legacy["lagSecondsExactness"] == "Unknown"
    text = h.metrics()
    labels = f'consumergroup="fulfilment",group="fulfilment",namespace="{h.namespace}"'
    legacy_labels = f'consumergroup="importer",group="importer",namespace="{h.namespace}"'
    for series in (
        f"streamherd_group_pending{{{labels}}} 0.0",
        f"streamherd_group_lag{{{labels}}} 4.0",
        f"streamherd_group_backlog{{{labels}}} 4.0",
        f"streamherd_group_consumers{{{labels}}} 0.0",
        f"streamherd_group_oldest_pending_age_seconds{{{labels}}} 0.0",
        f"streamherd_group_lag_seconds{{{labels}}} ",
        f"streamherd_group_lag_seconds{{{legacy_labels}}} NaN",
    ):
        assert series in text, series
    assert h.metric("streamherd_group_lag_seconds", consumergroup="fulfilment") > 0
    for name in (
        "streamherd_poll_duration_seconds_bucket",
        "streamherd_redis_roundtrip_seconds_bucket",
        'streamherd_polls_total{endpoint="redis://127.0.0.1:',
        f'streamherd_stream_length{{namespace="{h.namespace}",redisstream="orders"}} 4.0',
        "streamherd_endpoint_groups",
    ):
        assert name in text, name


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_a_paused_stream_is_not_polled_and_its_groups_wait(harness: Harness) -> None:
    h = harness
    h.stream("orders", metadata={"annotations": {"streamherd.io/paused": "true"}})
    h.group("fulfilment")
    h.start()
    h.wait_ready("RedisStream", "orders", "False", "Paused")
    ready = h.wait_ready("ConsumerGroup", "fulfilment", "False", "StreamNotReady")
    assert "Paused" in ready["message"]
    h.r.config_resetstat()
    time.sleep(1)
    assert "cmdstat_evalsha" not in h.r.info("commandstats"), "a paused stream is not polled"

    h.patch("RedisStream", "orders", {"metadata": {"annotations": {"streamherd.io/paused": None}}})
    h.wait_ready("RedisStream", "orders")
    h.wait_ready("ConsumerGroup", "fulfilment")
