"""`streamherd run` against the local cluster and a real Redis: create, observe, update, delete."""

from __future__ import annotations

import pytest
from tests.harness import Harness

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane


# Valkey's runs under make e2e: the operator on Valkey end to end is tests/security/test_acl.py
@pytest.mark.e2e_variants("valkey-9.1")
def test_group_is_created_and_status_matches_redis(harness_any_redis: Harness) -> None:
    h = harness_any_redis
    h.stream("orders")
    h.group("fulfilment", startId="0")
    h.start()
    h.wait_ready("ConsumerGroup", "fulfilment")
    assert "fulfilment" in h.groups_in_redis("orders"), "the group exists in Redis"

    for i in range(10):
        h.r.xadd("orders", {"n": i})
    delivered = h.r.xreadgroup("fulfilment", "worker-1", {"orders": ">"}, count=4)[0][1]
    h.r.xack("orders", "fulfilment", delivered[0][0])

    status = h.wait_status(
        "ConsumerGroup", "fulfilment", lambda s: s.get("pending") == 3 and s.get("lag") == 6
    )
    raw = h.groups_in_redis("orders")["fulfilment"]
    assert (status["pending"], status["lag"]) == (raw["pending"], raw["lag"])
    assert status["backlog"] == 9 and status["consumers"] == 1
    assert status["lagExactness"] == "Exact" and status["lagDisplay"] == "6"
    assert (status["stream"], status["group"], status["streams"]) == ("orders", "fulfilment", 1)

    stream = h.wait_status("RedisStream", "orders", lambda s: s.get("length") == 10)
    assert stream["groups"] == 1 and stream["lastEntryId"] == h.r.xrevrange("orders", count=1)[0][0]
    assert stream["lastPolled"]
    assert h.ready("RedisStream", "orders")["status"] == "True"

    h.wait_event("fulfilment", "GroupCreated")
    h.wait_event("fulfilment", "Reconciled")
    reasons = [reason for _, reason, _ in h.events("fulfilment")]
    assert "GroupAdopted" not in reasons, "what we create we do not also adopt"
    assert not [e for e in h.events("fulfilment") if e[0] == "Warning"], h.events("fulfilment")


def test_existing_group_is_adopted_not_reset(harness: Harness) -> None:
    h = harness
    for i in range(5):
        h.r.xadd("orders", {"n": i})
    h.r.xgroup_create("orders", "legacy", "0")
    h.r.xreadgroup("legacy", "old-worker", {"orders": ">"}, count=2)
    h.stream("orders")
    h.group("legacy", startId="$")
    h.start()
    status = h.wait_status("ConsumerGroup", "legacy", lambda s: s.get("pending") == 2)
    assert status["lag"] == 3, "adopted where it was, not moved to $"
    h.wait_event("legacy", "GroupAdopted")


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_spec_change_is_acted_on_and_observed_generation_follows(harness: Harness) -> None:
    h = harness
    h.stream("orders")
    h.group("fulfilment")
    h.start()
    h.wait_status("ConsumerGroup", "fulfilment", lambda s: s.get("observedGeneration") == 1)
    h.patch(
        "ConsumerGroup",
        "fulfilment",
        {"spec": {"autoscaling": {"enabled": False, "pollInterval": "500ms"}}},
    )
    assert h.get("ConsumerGroup", "fulfilment")["metadata"]["generation"] == 2
    status = h.wait_status(
        "ConsumerGroup", "fulfilment", lambda s: s.get("observedGeneration") == 2
    )
    assert h.ready("ConsumerGroup", "fulfilment")["observedGeneration"] == 2
    assert status["conditions"][0]["status"] == "True"


def test_delete_with_retain_leaves_redis_and_with_delete_cleans_up(harness: Harness) -> None:
    h = harness
    h.stream("orders", deletionPolicy="Delete")
    h.group("kept", startId="0")
    h.group("dropped", startId="0", deletionPolicy="Delete")
    h.start()
    h.wait_ready("ConsumerGroup", "kept")
    h.wait_ready("ConsumerGroup", "dropped")
    assert set(h.groups_in_redis("orders")) == {"kept", "dropped"}
    assert h.get("ConsumerGroup", "dropped")["metadata"]["finalizers"] == [
        "streamherd.io/finalizer"
    ]

    h.delete("ConsumerGroup", "kept")
    h.delete("ConsumerGroup", "dropped")
    h.wait_gone("ConsumerGroup", "kept")
    h.wait_gone("ConsumerGroup", "dropped")
    assert set(h.groups_in_redis("orders")) == {"kept"}

    h.delete("RedisStream", "orders")
    h.wait_gone("RedisStream", "orders")
    assert h.r.exists("orders") == 0, "deletionPolicy Delete removed the stream"


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_deleting_an_already_gone_group_counts_as_done(harness: Harness) -> None:
    h = harness
    h.stream("orders")
    h.group("g", deletionPolicy="Delete")
    h.start()
    h.wait_ready("ConsumerGroup", "g")
    h.r.xgroup_destroy("orders", "g")
    h.delete("ConsumerGroup", "g")
    h.wait_gone("ConsumerGroup", "g")
